"""Resource plans a run executes (``plan:``): the pilot that records a round, and the plan's summary."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from edgelearn.algorithms.registry import make_algorithm
from edgelearn.errors import ConfigError
from edgelearn.run_config import RunConfig, build_config
from edgelearn.runner.context import build_context, release
from edgelearn.runner.midrun import check_associate_round, phases_summary
from edgelearn.system import SystemModel

if TYPE_CHECKING:
    from edgelearn.algorithms.base import RunContext
    from edgelearn.planning.tree.plan import Budgets, TreePlan
    from edgelearn.planning.tree.profile import RoundProfile


def tree_plan(cfg: RunConfig) -> TreePlan:
    """The ``plan:`` section's plan (planning/tree): round ``plan.profile_round`` of a pilot run of the same
    config and seed (in memory, nothing written) is recorded, and clocks and powers are chosen for it.

    With ``plan.associate`` the plan is made on the association kept (recorded again on it); with
    ``plan.associate_round`` too, the config tree's plan, executed until the devices migrate, is its
    :attr:`~edgelearn.planning.tree.plan.TreePlan.before` (runner/midrun.py)."""
    from edgelearn.planning.tree.plan import plan_round  # cvxpy: only runs that plan import it

    assert cfg.plan is not None
    if cfg.algorithm.name == "two_stage":
        raise ConfigError(
            "`plan` does not apply to two_stage, which plans its own rounds, batches, clocks and powers",
            hint="set the budgets under algorithm.budget and remove the plan section",
        )
    check_associate_round(cfg)
    p = cfg.plan
    budgets = round_budgets(cfg, int(cfg.algorithm.rounds))
    pilot, profile = record_round(cfg, {})
    before = None
    if p.associate:  # each tree it reports is recorded again (pilot runs): its plan is then exact
        from edgelearn.planning.tree.association import associated_plan

        def record(moves: dict[int, int]) -> tuple[SystemModel, RoundProfile]:
            ctx, again = record_round(cfg, moves)
            return ctx.system, again

        plan = associated_plan(
            pilot.system,
            profile,
            budgets,
            record=record,
            max_evaluations=p.association_evaluations,
            polish_solves=p.association_polish,
            mid_run=p.associate_round is not None,
        )
        before = plan.before
    else:
        plan = plan_round(pilot.system, profile, budgets)
    if p.scheme != "planned":  # a baseline's point, on the same budgets (it may exceed them)
        from edgelearn.planning.tree.plan import settings_summary

        if before is not None:
            before = before.executing(p.scheme, settings_summary(pilot.system, before.points[p.scheme]))
        plan = plan.executing(p.scheme, settings_summary(pilot.system, plan.points[p.scheme]))
    elif not plan.feasible or (before is not None and not before.feasible):
        failed = plan if before is None or not plan.feasible else before
        where = " on the config's tree (before plan.associate_round)" if failed is before else ""
        raise ConfigError(
            f"plan: the solver found no operating point within the budgets{where} (status "
            f"{failed.schemes['planned']['status']}); round_energy_j={p.round_energy_j}, "
            f"round_delay_s={p.round_delay_s}",
            hint="raise the budgets a little: `edgelearn plan CONFIG` shows every scheme's energy and delay",
        )
    if before is not None:
        plan = replace(plan, association_round=p.associate_round, before=before)
    return plan


def record_round(cfg: RunConfig, moves: dict[int, int]) -> tuple[RunContext, RoundProfile]:
    """A pilot run of ``cfg`` (devices in ``moves`` re-parented first) up to ``plan.profile_round``, and
    that round's profile."""
    from edgelearn.planning.tree.profile import RoundProfile

    assert cfg.plan is not None
    pilot = build_context(cfg)
    try:
        for device, edge in moves.items():
            pilot.system.reparent(device, edge)
        algo = make_algorithm(pilot)
        algo.init()
        for r in range(1, min(cfg.plan.profile_round, algo.rounds) + 1):
            algo.run_round(r)
    finally:
        release(pilot)
    profile = RoundProfile.from_ledger(pilot.system.ledger, cfg.plan.profile_round, pilot.topology.num_nodes)
    return pilot, profile


def round_budgets(cfg: RunConfig, rounds: int) -> Budgets:
    """The plan's per-round budgets: given per round, or the run's totals split evenly over ``rounds``."""
    from edgelearn.planning.tree.plan import Budgets

    p = cfg.plan
    assert p is not None
    energy = p.round_energy_j if p.total_energy_j is None else p.total_energy_j / rounds
    delay = p.round_delay_s if p.total_delay_s is None else p.total_delay_s / rounds
    return Budgets(p.objective, energy, delay, p.weight_j_per_s)


