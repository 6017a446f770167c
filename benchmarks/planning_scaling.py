"""How long `edgelearn.planning.solve` takes as the number of devices K grows.

Setting: the §8.3 defaults (paper_two_stage.md) with 100 kHz per device (total bandwidth K x 100 kHz, so
every K sees the spec's K = 10 radio conditions), energy budget 5 J per device, delay budget 100 s, and two
shift levels (delta^2 = 0.05: pre-training-heavy optimum, 0.5: fine-tuning-heavy). Prints a table and, with
--json PATH, writes every run and the per-K summary.

    PYTHONPATH=src python benchmarks/planning_scaling.py --json runs/planning_scaling.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import replace
from pathlib import Path

from edgelearn.planning import solve, spec_problem

DEFAULT_KS = (10, 30, 100, 300)
DEFAULT_SEEDS = (0, 1, 2)
DELTA_SQUARED = (0.05, 0.5)
BANDWIDTH_PER_DEVICE_HZ = 1e5
"""100 kHz per device: the spec's 1 MHz over K = 10 (paper_two_stage.md §8.3)."""
ENERGY_PER_DEVICE_J = 5.0
"""50 J for K = 10 (the spec's §9 budget), scaled with K."""
DELAY_S = 100.0
"""The spec's §9 delay budget."""


def run(ks: tuple[int, ...], seeds: tuple[int, ...]) -> dict[str, object]:
    """Solve every (K, seed, delta^2) case; return the raw rows and a per-K summary."""
    rows: list[dict[str, object]] = []
    for k in ks:
        for seed in seeds:
            for delta_sq in DELTA_SQUARED:
                problem = spec_problem(
                    k,
                    seed=seed,
                    energy_j=ENERGY_PER_DEVICE_J * k,
                    delay_s=DELAY_S,
                    bandwidth_hz=BANDWIDTH_PER_DEVICE_HZ * k,
                )
                problem = problem.with_constants(replace(problem.constants, delta=math.sqrt(delta_sq)))
                start = time.perf_counter()
                plan = solve(problem)
                seconds = time.perf_counter() - start
                solves = int(plan.status.split(";")[1].split()[0])
                rows.append(
                    {
                        "K": k,
                        "seed": seed,
                        "delta_sq": delta_sq,
                        "seconds": seconds,
                        "inner_solves": solves,
                        "M": plan.M,
                        "N": plan.N,
                        "bound": plan.bound,
                        "feasible": plan.feasible and not plan.violations(problem),
                    }
                )
    summary = []
    for k in ks:
        mine = [r for r in rows if r["K"] == k]
        times = [float(r["seconds"]) for r in mine]  # type: ignore[arg-type]
        solves = [int(r["inner_solves"]) for r in mine]  # type: ignore[call-overload]
        summary.append(
            {
                "K": k,
                "median_s": statistics.median(times),
                "max_s": max(times),
                "mean_inner_solves": statistics.fmean(solves),
                "ms_per_inner_solve": 1000.0 * sum(times) / max(sum(solves), 1),
                "all_feasible": all(bool(r["feasible"]) for r in mine),
            }
        )
    return {"rows": rows, "summary": summary}


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS), help="numbers of devices")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS), help="system seeds")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    args = parser.parse_args()
    result = run(tuple(args.ks), tuple(args.seeds))
    print(f"{'K':>5} {'median s':>9} {'max s':>7} {'solves':>7} {'ms/solve':>9} {'feasible':>9}")
    for row in result["summary"]:  # type: ignore[union-attr]
        print(
            f"{row['K']:>5} {row['median_s']:>9.2f} {row['max_s']:>7.2f} {row['mean_inner_solves']:>7.1f} "
            f"{row['ms_per_inner_solve']:>9.1f} {row['all_feasible']!s:>9}"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
