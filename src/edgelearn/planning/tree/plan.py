"""A resource plan for one recorded round of any algorithm: the planner's operating point, what it is
predicted to cost, and the schemes it is compared with on the same budgets.

Objectives (``plan.objective``): ``delay`` (shortest round under ``round_energy_j``), ``energy`` (least energy
under ``round_delay_s``) or ``weighted`` (energy + ``weight_j_per_s`` x delay, under whichever budgets are
given). A ``delay`` plan then spends no energy it does not need: among the operating points within 1e-6 of
the shortest delay it takes the least energy (and an ``energy`` plan the shortest delay within 1e-6 of the
least energy), so no scheme matches it on its objective and beats it on the other measure.

Schemes, each priced by replaying the profile at its operating point (the numbers a run records):
``planned`` (clocks, powers and each server's FDMA bandwidth split, planning/tree/bandwidth.py),
``uniform_bandwidth`` (clocks and powers at equal shares), ``max_speed`` (every clock at f_max, every radio at
p_max, equal shares: what a run without a plan does), ``clocks_only`` and ``powers_only`` (those parts alone,
the rest at full speed and equal shares). The edge association is the config's tree unless ``plan.associate``
chose another (planning/tree/association.py); then the schemes also include :data:`ASSOCIATION_SCHEMES`
(``nearest_edge``, ``allocation_only``, ``association_only``), each priced on a round recorded on its own
tree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgelearn.errors import ConfigError
from edgelearn.planning.convex import ACCEPTED_STATUSES
from edgelearn.planning.plan import FEASIBILITY_RTOL
from edgelearn.planning.tree.bandwidth import split_bandwidth
from edgelearn.planning.tree.inner import Objective, Parts, Terms, price, solve
from edgelearn.planning.tree.profile import Graph, RoundProfile
from edgelearn.system import OperatingPoint, SystemModel

BANDWIDTH_ROUNDS = 8
"""Most alternations of shares and clocks/powers (planning/tree/bandwidth.py); each lowers the objective."""
BANDWIDTH_RTOL = 1e-4
"""The alternation stops once a round lowers the objective by less than this (relative)."""
LEXICOGRAPHIC_RTOL = 1e-6
"""How far the second pass of a plan may move its objective (relative) to improve the other measure."""

SCHEMES: dict[str, Parts | None] = {
    "planned": "joint",
    "uniform_bandwidth": "joint",
    "max_speed": None,
    "clocks_only": "clocks",
    "powers_only": "powers",
}
"""Scheme name -> what it optimizes (None: nothing, full speed)."""
PARTS_ALONE = ("clocks_only", "powers_only")
"""The allocation's parts alone (baselines :func:`plan_round` may skip)."""
ASSOCIATION_SCHEMES = ("nearest_edge", "allocation_only", "association_only")
"""With ``plan.associate``: the association's baselines (planning/tree/association.py,
:func:`~edgelearn.planning.tree.association.associated_plan`): every device at its nearest edge server with
the full planned allocation, the config's tree with the full planned allocation (the plan without
association), and the chosen association at full speed with equal shares (association without allocation)."""


@dataclass(frozen=True)
class Budgets:
    """What a plan must respect and minimize, per round."""

    objective: Objective
    energy_j: float | None = None
    delay_s: float | None = None
    weight_j_per_s: float = 1.0

    def value(self, energy_j: float, delay_s: float) -> float:
        """The objective of a round costing ``energy_j`` and ``delay_s``."""
        if self.objective == "delay":
            return delay_s
        if self.objective == "energy":
            return energy_j
        return energy_j + self.weight_j_per_s * delay_s

    def feasible(self, energy_j: float, delay_s: float) -> bool:
        """Within both budgets, up to :data:`~edgelearn.planning.plan.FEASIBILITY_RTOL`."""
        ok_e = self.energy_j is None or energy_j <= self.energy_j * (1 + FEASIBILITY_RTOL)
        ok_t = self.delay_s is None or delay_s <= self.delay_s * (1 + FEASIBILITY_RTOL)
        return bool(ok_e and ok_t)