def choose_rounds(cfg: RunConfig) -> tuple[RunConfig, dict[str, Any] | None]:
    """With ``plan.target_accuracy``: the number of rounds, and with ``plan.choices`` the settings, the run
    should use (config/plan.py), as a resolved config with per-round budgets, and the search's record for
    summary.json; ``(cfg, None)`` otherwise. Each candidate's pilot run (same seed, nothing written) measures
    its test accuracy round by round and records its round ``plan.profile_round``; the candidate needs the
    first round reaching the target, and is planned with the totals split over those rounds."""
    p = cfg.plan
    if p is None or not p.chooses_rounds:
        return cfg, None
    check_associate_round(cfg)  # before the pilots
    from edgelearn.planning.tree.plan import plan_round  # cvxpy: only runs that plan import it
    from edgelearn.planning.tree.profile import RoundProfile

    assert p.target_accuracy is not None
    keys = list(p.choices)
    candidates: list[dict[str, Any]] = []
    best: tuple[float, RunConfig, dict[str, Any]] | None = None
    for values in itertools.product(*p.choices.values()):
        settings = dict(zip(keys, values))
        data = cfg.model_dump(mode="json")
        trial = build_config(
            data, [f"{k}={json.dumps(v)}" for k, v in settings.items()], source="plan.choices"
        )
        pilot_rounds = p.pilot_rounds or int(trial.algorithm.rounds)
        ctx = build_context(trial)
        try:
            algo = make_algorithm(ctx)
            algo.init()
            accuracy: list[float] = []
            reached: int | None = None
            for r in range(1, pilot_rounds + 1):
                algo.run_round(r)
                accuracy.append(float(algo.evaluate()["accuracy"]))
                if reached is None and accuracy[-1] >= p.target_accuracy:
                    reached = r
                if reached is not None and r >= p.profile_round:
                    break  # the rounds it needs are known and its profiled round recorded
        finally:
            release(ctx)
        entry: dict[str, Any] = {"settings": settings, "accuracy": accuracy, "rounds": reached}
        candidates.append(entry)
        if reached is None:
            entry["why_not"] = f"the pilot did not reach {p.target_accuracy} in {pilot_rounds} rounds"
            continue
        profile = RoundProfile.from_ledger(ctx.system.ledger, p.profile_round, ctx.topology.num_nodes)
        budgets = round_budgets(trial, reached)
        try:
            plan = plan_round(ctx.system, profile, budgets)
        except ConfigError as exc:
            entry["why_not"] = exc.message
            continue
        energy, delay = reached * plan.predicted["energy_j"], reached * plan.predicted["delay_s"]
        value = budgets.value(energy, delay)
        entry.update(total_energy_j=energy, total_delay_s=delay, objective=value, feasible=plan.feasible)
        if plan.feasible and (best is None or value < best[0]):
            resolved = trial.model_dump(mode="json")
            resolved["algorithm"]["rounds"] = reached
            resolved["plan"] = {
                **resolved["plan"],
                "round_energy_j": budgets.energy_j,
                "round_delay_s": budgets.delay_s,
                "total_energy_j": None,
                "total_delay_s": None,
                "target_accuracy": None,
                "pilot_rounds": None,
                "choices": {},
            }
            best = (value, build_config(resolved, source="the chosen plan"), settings)
    record = {
        "accuracy_from": "pilot runs (measured, not extrapolated)",
        "target_accuracy": p.target_accuracy,
        "candidates": candidates,
    }
    if best is None:
        reasons = "; ".join(
            f"{c['settings'] or 'the config'}: {c.get('why_not', 'infeasible')}" for c in candidates
        )
        raise ConfigError(
            f"plan: no candidate reaches accuracy {p.target_accuracy} within the budgets ({reasons})",
            hint="lower plan.target_accuracy, raise plan.pilot_rounds or the total budgets",
        )
    _, chosen, settings = best
    record["chosen"] = {"rounds": int(chosen.algorithm.rounds), "settings": settings}
    return chosen, record


def plan_summary(
    plan: TreePlan, system: SystemModel, rounds: int, outer: dict[str, Any] | None = None
) -> dict[str, Any]:
    """summary.json's ``plan``: the planner's prediction beside what the ledger measured, in the profiled
    round and averaged over every round (rounds whose work differs from the profile differ too), and the
    record of :func:`choose_rounds` when it chose the rounds. A mid-run association adds ``phases``: each
    phase's prediction beside the ledger, round by round (runner/midrun.py); ``measured.round`` is then
    one on the new tree (the plan predicts those), after the association round."""
    r = plan.profile["round"]
    if plan.before is not None and plan.association_round is not None:
        r = max(r, plan.association_round + 1)
    measured = [system.ledger.round_totals(k) for k in range(1, rounds + 1)]
    return {
        **plan.summary(),
        "measured": {
            "round": r,
            "energy_j": measured[r - 1]["energy_j"] if r <= rounds else None,
            "delay_s": measured[r - 1]["delay_s"] if r <= rounds else None,
            "mean_energy_j": float(np.mean([m["energy_j"] for m in measured])),
            "mean_delay_s": float(np.mean([m["delay_s"] for m in measured])),
            "total_energy_j": float(np.sum([m["energy_j"] for m in measured])),
            "total_delay_s": float(np.sum([m["delay_s"] for m in measured])),
        },
        **({"outer": outer} if outer is not None else {}),
        **(phases_summary(plan, system, rounds) if plan.before is not None else {}),
    }
