"""Edge association: which edge server each device attaches to, chosen with the round's clocks and powers.

HFEL's search (Luo et al., IEEE TWC 2020): start every device at its nearest edge server, then try moving one
device to another edge, or swapping it with the device there nearest to its own edge (loads unchanged),
keeping the change when the round's planned objective falls, until no move helps or
the evaluation budget is spent; devices are tried farthest link first (the likeliest stragglers). The same
moves also start from the config's own tree (half the budget each), and the better of the two searches is
kept, so the association never plans worse than the config. Each candidate is priced by re-targeting the
recorded round: a
transfer between a device and its old edge now runs between the device and its new one (over that link's
distance, with the new server's bandwidth shared equally by its devices); work on the servers stays where
it was recorded. That makes the search cheap and approximate: the caller re-records the round under the
association it keeps and plans that exactly (the predicted numbers are then the executed ones). Needs
``channel.edge_distances: per_pair`` (otherwise every edge is equally far and only load would matter).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgelearn.errors import ConfigError
from edgelearn.planning.convex import ACCEPTED_STATUSES
from edgelearn.planning.tree.inner import price, solve
from edgelearn.planning.tree.plan import Budgets
from edgelearn.planning.tree.profile import RoundProfile
from edgelearn.system import SystemModel, Topology
from edgelearn.system.topology import Tier


@dataclass(frozen=True)
class Association:
    """The search's answer: a parent per moved device (node id -> edge server id) and its record."""

    moves: dict[int, int]
    record: dict[str, Any]


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


def associate(
    system: SystemModel, profile: RoundProfile, budgets: Budgets, *, max_evaluations: int
) -> Association:
    """Nearest-edge start, then HFEL single-device moves while the objective falls (module docstring)."""
    topo, channel = system.topology, system.channel
    if channel.spec.edge_distances != "per_pair":
        raise ConfigError(
            "plan.associate needs channel.edge_distances: per_pair (each device's own distance to every edge "
            "server); with per_node every edge server is equally far",
            hint="set channel.edge_distances: per_pair",
        )
    edges = [e for e in topo.edges if topo.parent(e) == 0]  # edge servers directly under the cloud
    devices = [d for d in topo.devices if topo.tier(topo.parent(d)) is Tier.EDGE]
    if len(edges) < 2 or not devices:
        return Association({}, {"moves": 0, "evaluations": 0, "reason": "fewer than two edge servers"})
    started = time.perf_counter()
    home = {d: topo.parent(d) for d in devices}
    dist = np.array([[channel.distance_to(d, e) for e in edges] for d in devices])
    current = {d: edges[int(np.argmin(dist[i]))] for i, d in enumerate(devices)}
    evaluations = 0

    def cost(assoc: dict[int, int]) -> float:
        nonlocal evaluations
        evaluations += 1
        tree = Topology.from_dict(topo.to_dict())
        moved = {d: (home[d], e) for d, e in assoc.items() if e != home[d]}
        for d, (_, e) in moved.items():
            tree.reparent(d, e)
        view = SystemModel(tree, system.profiles, channel.clone(topology=tree))
        candidate = retarget(profile, moved)
        terms = price(candidate.graph(), view, profile.round)
        full = candidate.replay(view, None)
        scale = (full["delay_s"], full["energy_j"])
        kw = {
            "energy_j": budgets.energy_j,
            "delay_s": budgets.delay_s,
            "weight_j_per_s": budgets.weight_j_per_s,
        }
        found = solve(terms, view, objective=budgets.objective, scale=scale, **kw)
        if found.status not in ACCEPTED_STATUSES:
            return float("inf")
        result = candidate.replay(view, found.point)
        if not budgets.feasible(result["energy_j"], result["delay_s"]):
            return float("inf")
        return budgets.value(result["energy_j"], result["delay_s"])

    def search(start: dict[int, int], value: float, budget: int) -> tuple[dict[int, int], float]:
        """HFEL single-device moves from ``start`` while one lowers the objective (first improvement)."""
        stop = evaluations + budget
        improved = True
        while improved and evaluations < stop:
            improved = False
            order = sorted(devices, key=lambda d: -channel.distance_to(d, start[d]))
            for d in order:
                for e in edges:
                    if e == start[d] or evaluations >= stop:
                        continue
                    here = start[d]
                    # the partner of a swap: the device at e that is nearest to d's edge
                    there = [x for x in devices if start[x] == e]
                    trials = [{**start, d: e}]
                    if there:
                        x = min(there, key=lambda x: channel.distance_to(x, here))
                        trials.append({**start, d: e, x: here})
                    for trial in trials:
                        if evaluations >= stop:
                            break
                        candidate = cost(trial)
                        if candidate < value * (1 - MOVE_RTOL):
                            start, value, improved = trial, candidate, True
                            break
                    if improved:
                        break
        return start, value

    configured = cost(dict(home))
    nearest_value = cost(dict(current))
    # from the nearest edges (HFEL's start) and from the config's tree, half the evaluations each
    half = max(1, (max_evaluations - evaluations) // 2)
    found = [search(dict(current), nearest_value, half), search(dict(home), configured, half)]
    current, best = min(found, key=lambda f: f[1])
    start = nearest_value
    moves = {d: e for d, e in current.items() if e != home[d]}
    return Association(
        moves,
        {
            "configured_objective": configured,
            "nearest_edge_objective": start,
            "objective": best,
            "moved_devices": len(moves),
            "evaluations": evaluations,
            "search_s": time.perf_counter() - started,
            "approximate": "priced on the re-targeted round; the kept association is re-recorded and planned",
        },
    )


MOVE_RTOL = 1e-6
"""A move is kept only if it lowers the objective by more than this (relative): no cycling on float ties."""