@dataclass
class TreePlan:
    """The planned operating point, its predicted cost, and every scheme's cost on the same budgets."""

    budgets: Budgets
    point: OperatingPoint
    predicted: dict[str, Any]
    schemes: dict[str, dict[str, Any]]
    profile: dict[str, Any]
    solve_s: float
    settings: dict[str, Any] = field(default_factory=dict)
    points: dict[str, OperatingPoint] = field(default_factory=dict)
    """Every scheme's operating point (``planned`` is :attr:`point`): a run may execute a baseline's."""
    executed: str = "planned"
    """The scheme whose operating point :attr:`point` is (:meth:`executing`)."""
    association: dict[int, int] = field(default_factory=dict)
    """Devices the plan moves to another edge server before the run (node id -> edge id; association.py)."""
    association_record: dict[str, Any] | None = None
    """The association search's record (objectives of the config's tree, the nearest-edge start, the kept)."""
    associations: dict[str, dict[int, int]] = field(default_factory=dict)
    """Schemes that run on another association than :attr:`association` (``nearest_edge``,
    ``allocation_only``): scheme -> its moves; :meth:`executing` re-parents accordingly."""
    association_round: int | None = None
    """The round at whose start the devices move (``plan.associate_round``; None: before the run starts)."""
    before: TreePlan | None = None
    """With :attr:`association_round`: the plan of the config's tree, executed before that round."""

    def executing(self, scheme: str, settings: dict[str, Any]) -> TreePlan:
        """This plan with ``scheme``'s operating point to execute (a baseline's, for experiments on the same
        budgets), its predicted cost and its ``settings``."""
        if scheme not in self.points:
            raise ConfigError(
                f"plan.scheme {scheme}: this plan has no operating point for it "
                f"({'no feasible plan on its tree' if scheme in self.schemes else 'not computed'})",
                hint="the association schemes need plan.associate: true; `edgelearn plan CONFIG` shows them",
            )
        row = self.schemes[scheme]
        predicted = {"energy_j": row["energy_j"], "delay_s": row["delay_s"]}
        moves = self.associations.get(scheme, self.association)
        return replace(
            self,
            point=self.points[scheme],
            predicted=predicted,
            settings=settings,
            executed=scheme,
            association=dict(moves),
        )

    @property
    def feasible(self) -> bool:
        """Whether the executed point (the planned one unless :meth:`executing`) is within the budgets."""
        return bool(self.schemes[self.executed]["feasible"])

    def summary(self) -> dict[str, Any]:
        """JSON-able: ``feasible``, ``objective``, ``energy_j``, ``delay_s`` (predicted per round), the chosen
        ``settings``, and ``schemes`` with each baseline's ``objective`` / ``energy_j`` / ``delay_s``."""
        b = self.budgets
        return {
            "feasible": self.feasible,
            "executed": self.executed,
            "objective": b.objective,
            "objective_value": self.schemes[self.executed]["objective"],
            "energy_j": self.predicted["energy_j"],
            "delay_s": self.predicted["delay_s"],
            "budgets": {
                "round_energy_j": b.energy_j,
                "round_delay_s": b.delay_s,
                "weight_j_per_s": b.weight_j_per_s,
            },
            "settings": self.settings,
            "schemes": self.schemes,
            "profile": self.profile,
            "solve_s": self.solve_s,
            **(
                {"association": {"moves": dict(self.association), **self.association_record}}
                if self.association_record is not None
                else {}
            ),
            **(
                {"association_round": self.association_round, "before": self.before.summary()}
                if self.before is not None
                else {}
            ),
        }


