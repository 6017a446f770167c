"""Edge association (planning/tree/association.py): per-pair edge distances, the re-targeted round, the
HFEL search never planning worse than the config's tree or the nearest-edge start, and a run executing the
kept association exactly as planned."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgelearn.errors import ConfigError
from edgelearn.planning.tree.association import _Search, associate, associated_plan, moved_view, retarget
from edgelearn.planning.tree.plan import ASSOCIATION_SCHEMES, LEXICOGRAPHIC_RTOL, Budgets, plan_round
from edgelearn.planning.tree.surrogate import EdgeSurrogate
from edgelearn.planning.tree.synthetic import hierarchical_round
from edgelearn.run_config import load_config
from edgelearn.runner import run
from edgelearn.seeding import Seeds
from edgelearn.system import ChannelSpec, SystemModel, Topology

ROOT = Path(__file__).resolve().parents[1]
WIDE = (10.0, 1000.0)
"""Device-edge distances spread wide, so which edge a device hangs under matters."""
ROUND = {"model_bytes": 4e5, "device_flops": 1e8, "edge_flops": 1e6, "cloud_flops": 1e6}


def _system(edges: int, per_edge: int, seed: int, kind: str = "per_pair") -> SystemModel:
    spec = ChannelSpec(distance_m=WIDE, edge_distances=kind)  # type: ignore[arg-type]
    return SystemModel.build(Topology.hierarchical(edges, per_edge), None, spec, Seeds(seed))


def test_per_pair_distances_keep_the_configured_tree_and_draw_the_others_once() -> None:
    pair, node = _system(3, 4, 7), _system(3, 4, 7, "per_node")
    devices = pair.topology.devices
    assert np.array_equal(pair.channel.distance(devices), node.channel.distance(devices))
    d, other = devices[0], pair.topology.edges[1]
    assert pair.topology.parent(d) != other
    away = pair.channel.distance_to(d, other)
    assert away == _system(3, 4, 7).channel.distance_to(d, other)  # seeded per (device, edge)
    assert WIDE[0] <= away <= WIDE[1] and away != node.channel.distance_to(d, other)
    pair.reparent(d, other)
    assert pair.channel.distance(d) == away


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 1000), moves=st.integers(1, 4))
def test_a_retargeted_round_costs_what_the_moved_tree_records(seed: int, moves: int) -> None:
    """For a round whose server work does not depend on membership, re-targeting is exact."""
    rng = np.random.default_rng(seed)
    before = _system(2, 4, seed)
    profile = hierarchical_round(before, **ROUND)
    devices = rng.choice(before.topology.devices, size=moves, replace=False).tolist()
    edges = before.topology.edges
    moved = {}
    for d in devices:
        old = before.topology.parent(d)
        moved[d] = (old, edges[1] if old == edges[0] else edges[0])
    after = _system(2, 4, seed)
    for d, (_, new) in moved.items():
        after.reparent(d, new)
    direct = hierarchical_round(after, **ROUND, round_=2)
    again = retarget(profile, moved)
    assert again.replay(after, None)["energy_j"] == pytest.approx(direct.replay(after, None)["energy_j"])
    assert again.replay(after, None)["delay_s"] == pytest.approx(direct.replay(after, None)["delay_s"])


@pytest.mark.parametrize(("seed", "objective"), [(0, "weighted"), (2, "weighted"), (0, "delay")])
def test_the_search_is_never_worse_than_the_config_or_the_nearest_edges(seed: int, objective: str) -> None:
    system = _system(2, 4, seed)
    profile = hierarchical_round(system, **ROUND)
    full = profile.replay(system, None)
    budgets = (
        Budgets("weighted") if objective == "weighted" else Budgets("delay", energy_j=0.5 * full["energy_j"])
    )
    found = associate(system, profile, budgets, max_evaluations=10_000)
    record = found.record
    assert record["objective"] <= record["configured_objective"]
    assert record["objective"] <= record["nearest_edge_objective"]
    assert record["objective"] < record["configured_objective"]  # these seeds have a better association
    assert all(e in system.topology.edges for e in found.moves.values())


def test_association_needs_per_pair_distances() -> None:
    system = _system(2, 2, 0, "per_node")
    profile = hierarchical_round(system, **ROUND)
    with pytest.raises(ConfigError, match="edge_distances: per_pair"):
        associate(system, profile, Budgets("weighted"), max_evaluations=10)


def test_a_run_executes_the_planned_association_exactly(tmp_path: Path) -> None:
    cfg = load_config(
        ROOT / "configs" / "plan" / "hierfavg-digits.yaml",
        [
            "topology.edges=2", "topology.devices_per_edge=4", "algorithm.rounds=1", "output.plots=false",
            "channel.edge_distances=per_pair", "channel.distance_m=[10, 1000]", "plan.associate=true",
            "plan.association_evaluations=60",
        ],
    )  # fmt: skip
    plan = run(cfg, tmp_path / "run")["plan"]
    association = plan["association"]
    assert association["objective"] <= association["configured_objective"]
    assert plan["measured"]["energy_j"] == pytest.approx(plan["energy_j"], rel=1e-6)
    assert plan["measured"]["delay_s"] == pytest.approx(plan["delay_s"], rel=1e-6)


# ----------------------------------------------------------------------- the per-edge surrogate and search
SURROGATE_RTOL = 1e-9
"""Surrogate vs replay: the same cost formulas on the same numbers; only the order of the energy sum
differs (float round-off, ~1e-15 relative)."""


def _moved(system: SystemModel, assign: np.ndarray, devices: np.ndarray, edges: np.ndarray) -> dict:
    home = system.topology.parent_array
    return {int(d): (int(home[d]), int(edges[a])) for d, a in zip(devices, assign) if edges[a] != home[d]}


@settings(max_examples=10, deadline=None)
@given(
    edges=st.integers(2, 4),
    per_edge=st.integers(1, 5),
    seed=st.integers(0, 10_000),
    planned=st.booleans(),
)
def test_the_per_edge_surrogate_is_the_replay_of_the_moved_round(
    edges: int, per_edge: int, seed: int, planned: bool
) -> None:
    """At a fixed point with equal shares, the surrogate re-pricing only the touched edges equals replaying
    the re-targeted round on the re-parented tree (the search's cheap pricing is exact there)."""
    rng = np.random.default_rng(seed)
    system = _system(edges, per_edge, seed)
    profile = hierarchical_round(system, **ROUND)
    topo = system.topology
    ids = np.array(sorted(topo.edges))
    devices = np.array(topo.devices)
    dist = np.array([[system.channel.distance_to(int(d), int(e)) for e in ids] for d in devices])
    point = None
    if planned:  # a planned point: clocks and powers below their limits
        full = profile.replay(system, None)
        plan = plan_round(system, profile, Budgets("delay", energy_j=0.6 * full["energy_j"]), baselines=False)
        point = replace(plan.points["uniform_bandwidth"], bandwidth_hz=None)
    surrogate = EdgeSurrogate(system, profile, point, devices, ids, dist)
    start = rng.integers(0, edges, devices.size)
    surrogate.anchor(start)
    trial = start.copy()
    i = int(rng.integers(devices.size))
    trial[i] = (trial[i] + 1) % edges  # a move: only its two edges are re-priced
    touched = (int(start[i]), int(trial[i]))
    for assign, only in ((start, None), (trial, touched)):
        energy, delay = surrogate.cost(assign, only)
        moved = _moved(system, assign, devices, ids)
        view = moved_view(system, {d: new for d, (_, new) in moved.items()})
        replayed = retarget(profile, moved).replay(view, point)
        assert energy == pytest.approx(replayed["energy_j"], rel=SURROGATE_RTOL)
        assert delay == pytest.approx(replayed["delay_s"], rel=SURROGATE_RTOL)


def _crowded(system: SystemModel) -> None:
    """Distances (test-only: written into the channel's per-pair table) under which the nearest edge puts
    30 of 100 devices on edge server 0 (100 m) and none on servers 1 and 2 (120 m), and the config's tree
    puts most devices 900 m away: the nearest edge makes server 0 the straggler."""
    channel, topo = system.channel, system.topology
    edges = sorted(topo.edges)
    for i, d in enumerate(sorted(topo.devices)):
        home = topo.parent(d)
        for j, e in enumerate(edges):
            if i < 30:
                metres = 100.0 if j == 0 else (120.0 if j == 1 + i % 2 else 900.0)
            else:
                metres = 150.0 if j == 3 + i % 7 else 900.0
            if e == home:
                channel._dist_edge[d] = metres
            else:
                channel._pair[(d, e)] = metres
    channel.refresh()


def test_the_search_relieves_a_crowded_nearest_edge() -> None:
    system = _system(10, 10, 0)
    _crowded(system)
    profile = hierarchical_round(system, **ROUND)
    # the surrogate search alone relieves it (no exact polish: 100 devices plan in ~50 ms each)
    found = associate(system, profile, Budgets("weighted"), max_evaluations=100_000, polish_solves=0)
    record = found.record
    edges = sorted(system.topology.edges)
    nearest = [found.nearest.get(d, system.topology.parent(d)) for d in system.topology.devices]
    assert nearest.count(edges[0]) == 30 and nearest.count(edges[1]) == nearest.count(edges[2]) == 0
    assert record["objective"] < 0.8 * record["nearest_edge_objective"]  # measured: 43 % lower
    kept = [found.moves.get(d, system.topology.parent(d)) for d in system.topology.devices]
    assert kept.count(edges[1]) + kept.count(edges[2]) > 0  # moved to the slightly farther, emptier servers


def _recorder(edges: int, per_edge: int, seed: int):  # noqa: ANN202 - a Recorder
    def record(moves: dict[int, int]) -> tuple[SystemModel, object]:
        system = _system(edges, per_edge, seed)
        for d, e in moves.items():
            system.reparent(d, e)
        return system, hierarchical_round(system, **ROUND)

    return record


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 1000), objective=st.sampled_from(["delay", "weighted"]))
def test_the_plan_is_no_worse_than_each_association_baseline(seed: int, objective: str) -> None:
    system, profile = _recorder(2, 3, seed)({})
    full = profile.replay(system, None)
    budgets = (
        Budgets("delay", energy_j=0.5 * full["energy_j"]) if objective == "delay" else Budgets("weighted")
    )
    plan = associated_plan(
        system, profile, budgets, record=_recorder(2, 3, seed), max_evaluations=10_000, polish_solves=8
    )
    planned = plan.schemes["planned"]["objective"]
    for name in ASSOCIATION_SCHEMES:
        row = plan.schemes[name]
        if row["feasible"]:
            # nearest_edge / allocation_only: the plan is the best of them (<=, exactly); association_only is
            # the kept tree at full speed, which the plan beats up to its lexicographic pass (test_plan_tree)
            assert planned <= row["objective"] * (1 + 2 * LEXICOGRAPHIC_RTOL), name
    # executing a baseline re-parents as that baseline planned it
    assert plan.executing("allocation_only", {}).association == {}
    assert plan.executing("nearest_edge", {}).association == plan.associations["nearest_edge"]


BRUTE_FORCE_RTOL = 0.01
"""The issue's bound for the search against brute force (here they agree exactly)."""


@pytest.mark.parametrize("objective", ["weighted", "delay", "energy"])
def test_the_search_agrees_with_brute_force_on_a_small_tree(objective: str) -> None:
    """2 edges x 3 devices, seed 1 (where the surrogate search alone stops 8-11 % short and the exact polish
    closes the gap): every one of the 2^6 associations planned exactly."""
    system = _system(2, 3, 1)
    profile = hierarchical_round(system, **ROUND)
    full = profile.replay(system, None)
    budgets = {
        "weighted": Budgets("weighted"),
        "delay": Budgets("delay", energy_j=0.5 * full["energy_j"]),
        "energy": Budgets("energy", delay_s=1.2 * full["delay_s"]),
    }[objective]
    found = associate(system, profile, budgets, max_evaluations=10_000)
    search = _Search(system, profile, budgets)
    best = min(search.exact(np.array(a))[0] for a in itertools.product(range(2), repeat=6))
    assert found.record["objective"] <= best * (1 + BRUTE_FORCE_RTOL)
    assert found.record["objective"] < found.record["nearest_edge_objective"]  # seed 1: nearest is not best
