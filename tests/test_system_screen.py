"""RoundScreen (system/screen.py): who sits out, who straggles past the deadline, whose upload is lost, what
that costs and the round's counters, by hand on tiny trees and as properties over random rounds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgelearn.seeding import Seeds
from edgelearn.system import (
    AvailabilityTrace,
    ChannelSpec,
    EdgeOutage,
    FaultModel,
    HardwareSpec,
    SystemModel,
    Tier,
    Topology,
)
from edgelearn.system.faults import COUNTERS
from edgelearn.system.screen import KEPT_PREVIOUS_MODEL, RoundScreen

F_HZ, CYCLES_PER_FLOP, KAPPA, P_W = 1e9, 0.25, 1e-28, 0.1
"""Device hardware: 4 FLOPs per cycle at 1 GHz, so 4e9 FLOPs take one second."""
DISTANCE_M = 100.0
BANDWIDTH_HZ = 1e6
MB = 1_000_000
ROUND = 1


def _system(topology: Topology) -> SystemModel:
    device = HardwareSpec(f_max_hz=F_HZ, kappa=KAPPA, cycles_per_flop=CYCLES_PER_FLOP, p_max_w=P_W)
    channel = ChannelSpec(distance_m=DISTANCE_M, device_to_cloud_distance_m=DISTANCE_M)
    return SystemModel.build(topology, {Tier.DEVICE: device}, channel, Seeds(0))


def _seconds_per_mb(siblings: int) -> float:
    """Seconds one device needs to upload 1 MB at p_max when ``siblings`` devices share the 1 MHz band."""
    bandwidth = BANDWIDTH_HZ / siblings
    gain = 10 ** (-(128.1 + 37.6 * math.log10(DISTANCE_M / 1000)) / 10)
    noise_w_per_hz = 10 ** ((-174 - 30) / 10)
    rate = bandwidth * math.log2(1 + P_W * gain / (noise_w_per_hz * bandwidth))
    return 8 * MB / rate


class _LoseUploadsOf(FaultModel):
    """A fault model that loses exactly the uploads of ``nodes`` (a forced loss instead of a draw)."""

    def __init__(self, topology: Topology, nodes: Sequence[int], **kwargs: float) -> None:
        super().__init__(topology, **kwargs)
        self.losing = np.asarray(nodes, dtype=np.int64)

    def uplink_lost(self, round_: int, nodes: Sequence[int] | np.ndarray, step: int = 0) -> np.ndarray:
        return np.isin(np.asarray(nodes, dtype=np.int64), self.losing)


# -------------------------------------------------------------------------- by hand: deadline and lost upload
FLOPS = np.array([4e9, 8e9, 4e10, 4e9])
"""Four devices' planned work: 1 s, 2 s, 10 s and 1 s of compute."""
NBYTES = np.array([1, 2, 1, 1]) * MB
"""Their payloads: device 2 sends twice as much as the others."""


def _cut_round() -> tuple[SystemModel, RoundScreen, float]:
    """Flat tree of four devices, deadline 2 s + one 1 MB upload: device 2 (2 s of compute, then 2 MB) is cut
    halfway through its upload, device 3 (10 s of compute) while training; device 4's upload is lost."""
    system = _system(Topology.flat(4))
    u = _seconds_per_mb(4)
    system.attach_faults(_LoseUploadsOf(system.topology, [4], deadline_s=2.0 + u))
    system.begin_round(ROUND)
    screen = RoundScreen.open(system, ROUND, [1, 2, 3, 4]).screen(FLOPS, NBYTES)
    return system, screen, u


def test_a_deadline_cuts_stragglers_and_a_forced_loss_keeps_one_upload_from_arriving() -> None:
    system, screen, u = _cut_round()
    assert screen.active.tolist() == [1, 2, 3, 4] and screen.sitting_out.tolist() == []
    assert screen.upload.compute_s == pytest.approx([1.0, 2.0, 10.0, 1.0])
    assert screen.upload.upload_s == pytest.approx([u, 2 * u, u, u])
    assert screen.upload.deadline_s == pytest.approx(2.0 + u)
    assert screen.stragglers.tolist() == [2, 3] and screen.straggler_mask.tolist() == [
        False,
        True,
        True,
        False,
    ]
    assert screen.trainers.tolist() == [1, 4] and screen.lost.tolist() == [4]
    assert screen.arrived.tolist() == [1] and screen.arrived_mask.tolist() == [True, False, False, False]
    assert len(system.ledger) == 0  # screening predicts; it charges nothing


