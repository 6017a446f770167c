"""How long the tree planner (``edgelearn.planning.tree``) takes as the number of devices grows.

Setting: 10 edge servers, devices split evenly under them, the default hardware (paper DVFS devices and
edges, an A100 cloud) and channel (1 MHz per server, shared equally), one dry-run HierFAVG-shaped round
(``planning.tree.synthetic.hierarchical_round``: 400 kB model, 1 GFLOP of local training per device) and an
energy budget of half the full-speed round's; objective: the shortest round. Each point plans every scheme
(planned, max_speed, clocks_only, powers_only; two solves each for the lexicographic pass). Prints a table
and, with --json PATH, writes the rows and the growth exponent of planning time in the number of devices.

    PYTHONPATH=src python benchmarks/plan_tree_scaling.py --json docs/results/plan_tree_scaling.json

With --associate, each point instead times the edge-association search (planning/tree/association.py: HFEL
moves priced by the per-edge surrogate, exact re-plans of what it keeps) on per-pair device-edge distances
(10 m to 1 km), for the delay objective and the weighted one, and reports the planned objective of the
nearest-edge association, the config's tree and the search's answer (exact: the dry-run round's server work
does not depend on membership, so the re-targeted round is the recorded one).

    PYTHONPATH=src python benchmarks/plan_tree_scaling.py --associate --devices 100 1000 \
        --json docs/results/plan_association_scaling.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgelearn.planning.tree.plan import Budgets, plan_round
from edgelearn.planning.tree.profile import RoundProfile
from edgelearn.planning.tree.synthetic import hierarchical_round
from edgelearn.seeding import Seeds
from edgelearn.system import ChannelSpec, SystemModel, Topology

DEFAULT_DEVICES = (100, 1000, 10000)
EDGES = 10
MODEL_BYTES = 4e5
"""A 100k-parameter float32 model."""
DEVICE_FLOPS = 1e9
"""One local epoch of a small model on a few hundred samples."""
SERVER_FLOPS = 1e7
"""Averaging at an edge or the cloud."""
BUDGET_SHARE = 0.5
"""Energy budget: this share of the full-speed round's energy."""


def _tree_round(n: int, seed: int, spec: ChannelSpec) -> tuple[SystemModel, RoundProfile, dict[str, Any]]:
    """``n`` devices under :data:`EDGES` edge servers, a dry-run HierFAVG round on them and its full-speed
    cost."""
    system = SystemModel.build(Topology.hierarchical(EDGES, n // EDGES), None, spec, Seeds(seed))
    profile = hierarchical_round(
        system,
        model_bytes=MODEL_BYTES,
        device_flops=DEVICE_FLOPS,
        edge_flops=SERVER_FLOPS,
        cloud_flops=SERVER_FLOPS,
    )
    return system, profile, profile.replay(system, None)


def run(devices: tuple[int, ...], seed: int) -> list[dict[str, object]]:
    """Plan one round per tree size; return a row per size."""
    rows = []
    for n in devices:
        system, profile, full = _tree_round(n, seed, ChannelSpec())
        started = time.perf_counter()
        plan = plan_round(system, profile, Budgets("delay", energy_j=BUDGET_SHARE * full["energy_j"]))
        wall = time.perf_counter() - started
        rows.append(
            {
                "devices": n,
                "events": plan.profile["events"],
                "plan_s": wall,
                "solve_s": plan.solve_s,
                "feasible": plan.feasible,
                "delay_s": plan.predicted["delay_s"],
                "energy_j": plan.predicted["energy_j"],
                "max_speed_energy_j": full["energy_j"],
                "powers_only_energy_j": plan.schemes["powers_only"]["energy_j"],
            }
        )
        print(
            f"{n:>7} devices  {plan.profile['events']:>7} events  plan {wall:7.2f} s  "
            f"delay {plan.predicted['delay_s']:.4g} s  energy {plan.predicted['energy_j']:.4g} J "
            f"(full speed {full['energy_j']:.4g} J)",
            flush=True,
        )
    return rows


ASSOCIATION_DISTANCE_M = (10.0, 1000.0)
"""Per-pair device-edge distances for --associate: spread wide, so which edge a device joins matters."""
ASSOCIATION_EVALUATIONS = 20_000
"""Most surrogate evaluations per search (plan.association_evaluations' default)."""


def run_association(devices: tuple[int, ...], seed: int) -> list[dict[str, object]]:
    """Time the association search per tree size and objective; return a row per (size, objective)."""
    from edgelearn.planning.tree.association import associate

    rows = []
    for n in devices:
        spec = ChannelSpec(distance_m=ASSOCIATION_DISTANCE_M, edge_distances="per_pair")
        system, profile, full = _tree_round(n, seed, spec)
        for budgets in (Budgets("delay", energy_j=BUDGET_SHARE * full["energy_j"]), Budgets("weighted")):
            started = time.perf_counter()
            found = associate(system, profile, budgets, max_evaluations=ASSOCIATION_EVALUATIONS)
            wall = time.perf_counter() - started
            r = found.record
            gain = 1.0 - r["objective"] / r["nearest_edge_objective"]
            rows.append(
                {"devices": n, "objective": budgets.objective, "search_s": wall, "improvement": gain, **r}
            )
            print(
                f"{n:>7} devices  {budgets.objective:>8}  search {wall:7.2f} s "
                f"(surrogate {r['surrogate_s']:.2f} s, {r['evaluations']} evaluations; "
                f"{r['exact_solves']} exact plans {r['exact_s']:.2f} s)  "
                f"nearest {r['nearest_edge_objective']:.4g}  config {r['configured_objective']:.4g}  "
                f"kept {r['objective']:.4g} ({gain:.1%} below nearest, {r['moved_devices']} moved)",
                flush=True,
            )
    return rows


def growth_exponent(rows: list[dict[str, object]]) -> float:
    """Least-squares slope of log(plan time) on log(devices)."""
    x = np.log([float(r["devices"]) for r in rows])  # type: ignore[arg-type]
    y = np.log([float(r["plan_s"]) for r in rows])  # type: ignore[arg-type]
    return float(np.polyfit(x, y, 1)[0]) if len(rows) > 1 else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=list(DEFAULT_DEVICES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--associate", action="store_true", help="time the edge-association search instead")
    args = parser.parse_args()
    if args.associate:
        rows = run_association(tuple(args.devices), args.seed)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            record = {
                "rows": rows,
                "edges": EDGES,
                "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()},
            }
            args.json.write_text(json.dumps(record, indent=2), encoding="utf-8")
        return
    rows = run(tuple(args.devices), args.seed)
    exponent = growth_exponent(rows)
    print(f"planning time grows as devices^{exponent:.2f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "rows": rows,
            "growth_exponent": exponent,
            "edges": EDGES,
            "machine": {"cpus": os.cpu_count()},
        }
        args.json.write_text(json.dumps(record, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
