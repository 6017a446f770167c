"""Plan one recorded round under many per-round budgets: every scheme's energy and delay per budget, from
one pilot.

``edgelearn plan`` records a pilot round for each call; on a heavy config (FedAgg on Fashion-MNIST: the
autoencoder's pre-training and a round of the cloud's ResNet) that is minutes a budget. This script records
the round once (``runner.planned.record_round``: the same pilot ``edgelearn plan`` and ``edgelearn run``
make) and plans it for each value of the objective's budget (``plan.round_delay_s`` for the energy
objective, ``plan.round_energy_j`` for delay). The numbers are those ``edgelearn plan --set ...`` prints for
each value, and what a run executing the plan measures (the ledger replays the same round; tests assert it
to 1e-6 relative).

Usage::

    PYTHONPATH=src python benchmarks/plan_budgets.py configs/plan/fedagg-fashion.yaml --values 0.5 1 2 4 \\
        --json docs/results/plan_fedagg_fashion_budgets.json
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from edgelearn.commands.bench.machine import load_average
from edgelearn.errors import ConfigError, exit_on_user_error
from edgelearn.planning.tree.plan import Budgets, plan_round
from edgelearn.report.io import write_json_atomic
from edgelearn.run_config import load_config
from edgelearn.runner.planned import record_round

BUDGET_OF = {"energy": "delay_s", "delay": "energy_j"}
"""The objective -> the per-round budget this script varies (the other measure)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Config, budget values, overrides and the JSON target."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", type=Path, help="a config with a plan: section (objective delay or energy)")
    p.add_argument("--values", type=float, nargs="+", required=True, help="per-round budgets to plan for")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override a.b=value")
    p.add_argument("--json", type=Path, default=None, help="write the rows here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Record the round once, plan it for every budget, print a table and return (and write) the rows."""
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if cfg.plan is None or cfg.plan.objective not in BUDGET_OF:
        raise ConfigError(
            f"{args.config}: plan_budgets needs a plan: section with objective delay or energy",
            hint="add plan: {objective: energy, round_delay_s: 1.0} (or objective delay with round_energy_j)",
        )
    if any(v <= 0 for v in args.values):
        raise ConfigError(
            f"--values must be positive budgets, got {args.values}", hint="e.g. --values 0.5 1 2"
        )
    objective = cfg.plan.objective
    started = time.perf_counter()
    pilot, profile = record_round(cfg, {})
    record_s = time.perf_counter() - started
    full = profile.replay(pilot.system, None)
    rows = []
    for value in args.values:
        budget = {"energy_j": value} if BUDGET_OF[objective] == "energy_j" else {"delay_s": value}
        t = time.perf_counter()
        try:
            plan = plan_round(
                pilot.system, profile, Budgets(objective, weight_j_per_s=cfg.plan.weight_j_per_s, **budget)
            )
        except ConfigError as exc:  # a budget below the floor: say so in the row
            rows.append({"budget": value, "error": exc.message})
            print(f"{BUDGET_OF[objective]} {value:g}: infeasible ({exc.message.splitlines()[-1].strip()})")
            continue
        rows.append({"budget": value, "schemes": plan.schemes, "plan_s": time.perf_counter() - t})
        best = plan.schemes["planned"]
        line = "  ".join(
            f"{name} {row['energy_j']:.4g} J / {row['delay_s']:.4g} s{'' if row['feasible'] else ' (over)'}"
            for name, row in plan.schemes.items()
        )
        print(f"{BUDGET_OF[objective]} {value:g}: planned {best['objective']:.6g}  |  {line}", flush=True)
    result = {
        "config": str(args.config),
        "overrides": args.overrides,
        "objective": objective,
        "budget": BUDGET_OF[objective],
        "full_speed": {"energy_j": full["energy_j"], "delay_s": full["delay_s"]},
        "profile_round": profile.round,
        "record_s": record_s,
        "rows": rows,
        "load_average": load_average(),
        "cpus": os.cpu_count(),
    }
    if args.json is not None:
        write_json_atomic(args.json, result)  # folders created; never a half-written file
    return result


if __name__ == "__main__":
    exit_on_user_error(main)