def test_charge_bills_stragglers_until_the_deadline_and_lost_uploads_in_full() -> None:
    system, screen, u = _cut_round()
    deadline = 2.0 + u
    screen.charge()
    events = system.ledger.event_dicts(ROUND)
    # payloads per device: straggler by straggler (its compute, then its partial upload), lost uploads last
    assert [(e["phase"], e["node"]) for e in events] == [
        ("straggler_train", 2),
        ("straggler_upload", 2),
        ("straggler_train", 3),
        ("lost_upload", 4),
    ]
    train2, upload2, train3, lost4 = events
    assert train2["flops"] == pytest.approx(8e9) and train2["seconds"] == pytest.approx(
        2.0
    )  # trained in time
    assert train3["flops"] == pytest.approx(4e10 * deadline / 10.0)  # cut while training
    assert train3["seconds"] == pytest.approx(deadline)
    assert train3["joules"] == pytest.approx(KAPPA * CYCLES_PER_FLOP * train3["flops"] * F_HZ**2)
    assert upload2["bytes"] == pytest.approx(MB) and upload2["seconds"] == pytest.approx(u)  # half of 2 MB
    assert upload2["t_end"] == pytest.approx(deadline) and upload2["dst"] == 0
    assert lost4["bytes"] == MB and lost4["seconds"] == pytest.approx(u)
    assert lost4["joules"] == pytest.approx(P_W * u) and lost4["dst"] == 0
    with pytest.raises(RuntimeError, match="charged already"):
        screen.charge()


def test_charge_without_lost_leaves_the_lost_uploads_to_the_caller() -> None:
    system, screen, _ = _cut_round()
    screen.charge(lost=False)
    assert {e["phase"] for e in system.ledger.event_dicts(ROUND)} == {"straggler_train", "straggler_upload"}


def test_close_records_the_counters_and_reports_them() -> None:
    system, screen, _ = _cut_round()
    stats = screen.close()
    assert stats == {
        "dropped": 0,
        "edge_down": 0,
        "straggled": 2,
        "lost": 1,
        "arrived": 1,
        "edges_failed": 0,
        KEPT_PREVIOUS_MODEL: False,
    }
    assert system.faults.round_counts(ROUND) == {**{k: stats[k] for k in COUNTERS[:-1]}, "empty": 0}
    with pytest.raises(RuntimeError, match="closed"):
        screen.screen(FLOPS, NBYTES)


def test_scalar_and_per_device_payloads_of_the_same_size_screen_and_charge_alike() -> None:
    """The same events, times and energies; only their order in the ledger differs (batched for a scalar
    payload, straggler by straggler for per-device payloads)."""
    ledgers = []
    for nbytes in (MB, np.full(4, MB)):
        system = _system(Topology.flat(4))
        system.attach_faults(_LoseUploadsOf(system.topology, [4], deadline_s=2.0 + _seconds_per_mb(4) / 2))
        system.begin_round(ROUND)
        screen = RoundScreen.open(system, ROUND, [1, 2, 3, 4]).screen(FLOPS, nbytes)
        screen.charge()
        events = system.ledger.events(ROUND)
        ledgers.append(events[np.lexsort((events["phase"], events["node"]))])
    fields = [f for f in ledgers[0].dtype.names or () if f != "batch"]
    assert all(np.array_equal(ledgers[0][f], ledgers[1][f]) for f in fields)


