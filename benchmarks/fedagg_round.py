"""Time one FedAgg round against its floor: the cloud model's own SGD epoch over the same bridge samples.

The cloud student must take ``N / batch`` sequential SGD steps per round (batch 8 in the paper), so one plain
PyTorch epoch of the cloud model over the N bridge samples at that batch size is the least a round can cost.
This script builds a FedAgg run from command-line settings, runs ``--warmup`` rounds, times ``--rounds``
rounds, timing the floor on the same bridge samples right after each one (so a busy machine slows both
alike), prints the median ratio (and its spread) with a breakdown (teacher inference in the foreground and in
the background thread, student passes per tier, the rest) and writes JSON.

Besides wall-clock seconds (the criterion), it records CPU seconds of the main thread and of the process for
rounds and floors: on a machine shared with other jobs, wall-clock ratios swing with their load while CPU
ratios stay put. The main-thread ratio is the work on the critical path when background teacher inference
runs on a spare core; the process ratio counts all work.

    PYTHONPATH=src python benchmarks/fedagg_round.py --dataset digits --devices 100 --edges 4 \
        --json runs/bench/fedagg_round.json
    PYTHONPATH=src python benchmarks/fedagg_round.py --dataset fashion_mnist --devices 100 --edges 10 \
        --train-subset 10000 --skip-eval
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgelearn import runner
from edgelearn.algorithms.fedagg.algorithm import FedAgg
from edgelearn.algorithms.fedagg.config import FedAggConfig
from edgelearn.config import apply_overrides
from edgelearn.data import DatasetBundle
from edgelearn.engine.precision import autocast
from edgelearn.errors import exit_on_user_error
from edgelearn.run_config import build_config
from edgelearn.runner import build_context

FLOOR_SEED = 0
"""Seed of the floor epoch's initialization and batch order."""
SUBSET_SEED = 0
"""Seed of the ``--train-subset`` draw (the config has no training-subset option for file datasets)."""
CLOCKS: dict[str, Callable[[], float]] = {
    "wall": time.perf_counter,
    "thread_cpu": time.thread_time,
    "process_cpu": time.process_time,
}
"""The clocks every round and floor is timed with: wall clock, main-thread CPU and process CPU seconds."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line settings of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits", help="data.dataset (digits, fashion_mnist, ...)")
    p.add_argument("--data-dir", default=None, help="data.data_dir for file datasets")
    p.add_argument("--devices", type=int, default=100, help="total devices, split evenly over edges")
    p.add_argument("--edges", type=int, default=4)
    p.add_argument("--alpha", type=float, default=1.0, help="Dirichlet concentration of the split")
    p.add_argument(
        "--holdout",
        type=int,
        default=360,
        help="training images held out before partitioning for the bridge autoencoder (data.holdout; "
        "configs/fedagg/digits.yaml's 360 by default, e.g. 2000 on Fashion-MNIST)",
    )
    p.add_argument("--executor", default="auto", choices=["auto", "serial", "vmap"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where the round runs")
    p.add_argument("--schedule", default="parallel", choices=["parallel", "sequential"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (executor probes, caches)")
    p.add_argument("--rounds", type=int, default=1, help="timed rounds (the mean is reported)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--set", action="append", default=[], help="extra algorithm overrides key=value (YAML)")
    p.add_argument(
        "--run-set", action="append", default=[], help="extra run-config overrides a.b=value (e.g. data.*)"
    )
    p.add_argument(
        "--train-subset",
        type=int,
        default=None,
        help="keep this many training images (a seeded draw) before the split over devices",
    )
    p.add_argument("--skip-eval", action="store_true", help="skip the final accuracy evaluation")
    p.add_argument("--json", default=None, help="write the result here")
    return p.parse_args(argv)


@contextlib.contextmanager
def train_subset(size: int | None) -> Iterator[None]:
    """While active, datasets loaded by the runner keep ``size`` training samples drawn with SUBSET_SEED."""
    if size is None:
        yield
        return
    load = runner.load_dataset

    def subset_load(*args: Any, **kwargs: Any) -> DatasetBundle:
        bundle = load(*args, **kwargs)
        if size >= len(bundle.train):
            return bundle
        picked = np.sort(np.random.default_rng(SUBSET_SEED).choice(len(bundle.train), size, replace=False))
        return dataclasses.replace(bundle, train=bundle.train.subset(picked))

    runner.load_dataset = subset_load  # type: ignore[assignment]
    try:
        yield
    finally:
        runner.load_dataset = load  # type: ignore[assignment]


def timed(fn: Callable[[], Any], device: torch.device | None = None) -> tuple[Any, dict[str, float]]:
    """``fn()`` and the seconds it took on every clock of :data:`CLOCKS` (on a CUDA ``device`` its queue is
    drained before and after, so the wall clock covers the GPU's work)."""
    cuda = device is not None and device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    start = {k: clock() for k, clock in CLOCKS.items()}
    out = fn()
    if cuda:
        torch.cuda.synchronize(device)
    return out, {k: clock() - start[k] for k, clock in CLOCKS.items()}


def floor_epoch(algo: FedAgg, batch_size: int) -> dict[str, float]:
    """Seconds (per clock) of one plain SGD epoch (momentum 0.9, cross-entropy) of a fresh cloud model on all
    bridges, under the run's ``engine.precision``."""
    arch = algo.models.arch(0)
    torch.manual_seed(FLOOR_SEED)
    model = arch.model_fn().to(algo.ctx.device).train()
    opt = torch.optim.SGD(model.parameters(), lr=algo.cfg.local.lr, momentum=algo.cfg.local.momentum)
    x, y = algo.store.bridges, algo.store.labels
    order = torch.as_tensor(np.random.default_rng(FLOOR_SEED).permutation(len(y)), device=y.device)

    def epoch() -> None:
        for i in range(0, len(y), batch_size):
            idx = order[i : i + batch_size]
            with autocast(y.device):  # the run's engine.precision, as in the round's students
                loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if y.device.type == "cuda":
            torch.cuda.synchronize(y.device)

    return timed(epoch)[1]


def spread(values: list[float]) -> dict[str, float]:
    """Min, median and max of paired ratios."""
    arr = np.asarray(values, dtype=np.float64)
    return {"min": float(arr.min()), "median": float(np.median(arr)), "max": float(arr.max())}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the run, time the rounds and the floor; return the JSON record."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.devices % args.edges:
        raise SystemExit(f"--devices ({args.devices}) must be a multiple of --edges ({args.edges})")
    overrides = [
        f"data.dataset={args.dataset}",
        "topology.devices=null",
        f"topology.edges={args.edges}",
        f"topology.devices_per_edge={args.devices // args.edges}",
        f"partition.alpha={args.alpha}",
        f"executor={args.executor}",
        f"data.holdout={args.holdout}",
        f"device={args.device}",
    ]
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    overrides += args.run_set
    with train_subset(args.train_subset):
        ctx = build_context(build_config({}, overrides))
    algo_overrides = {"schedule": args.schedule, "local": {"batch_size": args.batch_size}}
    algo_overrides = apply_overrides(algo_overrides, args.set)  # dotted keys, e.g. local.lr=0.01
    algo = FedAgg(ctx, FedAggConfig.model_validate(algo_overrides))
    started = time.perf_counter()
    algo.init()
    init_s = time.perf_counter() - started
    for r in range(1, args.warmup + 1):
        algo.run_round(r)
    rounds: list[dict[str, float]] = []
    floors: list[dict[str, float]] = []
    parts = []
    for r in range(args.warmup + 1, args.warmup + args.rounds + 1):
        stats, seconds = timed(lambda r=r: algo.run_round(r), ctx.device)
        rounds.append(seconds)
        parts.append(stats["wall_s_by_part"])
        floors.append(floor_epoch(algo, args.batch_size))
    walls = [t["wall"] for t in rounds]
    round_s = float(np.mean(walls))
    ratios = {k: [t[k] / f[k] for t, f in zip(rounds, floors)] for k in CLOCKS}
    by_part = {
        k: float(np.mean([p.get(k, 0.0) for p in parts])) for k in sorted({k for p in parts for k in p})
    }
    # Parts are host wall seconds of the main thread; background inference overlaps them, so it is left out.
    by_part["other"] = round_s - sum(v for k, v in by_part.items() if not k.endswith("_background"))
    ledger = ctx.system.ledger.round_totals(args.warmup + args.rounds)
    tier_nodes = {"device": ctx.topology.devices[0], "edge": ctx.topology.edges[0], "cloud": 0}
    models = {t: algo.models.arch(n).info.__dict__ for t, n in tier_nodes.items()}
    return {
        "benchmark": "fedagg_round",
        "dataset": args.dataset,
        "devices": args.devices,
        "edges": args.edges,
        "samples": int(algo.count(0)),
        "batch_size": args.batch_size,
        "schedule": args.schedule,
        "executor": ctx.executor.name,
        "executor_choices": getattr(ctx.executor, "choices", None),  # auto: serial or vmap per cohort
        "threads": torch.get_num_threads(),
        "models": models,
        "init_s": init_s,
        "round_s": round_s,
        "round_s_each": walls,
        "floor_epoch_s": float(np.mean([f["wall"] for f in floors])),
        "floor_epoch_s_each": [f["wall"] for f in floors],
        "ratio": float(np.median(ratios["wall"])),
        "ratio_each": ratios["wall"],
        "ratio_spread": {k: spread(v) for k, v in ratios.items()},
        "round_cpu_s_each": {k: [t[k] for t in rounds] for k in CLOCKS if k != "wall"},
        "floor_cpu_s_each": {k: [f[k] for f in floors] for k in CLOCKS if k != "wall"},
        "train_subset": args.train_subset,
        "wall_s_by_part": by_part,
        "round_ledger": {
            "energy_j": ledger["energy_j"],
            "delay_s": ledger["delay_s"],
            "bytes": ledger["bytes_up"] + ledger["bytes_down"],
            "by_tier": ledger["by_tier"],
        },
        "accuracy_by_tier": None if args.skip_eval else algo.evaluate()["accuracy_by_tier"],
        "host": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "machine": platform.machine(),
        },
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print a summary and write the JSON when asked."""
    args = parse_args(argv)
    out = run(args)
    print(
        f"FedAgg round on {out['dataset']} ({out['devices']} devices, {out['edges']} edges, "
        f"{out['samples']} samples, batch {out['batch_size']}, {out['schedule']}, "
        f"executor {out['executor']}, {out['threads']} threads)"
    )
    print(f"  round                 {out['round_s']:8.2f} s")
    for part, seconds in out["wall_s_by_part"].items():
        print(f"    {part:<19} {seconds:8.2f} s")
    print(f"  floor (cloud SGD epoch over the bridge samples) {out['floor_epoch_s']:.2f} s")
    print(f"  ratio round / floor = {out['ratio']:.2f} (median of {len(out['ratio_each'])} paired timings)")
    for clock, s in out["ratio_spread"].items():
        print(f"    {clock:<12} min {s['min']:.2f}  median {s['median']:.2f}  max {s['max']:.2f}")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2), encoding="utf-8")
        print(f"  wrote {path}")


if __name__ == "__main__":
    exit_on_user_error(main)
