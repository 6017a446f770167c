"""Ledger bookkeeping (totals by tier/direction/phase/round, checkpoints) and the virtual clock."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgelearn.errors import DataError
from edgelearn.system.ledger import INITIAL_CAPACITY, Ledger, VirtualClock
from edgelearn.system.topology import Topology


def small_ledger() -> Ledger:
    """hierarchical(1, 2): 0 cloud, 1 edge0, 2 dev0, 3 dev1 -- with five hand-written events."""
    led = Ledger([n.tier for n in Topology.hierarchical(1, 2).nodes])
    led.record_transmit(
        round=0, src=1, dst=[2, 3], direction="down", nbytes=100.0, seconds=1.0, joules=[0.5, 0.25],
        t_start=0.0, t_end=1.0, phase="init",
    )  # fmt: skip
    led.record_compute(
        round=0, node=[2, 3], flops=[1e6, 2e6], seconds=[1.0, 2.0], joules=[0.1, 0.2],
        t_start=1.0, t_end=[2.0, 3.0],
    )  # fmt: skip
    led.record_transmit(
        round=1, src=[2, 3], dst=1, direction="up", nbytes=[10.0, 30.0], seconds=1.0, joules=0.05,
        t_start=[4.0, 4.0], t_end=[5.0, 5.0],
    )  # fmt: skip
    led.record_transmit(
        round=1, src=1, dst=0, direction="up", nbytes=7.0, seconds=2.0, joules=2.0, t_start=5.0, t_end=7.0
    )
    return led


def test_totals_by_tier_direction_phase() -> None:
    led = small_ledger()
    tot = led.totals()
    assert len(led) == tot["events"] == 7
    assert tot["energy_j"] == pytest.approx(0.5 + 0.25 + 0.1 + 0.2 + 0.05 * 2 + 2.0)
    assert tot["compute_j"] == pytest.approx(0.3) and tot["transmit_j"] == pytest.approx(2.85)
    assert tot["bytes_down"] == 200.0 and tot["bytes_up"] == 47.0 and tot["flops"] == 3e6
    assert tot["delay_s"] == 7.0
    edge, dev, cloud = tot["by_tier"]["edge"], tot["by_tier"]["device"], tot["by_tier"]["cloud"]
    assert edge["bytes_down"] == 200.0 and edge["bytes_up"] == 7.0 and edge["energy_j"] == pytest.approx(2.75)
    assert dev["bytes_up"] == 40.0 and dev["bytes_down"] == 0.0
    assert dev["compute_j"] == pytest.approx(0.3) and dev["transmit_j"] == pytest.approx(0.1)
    assert cloud == dict.fromkeys(cloud, 0.0)
    assert set(tot["by_phase"]) == {"init", "train"}
    assert tot["by_phase"]["init"]["energy_j"] == pytest.approx(0.75)
    assert tot["by_phase"]["train"]["flops"] == 3e6


def test_round_totals_and_events() -> None:
    led = small_ledger()
    r1 = led.round_totals(1)
    assert r1["events"] == 3 and r1["bytes_up"] == 47.0 and r1["energy_j"] == pytest.approx(2.1)
    assert r1["delay_s"] == 3.0  # from 4.0 to 7.0
    assert led.round_totals(5)["events"] == 0 and led.round_totals(5)["delay_s"] == 0.0
    np.testing.assert_array_equal(led.rounds(), [0, 1])
    ev = led.events(0)
    assert ev.shape == (4,) and list(ev["kind"]) == ["transmit", "transmit", "compute", "compute"]
    assert list(ev["direction"]) == ["down", "down", "none", "none"] and ev["dst"][2] == -1
    assert list(ev["tier"]) == ["edge", "edge", "device", "device"] and ev["phase"][0] == "init"
    dicts = led.event_dicts(1)
    assert dicts[-1] == {
        "kind": "transmit", "round": 1, "node": 1, "tier": "edge", "src": 1, "dst": 0, "direction": "up",
        "flops": 0.0, "bytes": 7.0, "seconds": 2.0, "joules": 2.0, "t_start": 5.0, "t_end": 7.0,
        "phase": "train", "batch": 3,
    }  # fmt: skip
    assert led.events()["batch"].tolist() == [0, 0, 1, 1, 2, 2, 3]  # one number per record call
    json.dumps(dicts)


def test_state_dict_round_trip_and_growth() -> None:
    led = small_ledger()
    n = INITIAL_CAPACITY + 500
    led.record_compute(
        round=2, node=np.full(n, 2), flops=1.0, seconds=0.0, joules=1e-3, t_start=7.0, t_end=7.0, phase="x"
    )
    state = led.state_dict()
    other = Ledger(["cloud", "device"])
    other.load_state_dict(state)
    assert other.totals() == led.totals() and len(other) == 7 + n
    other.record_compute(round=3, node=3, flops=1.0, seconds=1.0, joules=1.0, t_start=7.0, t_end=8.0)
    assert other.totals()["energy_j"] == pytest.approx(led.totals()["energy_j"] + 1.0)
    bad = dict(state, columns={**state["columns"], "joules": state["columns"]["joules"][:3]})
    with pytest.raises(DataError, match="length"):
        other.load_state_dict(bad)
    with pytest.raises(DataError):
        other.load_state_dict({"version": 1})


def test_bad_direction_rejected() -> None:
    led = Ledger(["cloud", "device"])
    with pytest.raises(ValueError, match="direction"):
        led.record_transmit(
            round=0, src=1, dst=0, direction="sideways", nbytes=1.0, seconds=1.0, joules=1.0, t_start=0.0,
            t_end=1.0,
        )  # fmt: skip


def test_clock_compute_repeated_nodes_run_back_to_back() -> None:
    clock = VirtualClock(3)
    start, end = clock.compute([1, 2, 1], [1.0, 3.0, 2.0])
    np.testing.assert_array_equal(start, [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(end, [1.0, 3.0, 3.0])
    np.testing.assert_array_equal(clock.ready, [0.0, 3.0, 3.0])
    start, end = clock.compute([2, 1, 2, 2], [1.0, 0.5, 1.0, 2.0])
    np.testing.assert_array_equal(start, [3.0, 3.0, 4.0, 5.0])
    np.testing.assert_array_equal(end, [4.0, 3.5, 5.0, 7.0])
    assert clock.now == 7.0


def test_clock_transmit_batch_is_concurrent_and_receiver_waits() -> None:
    clock = VirtualClock(4)
    clock.ready[:] = [1.0, 0.0, 6.0, 0.0]
    start, end = clock.transmit(0, [1, 2, 3], [2.0, 3.0, 4.0])
    np.testing.assert_array_equal(start, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(end, [3.0, 4.0, 5.0])
    np.testing.assert_array_equal(clock.ready, [5.0, 3.0, 6.0, 5.0])  # node 2 was already busy until 6
    clock.sync()
    np.testing.assert_array_equal(clock.ready, [6.0] * 4)
    restored = VirtualClock(4)
    restored.load_state_dict(clock.state_dict())
    assert restored.now == 6.0
    with pytest.raises(DataError):
        VirtualClock(2).load_state_dict(clock.state_dict())