# ------------------------------------------------------------------------- by hand: who sits out, edge outage
def test_an_edge_outage_and_an_unavailable_device_sit_out() -> None:
    topo = Topology.hierarchical(2, 2)  # cloud 0; edge0 = 1 over devices 2, 3; edge1 = 4 over devices 5, 6
    system = _system(topo)
    trace = AvailabilityTrace({ROUND: [5]})
    system.attach_faults(FaultModel(topo, trace=trace, outages=[EdgeOutage(1, ROUND, ROUND)]))
    system.begin_round(ROUND)
    screen = RoundScreen.open(system, ROUND, topo.device_ids)
    assert screen.available.tolist() == [True, True, False, True]
    assert screen.reachable.tolist() == [False, False, True, True]
    assert screen.active.tolist() == [6] and screen.sitting_out.tolist() == [2, 3, 5]
    assert screen.failed_edges == [1]
    screen.screen(4e9, MB)  # no deadline, no loss: the one active device arrives
    assert screen.arrived.tolist() == [6]
    stats = screen.close()
    assert stats["dropped"] == 1 and stats["edge_down"] == 2 and stats["edges_failed"] == 1
    assert stats["arrived"] == 1 and stats[KEPT_PREVIOUS_MODEL] is False


def test_reachability_up_to_a_target_ignores_outages_above_it() -> None:
    topo = Topology.hierarchical(2, 2)
    system = _system(topo)
    system.attach_faults(FaultModel(topo, outages=[EdgeOutage(1, ROUND, ROUND)]))
    system.begin_round(ROUND)
    assert RoundScreen.open(system, ROUND, [5, 6], target=4).active.tolist() == [5, 6]
    assert RoundScreen.open(system, ROUND, [2, 3], target=1).active.tolist() == []


def test_a_round_where_nothing_arrives_keeps_the_previous_model() -> None:
    system = _system(Topology.flat(3))
    system.attach_faults(FaultModel(system.topology, Seeds(0), uplink_loss=1.0))
    system.begin_round(ROUND)
    screen = RoundScreen.open(system, ROUND, [1, 2, 3]).screen(4e9, MB)
    assert screen.lost.tolist() == [1, 2, 3] and screen.arrived.tolist() == []
    assert screen.close()[KEPT_PREVIOUS_MODEL] is True
    assert system.faults.round_counts(ROUND)["empty"] == 1


def test_without_faults_everyone_arrives_and_close_records_nothing() -> None:
    system = _system(Topology.flat(3))  # the default fault model injects none
    system.begin_round(ROUND)
    screen = RoundScreen.open(system, ROUND, [1, 2, 3]).screen(FLOPS[:3], MB)
    screen.charge()
    assert screen.arrived.tolist() == [1, 2, 3] and len(system.ledger) == 0
    assert screen.close() == {}
    assert len(system.faults.state_dict()["table"]) == 0


# ---------------------------------------------------------------------------- several screens, retries
def test_several_screens_in_a_round_add_up_their_counters() -> None:
    system = _system(Topology.hierarchical(2, 3))
    system.attach_faults(FaultModel(system.topology, Seeds(7), dropout=0.2, uplink_loss=0.4))
    system.begin_round(ROUND)
    screen = RoundScreen.open(system, ROUND, system.topology.device_ids)
    lost = arrived = 0
    for step in range(3):
        screen.screen(4e9, MB, step=step)  # HierFAVG: one screen per edge round, the loss draw keyed by it
        expected = system.faults.uplink_lost(ROUND, screen.active, step)
        assert screen.lost_mask.tolist() == expected.tolist()
        lost, arrived = lost + int(expected.sum()), arrived + int((~expected).sum())
        screen.charge()
    counts = screen.counts()
    assert counts["lost"] == lost and counts["arrived"] == arrived == 3 * len(screen.active) - lost


