"""Edge association: which edge server each device attaches to, chosen with the round's clocks and powers.

HFEL (Luo et al., IEEE TWC 2020) starts every device at its nearest edge server and then tries moving one
device to another edge, or exchanging it with a device there, keeping a change when the round's cost falls;
what makes that tractable is that the cost decomposes per edge server, so a move re-prices two edges, not
the tree. The search here follows it in two nested loops:

* inner (cheap): moves and swaps priced by :class:`~edgelearn.planning.tree.surrogate.EdgeSurrogate`, the
  recorded round replayed at the current plan's clocks and powers with equal FDMA shares, each candidate
  re-pricing only the links of the two edges it touches (~0.2 ms at 1,000 devices, no convex solve). A device
  may only go to one of its :data:`NEAREST_EDGES` nearest edge servers (HFEL's candidate pruning: a far
  server costs more air time than its spare bandwidth buys). Devices are tried farthest link first (the
  likeliest stragglers); a swap partner is the device on the target edge nearest to the mover's edge. A
  change is kept when it lowers the objective's Lagrangian at that point: the objective plus the other
  measure at the shadow price of its budget (:meth:`_Search.price`, the convex program's dual), energy or
  time a re-plan turns into a better objective. For ``delay`` the same moves are also priced on the
  full-speed round (what a loose energy budget plans: the dual is then zero, and at the plan's point the
  critical links' gains from more bandwidth do not show);
* outer (exact): the association the inner loop settles on is planned with the full planner
  (:func:`~edgelearn.planning.tree.plan.plan_round`, clocks, powers and bandwidth shares) and kept only if its
  planned objective is lower; the inner loop then restarts at the new plan's point, for at most
  :data:`EXACT_ROUNDS` rounds;
* polish (exact): the same moves and swaps, each priced by a full plan, first improvement kept, for a budget
  of plans that shrinks as the tree grows (:func:`default_polish`, ``plan.association_polish``): the
  surrogate ranks moves by a bound, and on small trees one misranked move separated it from the optimum.

The surrogate is exact for the round at a fixed point (tested); it is a bound, not the optimum, of what a
re-planned round costs, which is why every kept association is re-solved. The search starts from the better
(planned) of the nearest-edge association and the config's tree, so it never plans worse than either. The
candidates are priced on the re-targeted round (:func:`retarget`: transfers follow the device, server work
stays where it was recorded); :func:`associated_plan` then records the round again on each tree it reports
(the kept one and the baselines), so its numbers are what a run executes. Needs
``channel.edge_distances: per_pair`` (otherwise every edge is equally far and only load would matter).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgelearn.errors import ConfigError
from edgelearn.planning.convex import ACCEPTED_STATUSES
from edgelearn.planning.tree.inner import price as price_terms
from edgelearn.planning.tree.inner import solve
from edgelearn.planning.tree.plan import Budgets, TreePlan, plan_round
from edgelearn.planning.tree.profile import RoundProfile
from edgelearn.planning.tree.surrogate import EdgeSurrogate
from edgelearn.system import SystemModel, Topology
from edgelearn.system.topology import TIER_CODE, Tier

NEAREST_EDGES = 3
"""A device may move only to one of this many nearest edge servers (HFEL's candidate pruning)."""
EXACT_ROUNDS = 3
"""Most exact re-plans of the inner search's answer (each restarts it at the new plan's point)."""
MAX_PASSES = 50
"""Most passes of the inner search over all devices (it stops earlier once a pass changes nothing)."""
POLISH_SOLVES = 64
"""Most exact plans of each start's closing polish (:meth:`_Search.polish`) on small trees."""
POLISH_DEVICE_PLANS = 1000
"""The polish's default budget in devices x plans: :data:`POLISH_SOLVES` plans up to ~16 devices, 10 at 100,
1 at 1,000 (a plan's time grows with the devices; on 100 devices the surrogate search alone already came
within 0.03 % of the polished answer, while on 2 x 3 trees the polish closed 8-11 % gaps to brute force)."""


def default_polish(devices: int) -> int:
    """``plan.association_polish: null``: the polish budget for a tree of ``devices`` devices."""
    return int(min(POLISH_SOLVES, POLISH_DEVICE_PLANS // max(1, devices)))


MOVE_RTOL = 1e-6
"""A change is kept only if it lowers a measure by more than this (relative): no cycling on float ties."""


@dataclass(frozen=True)
class Association:
    """The search's answer: a parent per moved device (node id -> edge server id), the nearest-edge start's
    moves, and its record."""

    moves: dict[int, int]
    record: dict[str, Any]
    nearest: dict[int, int]


def retarget(profile: RoundProfile, parent: dict[int, tuple[int, int]]) -> RoundProfile:
    """``profile`` with each device's transfers to and from its old parent moved to its new one
    (``parent[device] = (old, new)``)."""
    if not parent:
        return profile
    batches = []
    for b in profile.batches:
        if b.kind == "transmit":
            src, dst = b.src.copy(), b.dst.copy()
            for i, (s, d) in enumerate(zip(b.src.tolist(), b.dst.tolist())):
                if s in parent and d == parent[s][0]:
                    dst[i] = parent[s][1]
                elif d in parent and s == parent[d][0]:
                    src[i] = parent[d][1]
            b = replace(b, src=src, dst=dst)
        batches.append(b)
    return replace(profile, batches=tuple(batches))


def moved_view(system: SystemModel, moves: dict[int, int]) -> SystemModel:
    """A copy of ``system``'s tree and channel with the devices in ``moves`` re-parented (hardware shared)."""
    tree = Topology.from_dict(system.topology.to_dict())
    for d, e in moves.items():
        tree.reparent(d, e)
    return SystemModel(tree, system.profiles, system.channel.clone(topology=tree))


class _Search:
    """The two nested loops of the module docstring over one recorded round."""

    def __init__(self, system: SystemModel, profile: RoundProfile, budgets: Budgets) -> None:
        topo, channel = system.topology, system.channel
        self.system, self.profile, self.budgets = system, profile, budgets
        self.edges = np.array(sorted(e for e in topo.edges if topo.parent(e) == 0), dtype=np.int64)
        edge_set = set(self.edges.tolist())
        self.devices = np.array([d for d in topo.devices if topo.parent(d) in edge_set], dtype=np.int64)
        self.dist = np.array(
            [[channel.distance_to(int(d), int(e)) for e in self.edges] for d in self.devices]
        )
        self.home = np.searchsorted(self.edges, topo.parent_array[self.devices])
        k = min(NEAREST_EDGES, self.edges.size)
        self.candidates = np.argsort(self.dist, axis=1, kind="stable")[:, :k]
        self.evaluations = self.exact_solves = 0
        self.surrogate_s = self.exact_s = 0.0

    def moves(self, assign: np.ndarray) -> dict[int, int]:
        """Node id -> edge id of every device ``assign`` puts elsewhere than the recorded tree."""
        moved = np.flatnonzero(assign != self.home)
        return {int(self.devices[i]): int(self.edges[assign[i]]) for i in moved}

    def moved(self, assign: np.ndarray) -> tuple[SystemModel, RoundProfile]:
        """``assign``'s tree (a copy of the system re-parented) and the recorded round re-targeted to it."""
        moves = self.moves(assign)
        home = self.system.topology.parent_array
        retargeted = retarget(self.profile, {d: (int(home[d]), e) for d, e in moves.items()})
        return moved_view(self.system, moves), retargeted

    def exact(self, assign: np.ndarray) -> tuple[float, TreePlan | None]:
        """The planned objective of ``assign`` on the re-targeted round (inf where no plan meets the budgets)
        and its plan."""
        started = time.perf_counter()
        self.exact_solves += 1
        view, candidate = self.moved(assign)
        try:
            plan = plan_round(view, candidate, self.budgets, baselines=False)
        except ConfigError:
            plan = None
        self.exact_s += time.perf_counter() - started
        if plan is None or not plan.feasible:
            return float("inf"), plan
        return float(plan.schemes["planned"]["objective"]), plan

    def surrogate(self, assign: np.ndarray, plan: TreePlan | None) -> EdgeSurrogate:
        """The surrogate at ``plan``'s clocks and powers (full speed without one), on ``assign``'s tree."""
        view, candidate = self.moved(assign)
        point = None if plan is None else plan.points["uniform_bandwidth"]
        if point is not None:  # servers at full clock: their work is fixed, and a plan's slack is no clue
            servers = np.asarray(self.system.topology.tier_codes) != TIER_CODE[Tier.DEVICE]
            point = replace(point, freq_hz=np.where(servers, np.nan, point.freq_hz))
        return EdgeSurrogate(view, candidate, point, self.devices, self.edges, self.dist, hold="time")

    def price(self, assign: np.ndarray) -> float:
        """What one unit of the measure the objective does not count is worth in the objective's unit on
        ``assign``'s tree: the shadow price of its budget in the convex program (s per J for ``delay``, J per
        s for ``energy``; 0 for ``weighted``, which counts both already, or where the program has none). Moves
        are then scored by the objective's Lagrangian, the cost HFEL decomposes per edge server."""
        b = self.budgets
        if b.objective == "weighted":
            return 0.0
        started = time.perf_counter()
        view, candidate = self.moved(assign)
        full = candidate.replay(view, None)
        found = solve(
            price_terms(candidate.graph(), view, candidate.round),
            view,
            objective=b.objective,
            energy_j=b.energy_j,
            delay_s=b.delay_s,
            scale=(full["delay_s"], full["energy_j"]),
        )
        self.exact_s += time.perf_counter() - started
        if found.status not in ACCEPTED_STATUSES or found.budget_price is None:
            return 0.0
        return max(0.0, found.budget_price)

    def _move_and_swap(self, assign: np.ndarray, i: int, e: int) -> list[np.ndarray]:
        """Device ``i`` moved to edge ``e``, and swapped with the device at ``e`` nearest to ``i``'s edge
        (among those that may go there; loads unchanged)."""
        a = int(assign[i])
        move = assign.copy()
        move[i] = e
        trials = [move]
        there = np.flatnonzero(assign == e)
        there = there[(self.candidates[there] == a).any(axis=1)]  # may go to a
        if there.size:
            swap = move.copy()
            swap[there[np.argmin(self.dist[there, a])]] = a
            trials.append(swap)
        return trials

    def polish(self, assign: np.ndarray, value: float, limit: int) -> tuple[np.ndarray, float]:
        """HFEL's moves and swaps to each device's nearest edges priced exactly (a full plan each), farthest
        link first, first improvement kept, at most ``limit`` plans: the surrogate ranks moves by
        a bound, and one move it misranks can stand between its answer and a better association."""
        solves = 0
        improved = True
        while improved and solves < limit:
            improved = False
            rows = np.arange(self.devices.size)
            for i in np.argsort(-self.dist[rows, assign], kind="stable").tolist():
                for e in self.candidates[i].tolist():
                    if e == assign[i] or solves >= limit:
                        continue
                    for trial in self._move_and_swap(assign, i, e):
                        if solves >= limit:
                            break
                        solves += 1
                        trial_value, _ = self.exact(trial)
                        if trial_value < value * (1 - MOVE_RTOL):
                            assign, value, improved = trial, trial_value, True
                            break
                    if improved:
                        break
                if improved:
                    break
        return assign, value

    def score(self, energy_j: float, delay_s: float, price: float) -> float:
        """The objective plus ``price`` times the other measure (:meth:`price`)."""
        other = {"delay": energy_j, "energy": delay_s}.get(self.budgets.objective, 0.0)
        return self.budgets.value(energy_j, delay_s) + price * other

    def local(self, sur: EdgeSurrogate, assign: np.ndarray, limit: int, price: float) -> np.ndarray:
        """HFEL moves and swaps priced by ``sur`` (:meth:`score` at ``price``) from ``assign`` until a pass
        changes nothing."""
        started = time.perf_counter()
        assign = assign.copy()
        sur.anchor(assign)
        current = self.score(*sur.cost(assign), price)
        rows = np.arange(self.devices.size)
        for _ in range(MAX_PASSES):
            changed = False
            for i in np.argsort(-self.dist[rows, assign], kind="stable").tolist():
                a = int(assign[i])
                for e in self.candidates[i].tolist():
                    if e == a or self.evaluations >= limit:
                        continue
                    for trial in self._move_and_swap(assign, i, e):
                        self.evaluations += 1
                        score = self.score(*sur.cost(trial, (a, e)), price)
                        if score < current * (1 - MOVE_RTOL):
                            assign, current, changed = trial, score, True
                            sur.anchor(assign)
                            break
                    if assign[i] != a:
                        break
            if not changed or self.evaluations >= limit:
                break
        self.surrogate_s += time.perf_counter() - started
        return assign


def associate(
    system: SystemModel,
    profile: RoundProfile,
    budgets: Budgets,
    *,
    max_evaluations: int,
    polish_solves: int | None = None,
) -> Association:
    """The association HFEL's search keeps (module docstring), at most ``max_evaluations`` surrogate
    evaluations and ``polish_solves`` exact plans in each start's closing polish (None:
    :func:`default_polish`); ConfigError without per-pair edge distances."""
    if system.channel.spec.edge_distances != "per_pair":
        raise ConfigError(
            "plan.associate needs channel.edge_distances: per_pair (each device's own distance to every edge "
            "server); with per_node every edge server is equally far",
            hint="set channel.edge_distances: per_pair",
        )
    started = time.perf_counter()
    search = _Search(system, profile, budgets)
    if search.edges.size < 2 or not search.devices.size:
        return Association({}, {"moved_devices": 0, "reason": "fewer than two edge servers"}, {})
    nearest = np.argmin(search.dist, axis=1)
    configured, configured_plan = search.exact(search.home)
    if np.array_equal(nearest, search.home):
        start_value, start_plan = configured, configured_plan
    else:
        start_value, start_plan = search.exact(nearest)
    # HFEL's start (the nearest edges), then the config's tree, half the evaluations each: the better
    # answer is kept, never worse than either start
    starts = [(nearest, start_value, start_plan)]
    if not np.array_equal(nearest, search.home):
        starts.append((search.home, configured, configured_plan))
    answers = []
    for k, (current, value, plan) in enumerate(starts):
        limit = search.evaluations + (max_evaluations - search.evaluations) // (len(starts) - k)
        for _ in range(EXACT_ROUNDS):
            if search.evaluations >= limit:
                break
            proposals = [search.local(search.surrogate(current, plan), current, limit, search.price(current))]
            if budgets.objective == "delay":  # the full-speed round: what a loose energy budget plans
                proposals.append(search.local(search.surrogate(current, None), current, limit, 0.0))
            tried = [(*search.exact(p), p) for p in _distinct(proposals, current)]
            if not tried:
                break
            found_value, found_plan, found = min(tried, key=lambda x: x[0])
            if not found_value < value * (1 - MOVE_RTOL):
                break
            current, value, plan = found, found_value, found_plan
        polish = default_polish(search.devices.size) if polish_solves is None else polish_solves
        current, value = search.polish(current, value, polish)
        answers.append((value, k, current))
    value, _, current = min(answers, key=lambda a: (a[0], a[1]))
    moves = search.moves(current)
    return Association(
        moves,
        {
            "configured_objective": configured,
            "nearest_edge_objective": start_value,
            "objective": value,
            "moved_devices": len(moves),
            "evaluations": search.evaluations,
            "exact_solves": search.exact_solves,
            "nearest_edges": int(search.candidates.shape[1]),
            "search_s": time.perf_counter() - started,
            "surrogate_s": search.surrogate_s,
            "exact_s": search.exact_s,
        },
        search.moves(nearest),
    )


def _distinct(proposals: list[np.ndarray], current: np.ndarray) -> list[np.ndarray]:
    """The proposals that differ from ``current`` and from each other, in order."""
    out: list[np.ndarray] = []
    for p in proposals:
        if not np.array_equal(p, current) and not any(np.array_equal(p, q) for q in out):
            out.append(p)
    return out


Recorder = Callable[[dict[int, int]], tuple[SystemModel, RoundProfile]]
"""Records the round again with the given devices re-parented (node id -> edge id): its system and profile."""


def associated_plan(
    system: SystemModel,
    profile: RoundProfile,
    budgets: Budgets,
    *,
    record: Recorder,
    max_evaluations: int,
    polish_solves: int | None = None,
    mid_run: bool = False,
) -> TreePlan:
    """The plan with the association :func:`associate` keeps, and the association baselines as schemes
    (plan.py, ``ASSOCIATION_SCHEMES``): ``nearest_edge`` and ``allocation_only`` (the config's tree), each
    planned in full on a round ``record``-ed on its own tree, and ``association_only`` (the kept tree at full
    speed and equal shares). Of the kept, the nearest-edge and the config's tree, the one whose recorded round
    plans best is the plan, so the plan is never worse than either baseline on its objective, exactly.
    ``mid_run``: the devices move during the run, so the config's tree's plan (already made here) comes back
    as :attr:`TreePlan.before` when the kept association moves any."""
    found = associate(system, profile, budgets, max_evaluations=max_evaluations, polish_solves=polish_solves)
    cache: dict[frozenset[tuple[int, int]], TreePlan | None] = {}

    def planned(moves: dict[int, int]) -> TreePlan | None:
        key = frozenset(moves.items())
        if key not in cache:
            if not moves:
                cache[key] = plan_round(
                    system, profile, budgets
                )  # the config's tree: its errors are the run's
            else:
                view, again = record(moves)
                try:
                    cache[key] = plan_round(view, again, budgets)
                except ConfigError:
                    cache[key] = None
        return cache[key]

    trees = {"kept": found.moves, "nearest_edge": found.nearest, "configured": {}}
    plans = {name: planned(moves) for name, moves in trees.items()}

    def rank(name: str) -> tuple[bool, float]:
        p = plans[name]
        return (True, 0.0) if p is None else (not p.feasible, float(p.schemes["planned"]["objective"]))

    chosen = min(trees, key=rank)  # ties: the kept association first
    best = plans[chosen]
    assert best is not None  # the config's tree plans (or plan_round raised)
    schemes, points = dict(best.schemes), dict(best.points)
    for scheme, name in (("nearest_edge", "nearest_edge"), ("allocation_only", "configured")):
        p = plans[name]
        if p is None:
            schemes[scheme] = {"objective": None, "energy_j": None, "delay_s": None, "feasible": False,
                               "status": "infeasible budgets on this tree"}  # fmt: skip
        else:
            schemes[scheme], points[scheme] = dict(p.schemes["planned"]), p.point
    schemes["association_only"], points["association_only"] = (
        dict(best.schemes["max_speed"]),
        best.points["max_speed"],
    )
    value = {n: (None if plans[n] is None else plans[n].schemes["planned"]["objective"]) for n in trees}
    record = {
        **found.record,
        "configured_objective": value["configured"],
        "nearest_edge_objective": value["nearest_edge"],
        "objective": best.schemes["planned"]["objective"],
        "kept": chosen,
        "search": {
            k: found.record.get(k) for k in ("configured_objective", "nearest_edge_objective", "objective")
        },
        "priced": "each tree's round recorded on that tree and planned in full",
    }
    return replace(
        best,
        schemes=schemes,
        points=points,
        association=dict(trees[chosen]),
        association_record=record,
        associations={"nearest_edge": dict(found.nearest), "allocation_only": {}},
        # the devices move mid-run: the config's tree runs at its own plan until then
        before=plans["configured"] if mid_run and trees[chosen] else None,
    )
