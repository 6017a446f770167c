"""Resource plans a run executes (``plan:``): the pilot that records a round, and the plan's summary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from edgelearn.algorithms.registry import make_algorithm
from edgelearn.errors import ConfigError
from edgelearn.run_config import RunConfig
from edgelearn.system import SystemModel

if TYPE_CHECKING:
    from edgelearn.planning.tree.plan import TreePlan

from edgelearn.runner.context import build_context


def tree_plan(cfg: RunConfig) -> TreePlan:
    """The ``plan:`` section's plan (planning/tree): round ``plan.profile_round`` of a pilot run of the same
    config and seed (in memory, nothing written) is recorded, and clocks and powers are chosen for it."""
    from edgelearn.planning.tree.plan import Budgets, plan_round  # cvxpy: only runs that plan import it
    from edgelearn.planning.tree.profile import RoundProfile

    assert cfg.plan is not None
    if cfg.algorithm.name == "two_stage":
        raise ConfigError(
            "`plan` does not apply to two_stage, which plans its own rounds, batches, clocks and powers",
            hint="set the budgets under algorithm.budget and remove the plan section",
        )
    pilot = build_context(cfg)
    try:
        algo = make_algorithm(pilot)
        algo.init()
        for r in range(1, min(cfg.plan.profile_round, algo.rounds) + 1):
            algo.run_round(r)
    finally:
        shutdown = getattr(pilot.executor, "shutdown", None)
        if callable(shutdown):
            shutdown()
    p = cfg.plan
    profile = RoundProfile.from_ledger(pilot.system.ledger, p.profile_round, pilot.topology.num_nodes)
    plan = plan_round(
        pilot.system, profile, Budgets(p.objective, p.round_energy_j, p.round_delay_s, p.weight_j_per_s)
    )
    if not plan.feasible:
        raise ConfigError(
            f"plan: the solver found no operating point within the budgets (status "
            f"{plan.schemes['planned']['status']}); round_energy_j={p.round_energy_j}, "
            f"round_delay_s={p.round_delay_s}",
            hint="raise the budgets a little: `edgelearn plan CONFIG` shows every scheme's energy and delay",
        )
    return plan


def plan_summary(plan: TreePlan, system: SystemModel, rounds: int) -> dict[str, Any]:
    """summary.json's ``plan``: the planner's prediction beside what the ledger measured, in the profiled
    round and averaged over every round (rounds whose work differs from the profile differ too)."""
    r = plan.profile["round"]
    measured = [system.ledger.round_totals(k) for k in range(1, rounds + 1)]
    return {
        **plan.summary(),
        "measured": {
            "round": r,
            "energy_j": measured[r - 1]["energy_j"] if r <= rounds else None,
            "delay_s": measured[r - 1]["delay_s"] if r <= rounds else None,
            "mean_energy_j": float(np.mean([m["energy_j"] for m in measured])),
            "mean_delay_s": float(np.mean([m["delay_s"] for m in measured])),
        },
    }
