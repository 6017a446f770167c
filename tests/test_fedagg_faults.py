"""FedAgg under faults: edge failover to the least-loaded live edge and failback, devices under the cloud when
no edge is left, dropout, lost uploads and stragglers, and checkpoints taken in the middle of an outage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tiny import FEDAGG_HOLDOUT, synthetic_context, tiny_fedagg

from edgelearn.algorithms.fedagg.algorithm import FedAgg
from edgelearn.algorithms.fedagg.bridge import logit_bytes
from edgelearn.algorithms.fedagg.bsbodp import DOWN, UP
from edgelearn.algorithms.fedagg.failover import PHASE_MIGRATE_DECODE, PHASE_MIGRATE_EMBED
from edgelearn.checkpoint import decode, encode
from edgelearn.system.faults import PHASE_LOST_UPLOAD, PHASE_STRAGGLER_TRAIN

# cloud 0; edge0 = 1 with dev0, dev1 = 2, 3; edge1 = 4 with dev2, dev3 = 5, 6
TWO_EDGES = ["topology.devices=null", "topology.edges=2", "topology.devices_per_edge=2"]
# cloud 0; edge0 = 1 (2, 3); edge1 = 4 (5, 6); edge2 = 7 (8, 9)
THREE_EDGES = ["topology.devices=null", "topology.edges=3", "topology.devices_per_edge=2"]


def outage(edge: str, start: int, end: int) -> str:
    """An override putting ``edge`` down from round ``start`` to ``end``."""
    return f"faults.edge_failures=[{{edge: {edge}, start_round: {start}, end_round: {end}}}]"


def make_algo(*overrides: str, **cfg: Any) -> FedAgg:
    """FedAgg with cheap heterogeneous models on tiny synthetic images (CPU, serial executor), initialised."""
    return tiny_fedagg(synthetic_context([FEDAGG_HOLDOUT, *overrides]), **{"rounds": 4, **cfg})


def phase_sum(algo: FedAgg, phase: str, column: str, round_: int) -> float:
    """Total of one ledger column over one phase's events of one round."""
    events = algo.ctx.system.ledger.events(round_)
    return float(events[column][events["phase"] == phase].sum())


def touched(algo: FedAgg, round_: int) -> set[int]:
    """Every node that computed, sent or received anything in ``round_``."""
    events = algo.ctx.system.ledger.event_dicts(round_)
    return {e["node"] for e in events} | {e["dst"] for e in events if e["kind"] == "transmit"}


