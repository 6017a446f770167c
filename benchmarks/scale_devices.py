"""One FedAvg round over many devices: round time and peak memory from 1,000 to 100,000 devices.

Workload: synthetic 8x8 images (``data.dataset=synthetic``), two per device, IID; the digits MLP 64-128-10;
every device trains one local epoch (one step at batch 16 on its 2 samples) and uploads; one torch thread;
the executor named by ``--executor`` (default vmap). Each size runs in a fresh process so its peak resident
memory is its own; ``import_rss_mb`` is a process that imports edgelearn and torch and builds nothing, and
``run_rss_mb`` what the run added to it. The growth exponents are least-squares slopes of log(round time)
and log(added memory) on log(devices): 1 is linear. Prints a table; ``--json PATH`` writes the rows.

    PYTHONPATH=src python benchmarks/scale_devices.py --json docs/results/scale_devices.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgelearn.engine.device import resolve_device
from edgelearn.errors import exit_on_user_error

DEFAULT_DEVICES = (1_000, 3_000, 10_000, 30_000, 100_000)
SAMPLES_PER_DEVICE = 2
ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, resource, sys, time
import torch
from edgelearn.algorithms.registry import make_algorithm
from edgelearn.run_config import load_config
from edgelearn.runner import build_context
n, executor, device, per = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if n == 0:
    print(json.dumps({"rss_mb": rss()}))
    raise SystemExit
cfg = load_config(sys.argv[5], [
    "data.dataset=synthetic", f"data.num_train={per * n}", "data.num_test=1000", "data.input_shape=[1,8,8]",
    f"topology.devices={n}", "partition.method=iid", "partition.min_size=1", "algorithm.rounds=2",
    "algorithm.local.epochs=1", "engine.torch_threads=1", "output.plots=false", f"executor={executor}",
    f"device={device}",
])
t = time.perf_counter(); ctx = build_context(cfg); context_s = time.perf_counter() - t
algo = make_algorithm(ctx); algo.init()
times = []
for r in (1, 2):
    t = time.perf_counter(); algo.run_round(r)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    times.append(time.perf_counter() - t)
print(json.dumps({"context_s": context_s, "first_round_s": times[0], "round_s": times[1], "rss_mb": rss(),
                  "executor": ctx.executor.name, "device": str(ctx.device)}))
"""


def probe(devices: int, executor: str, device: str) -> dict[str, float]:
    """One size in a fresh process (its own peak RSS)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    config = str(ROOT / "configs" / "fedavg-digits.yaml")
    args = [sys.executable, "-c", PROBE, str(devices), executor, device, str(SAMPLES_PER_DEVICE), config]
    out = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def slope(x: list[float], y: list[float]) -> float:
    """Least-squares slope of log y on log x (nan with fewer than two points)."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0]) if len(x) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=list(DEFAULT_DEVICES))
    parser.add_argument("--executor", default="vmap", choices=["serial", "vmap", "auto"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    resolve_device(args.device)  # a missing GPU exits 2 here, before any probe process starts
    base = probe(0, args.executor, args.device)["rss_mb"]
    rows = []
    print(f"{'devices':>8} {'context s':>10} {'round s':>9} {'peak RSS MB':>12} {'added MB':>9}")
    for n in args.devices:
        r = probe(n, args.executor, args.device)
        row = {"devices": n, **r, "import_rss_mb": base, "run_rss_mb": r["rss_mb"] - base}
        rows.append(row)
        cells = f"{r['context_s']:>10.2f} {r['round_s']:>9.3f} {r['rss_mb']:>12.0f} {row['run_rss_mb']:>9.0f}"
        print(f"{n:>8} {cells}", flush=True)
    sizes = [float(r["devices"]) for r in rows]
    time_exp = slope(sizes, [float(r["round_s"]) for r in rows])
    mem_exp = slope(sizes, [max(float(r["run_rss_mb"]), 1e-3) for r in rows])
    print(f"round time grows as devices^{time_exp:.2f}, added memory as devices^{mem_exp:.2f}")
    if args.json is not None:
        record = {
            "rows": rows,
            "round_time_exponent": time_exp,
            "memory_exponent": mem_exp,
            "threads": 1,
            "cpus": os.cpu_count(),
            "capability": os.environ.get("ATEN_CPU_CAPABILITY", "default (the machine's own)"),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2), encoding="utf-8")


if __name__ == "__main__":
    exit_on_user_error(main)