def plan_round(
    system: SystemModel, profile: RoundProfile, budgets: Budgets, *, baselines: bool = True
) -> TreePlan:
    """Plan ``profile`` on ``system`` (its hardware, channel and tree) for ``budgets``; ConfigError naming
    the smallest feasible budgets when none can be met. ``baselines=False`` skips ``clocks_only`` and
    ``powers_only`` (the association search prices many trees and needs only the plan)."""
    full = profile.replay(system, None)
    if full["energy_j"] <= 0 or full["delay_s"] <= 0:
        raise ConfigError(
            f"plan: round {profile.round} costs no energy or time to plan",
            hint="profile a round in which the algorithm trains (plan.profile_round)",
        )
    graph = profile.graph()
    terms = price(graph, system, profile.round)
    _check_budgets(budgets, terms, full)
    scale = (full["delay_s"], full["energy_j"])
    schemes: dict[str, dict[str, Any]] = {}
    points: dict[str, OperatingPoint] = {}
    costs: dict[str, dict[str, Any]] = {}
    solve_s = 0.0
    for name, parts in SCHEMES.items():
        if name == "planned" or (not baselines and name in PARTS_ALONE):
            continue  # planned: after uniform_bandwidth, which it starts from
        if parts is None:
            point = OperatingPoint.full_speed(system.topology.num_nodes)
            status = "fixed"
        else:
            point, status, seconds = _lexicographic(profile, terms, system, budgets, scale, parts)
            solve_s += seconds
        cost = full if parts is None else profile.replay(system, point)  # full speed was replayed above
        costs[name] = cost
        schemes[name] = _scheme(budgets, cost, status)
        points[name] = point
    start = points["uniform_bandwidth"]
    best, predicted, status, seconds = _with_bandwidth(
        profile, graph, terms, system, budgets, scale, start, costs["uniform_bandwidth"]
    )
    solve_s += seconds
    schemes = {"planned": _scheme(budgets, predicted, status), **schemes}
    points = {"planned": best, **points}
    return TreePlan(
        budgets=budgets,
        point=best,
        predicted=predicted,
        schemes=schemes,
        profile={"round": profile.round, "events": graph.size, "precedence_pairs": int(graph.before.size)},
        solve_s=solve_s,
        settings=settings_summary(system, best),
        points=points,
    )


def _scheme(budgets: Budgets, cost: dict[str, Any], status: str) -> dict[str, Any]:
    """A scheme's row: its objective, energy, delay, feasibility and the solver's status."""
    return {
        "objective": budgets.value(cost["energy_j"], cost["delay_s"]),
        "energy_j": cost["energy_j"],
        "delay_s": cost["delay_s"],
        "feasible": budgets.feasible(cost["energy_j"], cost["delay_s"]) and status != "infeasible",
        "status": status,
    }


def _with_bandwidth(
    profile: RoundProfile,
    graph: Graph,
    terms: Terms,
    system: SystemModel,
    budgets: Budgets,
    scale: tuple[float, float],
    start: OperatingPoint,
    start_cost: dict[str, Any],
) -> tuple[OperatingPoint, dict[str, Any], str, float]:
    """Clocks, powers and FDMA shares together: from ``start`` (clocks and powers at equal shares, costing
    ``start_cost``) alternate the shares at fixed link times and the clocks and powers at fixed shares
    (planning/tree/bandwidth.py) while the objective falls by more than :data:`BANDWIDTH_RTOL`; the best
    feasible point found, with its replayed cost."""
    started = time.perf_counter()
    best, best_cost, status = start, start_cost, "optimal"
    best_value = budgets.value(start_cost["energy_j"], start_cost["delay_s"])
    point, current, view = start, terms, system
    for _ in range(BANDWIDTH_ROUNDS):
        shares = split_bandwidth(current, view, point)
        if shares is None:
            break
        view = SystemModel(system.topology, system.profiles, system.channel.clone())
        view.channel.set_bandwidth(shares)
        current = price(graph, view, profile.round)
        found, found_status, _ = _lexicographic(profile, current, view, budgets, scale, "joint")
        candidate = replace(found, bandwidth_hz=shares)
        cost = profile.replay(system, candidate)
        value = budgets.value(cost["energy_j"], cost["delay_s"])
        if found_status not in ACCEPTED_STATUSES or not budgets.feasible(cost["energy_j"], cost["delay_s"]):
            break
        gain = best_value - value
        if value < best_value:
            best, best_cost, best_value, status = candidate, cost, value, found_status
        point = candidate
        if gain <= BANDWIDTH_RTOL * abs(best_value):
            break
    return best, best_cost, status, time.perf_counter() - started