def test_retried_uploads_count_lost_tries() -> None:
    system = _system(Topology.flat(5))
    system.attach_faults(FaultModel(system.topology, Seeds(3), uplink_loss=0.5))
    system.begin_round(ROUND)
    screen = RoundScreen.open(system, ROUND, [1, 2, 3, 4, 5])
    tries = screen.retry_uploads(2)
    faults, nodes = system.faults, screen.active
    sending = np.ones(5, dtype=bool)
    for attempt, mask in enumerate(tries):
        assert mask.tolist() == sending.tolist()
        sending = sending.copy()
        sending[np.flatnonzero(sending)[~faults.uplink_lost(ROUND, nodes[sending], attempt)]] = False
    assert screen.lost_mask.tolist() == sending.tolist()
    sent = sum(int(m.sum()) for m in tries)
    counts = screen.counts()
    assert counts["arrived"] == 5 - int(sending.sum()) and counts["lost"] == sent - counts["arrived"]
    with pytest.raises(RuntimeError, match="charged by the caller"):
        screen.charge()


def test_close_takes_overrides_and_rejects_unknown_counters() -> None:
    system = _system(Topology.flat(2))
    system.attach_faults(FaultModel(system.topology, deadline_s=1.0))
    system.begin_round(ROUND)
    screen = RoundScreen.open(system, ROUND, [1, 2])
    with pytest.raises(RuntimeError, match="screen"):
        _ = screen.trainers
    with pytest.raises(ValueError, match="unknown counters"):
        screen.close(idle=3)
    assert screen.close(straggled=5)["straggled"] == 5


# --------------------------------------------------------------------------------------- properties
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_screen_partitions_the_candidates_and_never_overcharges(data: st.DataObject) -> None:
    topo = Topology.hierarchical(3, 3)
    devices = topo.device_ids
    down = data.draw(st.sets(st.sampled_from(devices.tolist())), label="unavailable")
    failed = data.draw(st.sets(st.sampled_from(topo.edges)), label="failed edges")
    candidates = sorted(data.draw(st.sets(st.sampled_from(devices.tolist()), min_size=1), label="candidates"))
    system = _system(topo)
    faults = FaultModel(
        topo,
        Seeds(data.draw(st.integers(0, 2**16), label="seed")),
        trace=AvailabilityTrace({ROUND: down}),
        deadline_factor=data.draw(st.floats(0.3, 3.0), label="deadline factor"),
        uplink_loss=data.draw(st.floats(0.0, 1.0), label="uplink loss"),
        outages=[EdgeOutage(e, ROUND, ROUND) for e in sorted(failed)],
    )
    system.attach_faults(faults)
    system.begin_round(ROUND)
    screen = RoundScreen.open(system, ROUND, candidates)
    n = len(screen.active)
    flops = np.asarray(data.draw(st.lists(st.floats(0.0, 1e11), min_size=n, max_size=n)), dtype=np.float64)
    nbytes = np.asarray(
        data.draw(st.lists(st.integers(0, 10 * MB), min_size=n, max_size=n)), dtype=np.float64
    )
    screen.screen(flops, nbytes)

    active, stragglers = set(screen.active.tolist()), set(screen.stragglers.tolist())
    assert set(screen.trainers.tolist()) == active - stragglers
    assert set(screen.arrived.tolist()) == set(screen.trainers.tolist()) - set(screen.lost.tolist())
    assert set(screen.lost.tolist()) <= set(screen.trainers.tolist())
    assert active | set(screen.sitting_out.tolist()) == set(candidates)
    counts = screen.counts()
    parts = ("dropped", "edge_down", "straggled", "lost", "arrived")
    assert sum(counts[p] for p in parts) == len(candidates)
    assert counts["edges_failed"] == len(failed) and counts["empty"] == int(not screen.arrived.size)

    screen.charge()
    planned = dict(
        zip(screen.active.tolist(), zip(flops.tolist(), nbytes.tolist(), strict=True), strict=True)
    )
    for e in system.ledger.event_dicts(ROUND):
        work, size = planned[e["node"]]
        assert e["node"] in stragglers or e["phase"] == "lost_upload"
        if e["phase"] == "straggler_train":
            assert e["flops"] <= work * (1 + 1e-12)
        elif e["phase"] == "straggler_upload":
            assert e["bytes"] <= size * (1 + 1e-12) and e["t_end"] <= screen.upload.deadline_s * (1 + 1e-12)
        else:
            assert e["phase"] == "lost_upload" and e["bytes"] == size