def snapshot(algo: FedAgg, node: int) -> dict[str, torch.Tensor]:
    """A copy of ``node``'s model state."""
    return {k: v.clone() for k, v in algo.models.states[node].items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Whether two states are bit-identical."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def in_trace(algo: FedAgg, node: int) -> bool:
    """Whether ``node`` took part in any directional distillation of the latest round."""
    return any(node in step[1:] for step in algo.trace)


@pytest.mark.parametrize("schedule", ["parallel", "sequential"])
def test_failed_edge_hands_its_devices_over_and_takes_them_back(schedule: str) -> None:
    algo = make_algo(*TWO_EDGES, outage("edge0", 2, 3), schedule=schedule)
    topo, per_sample = algo.ctx.topology, algo.bytes_per_sample
    first = algo.run_round(1)
    assert first["reparented"] == 0 and first["edges_failed"] == 0
    frozen = snapshot(algo, 1)
    moved = algo.count(2) + algo.count(3)

    second = algo.run_round(2)
    assert [topo.parent(d) for d in (2, 3)] == [4, 4] and topo.children(1) == []
    assert algo.displaced == {2: 1, 3: 1}
    assert second["reparented"] == 2 and second["edges_failed"] == 1 and second["edge_down"] == 0
    assert phase_sum(algo, PHASE_MIGRATE_EMBED, "bytes", 2) == moved * per_sample  # one hop each
    assert phase_sum(algo, PHASE_MIGRATE_DECODE, "flops", 2) == moved * algo.dec_flops
    assert second["bytes_by_phase"][PHASE_MIGRATE_EMBED] == moved * per_sample
    assert (DOWN, 2, 4) in algo.trace and (UP, 4, 3) in algo.trace
    assert not in_trace(algo, 1) and 1 not in touched(algo, 2)  # the failed edge neither trains nor teaches

    third = algo.run_round(3)
    assert third["reparented"] == 0 and phase_sum(algo, PHASE_MIGRATE_EMBED, "bytes", 3) == 0
    assert same(algo.models.states[1], frozen) and not in_trace(algo, 1)

    fourth = algo.run_round(4)
    assert [topo.parent(d) for d in (2, 3)] == [1, 1] and algo.displaced == {}
    assert fourth["reparented"] == 2 and fourth["edges_failed"] == 0
    assert phase_sum(algo, PHASE_MIGRATE_EMBED, "bytes", 4) == 0  # the edge kept their bridge samples
    assert (DOWN, 2, 1) in algo.trace and (UP, 0, 1) in algo.trace
    assert not same(algo.models.states[1], frozen)
    assert algo.summary_extras()["faults"]["rounds_with_edge_failure"] == 2


def test_failover_spreads_devices_over_the_least_loaded_live_edges() -> None:
    algo = make_algo(*THREE_EDGES, outage("edge1", 1, 2))
    topo = algo.ctx.topology
    stats = algo.run_round(1)
    # dev 5 goes to the lowest-id edge of two equally loaded ones, dev 6 to the one left with fewer devices
    assert topo.parent(5) == 1 and topo.parent(6) == 7 and topo.children(4) == []
    assert stats["reparented"] == 2
    assert phase_sum(algo, PHASE_MIGRATE_EMBED, "bytes", 1) == (algo.count(5) + algo.count(6)) * (
        algo.bytes_per_sample
    )
    algo.run_round(2)
    algo.run_round(3)
    assert topo.parent(5) == 4 and topo.parent(6) == 4


def test_repeated_failover_to_the_same_edge_resends_nothing() -> None:
    overrides = "[{edge: edge0, start_round: 1, end_round: 1}, {edge: edge0, start_round: 3, end_round: 3}]"
    algo = make_algo(*TWO_EDGES, f"faults.edge_failures={overrides}")
    for r in (1, 2, 3):
        algo.run_round(r)
    assert phase_sum(algo, PHASE_MIGRATE_EMBED, "bytes", 1) > 0
    assert phase_sum(algo, PHASE_MIGRATE_EMBED, "bytes", 2) == 0  # back home
    assert phase_sum(algo, PHASE_MIGRATE_EMBED, "bytes", 3) == 0  # edge1 still holds them
    assert algo.ctx.topology.parent(2) == 4


def test_with_every_edge_down_devices_learn_directly_from_the_cloud() -> None:
    failures = "[{edge: edge0, start_round: 1, end_round: 1}, {edge: edge1, start_round: 1, end_round: 1}]"
    algo = make_algo(*TWO_EDGES, f"faults.edge_failures={failures}")
    edges = {e: snapshot(algo, e) for e in (1, 4)}
    stats = algo.run_round(1)
    topo = algo.ctx.topology
    assert all(topo.parent(d) == 0 for d in (2, 3, 5, 6)) and stats["edges_failed"] == 2
    assert phase_sum(algo, PHASE_MIGRATE_EMBED, "bytes", 1) == 0  # the cloud already holds every embedding
    assert {(DOWN, d, 0) for d in (2, 3, 5, 6)} <= set(algo.trace)
    assert all(same(algo.models.states[e], s) for e, s in edges.items())
    algo.run_round(2)
    assert [topo.parent(d) for d in (2, 3, 5, 6)] == [1, 1, 4, 4]


def test_an_unavailable_device_sits_the_round_out(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("round,node,available\n1,dev0,0\n", encoding="utf-8")
    algo = make_algo(*TWO_EDGES, f"faults.availability_trace={trace}")
    before = snapshot(algo, 2)
    stats = algo.run_round(1)
    assert same(algo.models.states[2], before)
    assert 2 not in touched(algo, 1) and not in_trace(algo, 2)
    assert (UP, 1, 3) in algo.trace  # its sibling still teaches the edge
    assert (stats["dropped"], stats["arrived"], stats["kept_previous_model"]) == (1, 3, False)
    assert algo.count(2) > 0  # outside the round the device counts again
    algo.run_round(2)
    assert not same(algo.models.states[2], before)


def test_lost_uploads_are_charged_and_teach_nothing() -> None:
    algo = make_algo(*TWO_EDGES, "faults.uplink_loss=1.0")
    devices = (2, 3, 5, 6)
    before = {d: snapshot(algo, d) for d in devices}
    stats = algo.run_round(1)
    assert all(not same(algo.models.states[d], before[d]) for d in devices)  # they trained on their edge
    assert not any(step[0] == UP and step[2] in devices for step in algo.trace)
    assert (UP, 0, 1) in algo.trace and (UP, 0, 4) in algo.trace  # edges still teach the cloud
    lost = sum(logit_bytes(algo.num_classes, algo.count(d)) for d in devices)
    assert phase_sum(algo, PHASE_LOST_UPLOAD, "bytes", 1) == lost
    assert (stats["lost"], stats["arrived"], stats["kept_previous_model"]) == (4, 0, False)
    assert algo.ctx.system.faults.totals()["empty"] == 1  # no device upload arrived
    # the sequential (demo) schedule leaves lost uploads out the same way and charges the same bytes
    seq = make_algo(*TWO_EDGES, "faults.uplink_loss=1.0", schedule="sequential")
    seq.run_round(1)
    assert not any(step[0] == UP and step[2] in devices for step in seq.trace)
    assert (UP, 0, 1) in seq.trace and (UP, 0, 4) in seq.trace
    assert phase_sum(seq, PHASE_LOST_UPLOAD, "bytes", 1) == lost


def test_stragglers_are_cut_off_and_keep_their_model() -> None:
    algo = make_algo(*TWO_EDGES, "faults.deadline_s=1e-9")
    devices = (2, 3, 5, 6)
    before = {d: snapshot(algo, d) for d in devices}
    stats = algo.run_round(1)
    assert all(same(algo.models.states[d], before[d]) for d in devices)
    assert stats["straggled"] == 4 and stats["arrived"] == 0
    assert phase_sum(algo, PHASE_STRAGGLER_TRAIN, "flops", 1) > 0
    assert not any(d in step[1:] for d in devices for step in algo.trace)


def test_checkpoint_in_the_middle_of_an_outage_resumes_identically() -> None:
    overrides = (*TWO_EDGES, outage("edge1", 2, 3), "faults.dropout=0.3", "faults.uplink_loss=0.2")
    straight = make_algo(*overrides)
    for r in (1, 2):
        straight.run_round(r)
    saved = decode(encode(straight.state_dict()))  # what a checkpoint file holds
    assert saved["displaced"].tolist() == [[5, 4], [6, 4]]
    rest = [straight.run_round(r) for r in (3, 4)]

    resumed = make_algo(*overrides)
    resumed.load_state_dict(saved)  # the algorithm restores the parentage itself
    assert resumed.ctx.topology.parent_array.tolist() == saved["parents"].tolist()
    again = [resumed.run_round(r) for r in (3, 4)]
    for a, b in zip(rest, again, strict=True):
        assert {k: v for k, v in a.items() if k != "wall_s_by_part"} == {
            k: v for k, v in b.items() if k != "wall_s_by_part"
        }
    assert np.array_equal(straight.ctx.topology.parent_array, resumed.ctx.topology.parent_array)
    for n, state in straight.models.states.items():
        assert same(state, resumed.models.states[n])
    assert straight.holders == resumed.holders and straight.displaced == resumed.displaced == {}
