"""Edge association (planning/tree/association.py): per-pair edge distances, the re-targeted round, the
HFEL search never planning worse than the config's tree or the nearest-edge start, and a run executing the
kept association exactly as planned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgelearn.errors import ConfigError
from edgelearn.planning.tree.association import associate, retarget
from edgelearn.planning.tree.plan import Budgets
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


@pytest.mark.parametrize("seed", [0, 2])
def test_the_search_is_never_worse_than_the_config_or_the_nearest_edges(seed: int) -> None:
    system = _system(2, 4, seed)
    profile = hierarchical_round(system, **ROUND)
    full = profile.replay(system, None)
    found = associate(system, profile, Budgets("delay", energy_j=0.5 * full["energy_j"]), max_evaluations=100)
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
