"""Executing a resource plan in a run, and an edge association mid-run (``plan.associate_round``).

Without ``associate_round`` the planned association (``plan.associate``) moves devices before anything runs
and every round runs at the one planned operating point. With it, the run starts on the config's tree at the
plan for that tree (:attr:`TreePlan.before <edgelearn.planning.tree.plan.TreePlan.before>`), and at the
start of round R every moved device migrates to its planned edge through the algorithm's own re-parenting
(:meth:`~edgelearn.algorithms.base.Algorithm.schedule_reparenting`: for FedAgg exactly a configured
``algorithm.migrations`` entry, which Wu et al., INFOCOM 2024, Theorem 1 shows keeps agglomerative learning
valid on the new tree); once they have moved, round R's work and every later round run at the plan for the
new tree. Round R alone also pays the migration (FedAgg: ``migrate_embed`` / ``migrate_decode``), charged at
the operating point in effect before it, with the equal bandwidth shares a re-parenting restores; the
summary reports those extra charges beside the plan's prediction. Only algorithms with
:attr:`~edgelearn.algorithms.base.Algorithm.reparents_mid_run` can do this: averaging algorithms (FedAvg,
HierFAVG) fix their tree when the run starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgelearn.algorithms.registry import algorithm_class
from edgelearn.errors import ConfigError

if TYPE_CHECKING:
    from edgelearn.algorithms.base import Algorithm
    from edgelearn.planning.tree.plan import TreePlan
    from edgelearn.run_config import RunConfig
    from edgelearn.system import OperatingPoint, SystemModel


def check_associate_round(cfg: RunConfig) -> None:
    """ConfigError (exit 2) when ``plan.associate_round`` is set for an algorithm that cannot re-parent
    mid-run, or names a round the run does not reach."""
    p = cfg.plan
    if p is None or p.associate_round is None:
        return
    name = cfg.algorithm.name
    if not algorithm_class(name).reparents_mid_run:
        raise ConfigError(
            f"plan.associate_round: {name} cannot move devices to another edge server mid-run (its tree is "
            "fixed when the run starts); an association is executed mid-run through an algorithm's own "
            "re-parenting, such as FedAgg's migration (Wu et al., INFOCOM 2024, Theorem 1)",
            hint="remove plan.associate_round: plan.associate: true then moves the devices before the run",
        )
    rounds = int(cfg.algorithm.rounds)
    if p.associate_round > rounds:
        raise ConfigError(
            f"plan.associate_round={p.associate_round} is after the run's last round ({rounds})",
            hint=f"give a round in 1..{rounds}",
        )


def start_plan(plan: TreePlan, system: SystemModel) -> None:
    """Before the algorithm is built: the association moved before the run (unless it moves mid-run) and
    the operating point of round 1."""
    if plan.before is None:
        for device, edge in plan.association.items():
            system.reparent(device, edge)
    system.set_operating_point(starting_point(plan, 1))


def attach_plan(plan: TreePlan, algo: Algorithm, system: SystemModel) -> None:
    """Schedule a mid-run association on ``algo`` (before its first round): the planned devices migrate at
    the start of :attr:`~TreePlan.association_round`, then the new tree's point is set."""
    if plan.before is None or plan.association_round is None:
        return
    algo.schedule_reparenting(
        plan.association_round, plan.association, then=lambda: system.set_operating_point(plan.point)
    )


def starting_point(plan: TreePlan, round_: int) -> OperatingPoint:
    """The operating point round ``round_`` starts at: the config tree's up to the association round (which
    switches to the new tree's once its devices have migrated), the new tree's after it."""
    if plan.before is not None and plan.association_round is not None and round_ <= plan.association_round:
        return plan.before.point
    return plan.point


def resume_plan(plan: TreePlan, system: SystemModel, first: int) -> None:
    """After a checkpoint restored the tree (which resets the bandwidth shares): the point of round
    ``first``, the next one to run (a resumed mid-run association still moves at its round)."""
    system.set_operating_point(starting_point(plan, first))


def phases_summary(plan: TreePlan, system: SystemModel, rounds: int) -> dict[str, Any]:
    """summary.json's ``plan.phases`` for a mid-run association: each phase's prediction beside the ledger
    (per round): the config's tree before round R, round R (the new tree's plan plus the migration's
    charges: the phases only that round recorded), and the new tree after it."""
    assert plan.before is not None and plan.association_round is not None
    r_move = plan.association_round

    def measured(first: int, last: int) -> dict[str, Any]:
        totals = [system.ledger.round_totals(k) for k in range(first, last + 1)]
        return {
            "energy_j": [t["energy_j"] for t in totals],
            "delay_s": [t["delay_s"] for t in totals],
        }

    def predicted(p: TreePlan) -> dict[str, float]:
        return {"energy_j": p.predicted["energy_j"], "delay_s": p.predicted["delay_s"]}

    phases: list[dict[str, Any]] = []
    if r_move > 1:
        phases.append(
            {
                "phase": "config_tree",
                "rounds": [1, r_move - 1],
                "predicted": predicted(plan.before),
                "measured": measured(1, r_move - 1),
            }
        )
    if r_move <= rounds:
        moved = system.ledger.round_totals(r_move)
        other = r_move + 1 if r_move < rounds else r_move - 1
        usual = set(system.ledger.round_totals(other)["by_phase"]) if other >= 1 else set()
        extra = {k: v["energy_j"] for k, v in moved["by_phase"].items() if k not in usual}
        phases.append(
            {
                "phase": "association_round",
                "rounds": [r_move, r_move],
                "predicted": predicted(plan),
                "measured": measured(r_move, r_move),
                "migration_energy_j": float(sum(extra.values())),
                "migration_by_phase_j": extra,
                "note": "this round also pays the migration (the phases no other round records), charged "
                "at the previous phase's point; the rest of its work runs at the new tree's plan",
            }
        )
    if r_move < rounds:
        phases.append(
            {
                "phase": "association",
                "rounds": [r_move + 1, rounds],
                "predicted": predicted(plan),
                "measured": measured(r_move + 1, rounds),
            }
        )
    return {"association_round": r_move, "phases": phases}
