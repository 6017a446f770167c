"""Does FedAgg survive an edge failure? The cloud model's accuracy around an edge outage, next to a clean run.

Runs ``configs/fedagg/digits.yaml`` (4 edges x 25 devices) twice with the same seed: fault-free, and with one
edge server down for rounds ``--start..--end``. While it is down FedAgg re-parents that edge's devices to the
live edges with the fewest devices (charging their embeddings, ``migrate_embed``) and moves them back when it
returns (free: the edge kept their bridge samples). Prints, for both runs, the cloud model's test accuracy in
the last round before the outage, the mean and minimum over the outage and the last round, plus the bytes the
migrations cost, and writes it all (with per-round accuracies) as JSON.

    PYTHONPATH=src python benchmarks/fedagg_edge_outage.py --seed 0 --json runs/bench/fedagg_edge_outage.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgelearn.algorithms.fedagg.failover import PHASE_MIGRATE_DECODE, PHASE_MIGRATE_EMBED
from edgelearn.report.io import read_metrics
from edgelearn.run_config import load_config
from edgelearn.runner import run

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "fedagg" / "digits.yaml"
DEFAULT_ROUNDS = 25
DEFAULT_OUTAGE = (6, 15)
"""Issue 6: one edge down for 10 rounds of 25."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line settings of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    p.add_argument("--edge", default="edge0", help="the failing edge (node name or id)")
    p.add_argument("--start", type=int, default=DEFAULT_OUTAGE[0], help="first round the edge is down")
    p.add_argument("--end", type=int, default=DEFAULT_OUTAGE[1], help="last round the edge is down")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--set", action="append", default=[], help="extra overrides a.b=value for both runs")
    p.add_argument("--json", default=None, help="write the result here")
    args = p.parse_args(argv)
    if not 1 < args.start <= args.end < args.rounds:
        p.error("need 1 < --start <= --end < --rounds (a round before and after the outage)")
    return args


def one_run(config: str, overrides: list[str], out: Path) -> dict[str, Any]:
    """Run one config; per-round cloud accuracy, migration bytes and counts, totals and wall time."""
    started = time.perf_counter()
    cfg = load_config(config, ["output.plots=false", "output.checkpoint_every=0", "eval.every=1", *overrides])
    summary = run(cfg, out, progress=False)
    rows = read_metrics(out)
    phases = summary.get("by_phase", {})
    embed = phases.get(PHASE_MIGRATE_EMBED, {})
    return {
        "accuracy": {int(r["round"]): float(r["accuracy"]) for r in rows},
        "migrate_bytes_by_round": {
            int(r["round"]): float(r.get("bytes_by_phase", {}).get(PHASE_MIGRATE_EMBED, 0.0)) for r in rows
        },
        "reparented_by_round": {int(r["round"]): int(r.get("reparented", 0)) for r in rows},
        "migrate_bytes": float(embed.get("bytes_up", 0.0) + embed.get("bytes_down", 0.0)),
        "migrate_energy_j": float(embed.get("energy_j", 0.0))
        + float(phases.get(PHASE_MIGRATE_DECODE, {}).get("energy_j", 0.0)),
        "energy_j": float(summary["energy_j"]),
        "bytes": float(summary["bytes_up"] + summary["bytes_down"]),
        "faults": summary.get("faults"),
        "wall_s": time.perf_counter() - started,
    }


def window(acc: dict[int, float], start: int, end: int, last: int) -> dict[str, float]:
    """Accuracy before (round start-1), during (mean, min over start..end) and after (round ``last``)."""
    during = [acc[r] for r in range(start, end + 1)]
    return {
        "before": acc[start - 1],
        "during_mean": float(np.mean(during)),
        "during_min": float(np.min(during)),
        "after": acc[last],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the clean and the outage arm, print the table and write the JSON."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    common = [f"seed={args.seed}", f"algorithm.rounds={args.rounds}", *args.set]
    failure = (
        f"faults.edge_failures=[{{edge: {args.edge}, start_round: {args.start}, end_round: {args.end}}}]"
    )
    with tempfile.TemporaryDirectory() as tmp:
        clean = one_run(args.config, common, Path(tmp) / "clean")
        print(f"clean run: {clean['wall_s']:.0f} s", flush=True)
        faulty = one_run(args.config, [*common, failure], Path(tmp) / "outage")
        print(f"outage run: {faulty['wall_s']:.0f} s", flush=True)
    stats = {
        name: window(r["accuracy"], args.start, args.end, args.rounds)
        for name, r in (("no_outage", clean), ("outage", faulty))
    }
    failover = faulty["migrate_bytes_by_round"].get(args.start, 0.0)
    failback = faulty["migrate_bytes_by_round"].get(args.end + 1, 0.0)
    header = (
        f"{'run':<10} {'before':>8} {'during mean':>12} {'during min':>11} {'after':>8} {'migrate B':>11}"
    )
    print(f"\nFedAgg, {args.edge} down in rounds {args.start}-{args.end} of {args.rounds}, seed {args.seed}")
    print(f"cloud accuracy: before = round {args.start - 1}, after = round {args.rounds}")
    print(header)
    for name, r in (("no_outage", clean), ("outage", faulty)):
        s = stats[name]
        print(
            f"{name:<10} {s['before']:>8.4f} {s['during_mean']:>12.4f} {s['during_min']:>11.4f} "
            f"{s['after']:>8.4f} {r['migrate_bytes']:>11.0f}"
        )
    print(
        f"migration: {faulty['reparented_by_round'].get(args.start, 0)} devices moved in round {args.start} "
        f"({failover:.0f} B), {faulty['reparented_by_round'].get(args.end + 1, 0)} moved back in round "
        f"{args.end + 1} ({failback:.0f} B); energy {faulty['migrate_energy_j']:.3g} J "
        f"({100 * faulty['migrate_energy_j'] / faulty['energy_j']:.3f}% of the run's)"
    )
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "config": args.config,
            "seed": args.seed,
            "rounds": args.rounds,
            "edge": args.edge,
            "outage_rounds": [args.start, args.end],
            "cloud_accuracy": stats,
            "failover_bytes": failover,
            "failback_bytes": failback,
            "runs": {"no_outage": clean, "outage": faulty},
        }
        path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