def _lexicographic(
    profile: RoundProfile,
    terms: Terms,
    system: SystemModel,
    budgets: Budgets,
    scale: tuple[float, float],
    parts: Parts,
) -> tuple[OperatingPoint, str, float]:
    """Solve for the objective, then (delay or energy objectives) improve the other measure without moving
    the objective by more than :data:`LEXICOGRAPHIC_RTOL`."""
    kw = {"energy_j": budgets.energy_j, "delay_s": budgets.delay_s, "scale": scale, "parts": parts}
    first = solve(terms, system, objective=budgets.objective, weight_j_per_s=budgets.weight_j_per_s, **kw)
    if first.status not in ACCEPTED_STATUSES or budgets.objective == "weighted":
        return first.point, first.status, first.solve_s
    reached = profile.replay(system, first.point)
    loose = 1.0 + LEXICOGRAPHIC_RTOL
    if budgets.objective == "delay":  # the least energy that keeps the delay reached
        second = solve(
            terms, system, objective="energy", delay_s=reached["delay_s"] * loose, energy_j=budgets.energy_j,
            scale=scale, parts=parts,
        )  # fmt: skip
    else:  # the shortest delay that keeps the energy reached
        second = solve(
            terms, system, objective="delay", energy_j=reached["energy_j"] * loose, delay_s=budgets.delay_s,
            scale=scale, parts=parts,
        )  # fmt: skip
    if second.status not in ACCEPTED_STATUSES:
        return first.point, first.status, first.solve_s + second.solve_s
    return second.point, second.status, first.solve_s + second.solve_s


def _check_budgets(budgets: Budgets, terms: Terms, full: dict[str, Any]) -> None:
    """ConfigError naming the smallest feasible budgets when ``budgets`` cannot be met by any setting."""
    problems = []
    if budgets.objective == "delay" and budgets.energy_j is None:
        problems.append("plan.objective delay needs plan.round_energy_j (the per-round energy budget)")
    if budgets.objective == "energy" and budgets.delay_s is None:
        problems.append("plan.objective energy needs plan.round_delay_s (the per-round delay budget)")
    floor = terms.min_energy_j()
    if budgets.energy_j is not None and budgets.energy_j <= floor:
        problems.append(
            f"plan.round_energy_j={budgets.energy_j:.6g} J is at or below the least energy any clocks and "
            f"powers can reach, {floor:.6g} J (accelerators, wired links and each radio's Shannon floor); "
            f"give more than {floor:.6g} J (full speed costs {full['energy_j']:.6g} J)"
        )
    if budgets.delay_s is not None and budgets.delay_s < full["delay_s"] * (1 - FEASIBILITY_RTOL):
        problems.append(
            f"plan.round_delay_s={budgets.delay_s:.6g} s is below the round's delay at full clock and "
            f"power, {full['delay_s']:.6g} s; give at least {full['delay_s']:.6g} s"
        )
    if problems:
        raise ConfigError(
            "infeasible plan:\n  - " + "\n  - ".join(problems),
            hint="raise the budgets (plan.round_energy_j, plan.round_delay_s) or change plan.objective",
        )


def settings_summary(system: SystemModel, point: OperatingPoint) -> dict[str, Any]:
    """Per tier: the clocks (GHz) and transmit powers (W) chosen, as min / mean / max over planned nodes."""
    topo = system.topology
    tiers = np.array([n.tier.value for n in topo.nodes])
    out: dict[str, Any] = {}
    for tier in dict.fromkeys(tiers.tolist()):
        mine = tiers == tier
        entry: dict[str, Any] = {}
        for label, values, unit in (
            ("clock_ghz", point.freq_hz, 1e-9),
            ("uplink_power_w", point.uplink_power_w, 1.0),
            ("downlink_power_w", point.downlink_power_w, 1.0),
        ):
            v = values[mine & np.isfinite(values)] * unit
            if v.size:
                entry[label] = {
                    "min": float(v.min()),
                    "mean": float(v.mean()),
                    "max": float(v.max()),
                    "nodes": int(v.size),
                }
        if entry:
            out[tier] = entry
    return out
