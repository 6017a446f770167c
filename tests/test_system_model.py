"""SystemModel: hand-timed rounds, hand-computed energy, validation, seeding, checkpoints and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgelearn.errors import ConfigError
from edgelearn.seeding import Seeds
from edgelearn.system.channel import Channel, ChannelSpec
from edgelearn.system.hardware import HardwareProfile, HardwareSpec
from edgelearn.system.model import SystemModel
from edgelearn.system.topology import Tier, Topology

MODEL_BYTES = 125_000  # 1e6 bits


def unit_rate_model() -> SystemModel:
    """hierarchical(2, 2) where every link runs at exactly 1 Mbit/s, so each 125 kB transfer takes 1 s.

    Radio: share = 2 MHz / 2 children = 1 MHz (60 dBHz); distance 1 km -> path loss = a = 100 dB;
    N0 = -140 dBm/Hz. SNR(0.1 W) = -10 dBW - 100 dB - (-170 dBW/Hz + 60 dBHz) = 0 dB -> R = B log2(2) = 1e6.
    Backhaul is set to 1e6 bit/s too.
    """
    topo = Topology.hierarchical(2, 2)  # 0 cloud, 1 edge0: 2, 3 ; 4 edge1: 5, 6
    spec = ChannelSpec(
        bandwidth_hz=2e6, noise_psd_dbm_per_hz=-140.0, path_loss_a_db=100.0, distance_m=1000.0,
        backhaul_rate_bps=1e6,
    )  # fmt: skip
    profiles = {
        Tier.CLOUD: HardwareProfile(f_max_hz=1e10, kappa=1e-28, cycles_per_flop=1.0, p_max_w=1.0),
        Tier.EDGE: HardwareProfile(f_max_hz=2e9, kappa=1e-28, cycles_per_flop=1.0, p_max_w=0.1),
        Tier.DEVICE: HardwareProfile(f_max_hz=1e9, kappa=1e-28, cycles_per_flop=1.0, p_max_w=0.1),
    }
    seeds = Seeds(0)
    channel = Channel(
        topo, spec, rng=seeds.rng("channel", 0), rng_factory=lambda r: seeds.rng("channel", 1, r)
    )
    return SystemModel(topo, [profiles[n.tier] for n in topo.nodes], channel)


def run_two_tier_round(sm: SystemModel) -> float:
    sm.begin_round(0)
    sm.transmit(0, [1, 4], MODEL_BYTES, phase="download")  # cloud -> edges, 1 s, concurrent
    sm.transmit([1, 1, 4, 4], [2, 3, 5, 6], MODEL_BYTES, phase="download")  # edges -> devices, 1 s
    sm.compute([2, 3, 5, 6], [1e9, 2e9, 0.5e9, 3e9])  # 1, 2, 0.5, 3 s at 1 GHz
    sm.transmit([2, 3, 5, 6], [1, 1, 4, 4], MODEL_BYTES)  # uploads, 1 s
    sm.compute([1, 4], [2e9, 1e9], phase="aggregate")  # 1, 0.5 s at 2 GHz
    sm.transmit([1, 4], 0, MODEL_BYTES, phase="aggregate")  # edges -> cloud, 1 s
    return sm.end_round()


def test_round_delay_is_max_over_branches_plus_sequential_stages() -> None:
    sm = unit_rate_model()
    np.testing.assert_allclose(sm.uplink_rate([2, 3, 5, 6, 1]), 1e6, rtol=1e-9)
    delay = run_two_tier_round(sm)
    # edge0 branch: 1 (cloud->edge) + 1 (edge->dev) + max(1, 2) + 1 (up) + 1 (aggregate) + 1 (edge->cloud) = 7
    # edge1 branch: 1 + 1 + max(0.5, 3) + 1 + 0.5 + 1 = 7.5
    assert delay == pytest.approx(7.5, rel=1e-9)
    assert sm.ledger.round_totals(0)["delay_s"] == pytest.approx(7.5, rel=1e-9)
    ev = sm.ledger.events(0)
    agg = ev[(ev["kind"] == "compute") & (ev["tier"] == "edge")]
    np.testing.assert_allclose(agg["t_start"], [5.0, 6.0], rtol=1e-9)  # each edge waits for its slowest child
    # a second round starts after the barrier at 7.5 and takes as long again
    assert run_two_tier_round(sm) == pytest.approx(7.5, rel=1e-9)
    assert sm.now == pytest.approx(15.0, rel=1e-9)


def test_round_energy_and_bytes_by_tier() -> None:
    sm = unit_rate_model()
    run_two_tier_round(sm)
    tot = sm.totals()
    # compute: kappa * cycles * f^2 -> devices 1e-28 * [1, 2, 0.5, 3]e9 * 1e18, edges 1e-28 * [2, 1]e9 * 4e18
    dev_compute, edge_compute = 0.1 + 0.2 + 0.05 + 0.3, 0.8 + 0.4
    # transmit: p * 1 s -> cloud 2 x 1 W, edges 4 x 0.1 W down + 2 x 0.1 W up, devices 4 x 0.1 W up
    assert tot["compute_j"] == pytest.approx(dev_compute + edge_compute, rel=1e-9)
    assert tot["transmit_j"] == pytest.approx(2.0 + 0.6 + 0.4, rel=1e-9)
    assert tot["energy_j"] == pytest.approx(4.85, rel=1e-9)
    by = tot["by_tier"]
    assert (
        by["cloud"]["energy_j"] == pytest.approx(2.0, rel=1e-9)
        and by["cloud"]["bytes_down"] == 2 * MODEL_BYTES
    )
    assert by["edge"]["compute_j"] == pytest.approx(1.2, rel=1e-9)
    assert by["edge"]["bytes_down"] == 4 * MODEL_BYTES and by["edge"]["bytes_up"] == 2 * MODEL_BYTES
    assert by["device"]["transmit_j"] == pytest.approx(0.4, rel=1e-9)
    assert by["device"]["bytes_up"] == 4 * MODEL_BYTES and by["device"]["bytes_down"] == 0
    assert tot["bytes_up"] == tot["bytes_down"] == 6 * MODEL_BYTES and tot["flops"] == 9.5e9
    assert tot["by_phase"]["aggregate"]["flops"] == 3e9


def test_default_physics_round_energy_recomputed_by_hand() -> None:
    """A FEEL fine-tuning round of the two-stage model with the default physics, 3 devices at 100 m from
    one edge."""
    topo = Topology.hierarchical(1, 3)  # 0 cloud, 1 edge0, 2-4 devices
    sm = SystemModel.build(topo, None, ChannelSpec(distance_m=100.0), Seeds(1))
    flops, q_bytes = np.array([4e9, 8e9, 2e9]), 87_200  # ~21.8k fp32 parameters
    sm.begin_round(0)
    secs_c, joules_c = sm.compute([2, 3, 4], flops)
    secs_u, joules_u = sm.transmit([2, 3, 4], 1, q_bytes)
    delay = sm.end_round()
    cycles = flops * 0.25
    np.testing.assert_allclose(secs_c, cycles / 1e9, rtol=1e-12)
    np.testing.assert_allclose(joules_c, 1e-28 * cycles * 1e18, rtol=1e-12)
    b = 1e6 / 3
    rate = b * math.log2(1 + 0.1 * 10**-9.05 / (10**-20.4 * b))
    t_up = 8 * q_bytes / rate
    np.testing.assert_allclose(secs_u, t_up, rtol=1e-9)
    np.testing.assert_allclose(joules_u, 0.1 * t_up, rtol=1e-9)
    assert delay == pytest.approx(cycles.max() / 1e9 + t_up, rel=1e-9)  # max_k (T_cmp + T_com)
    energy = 1e-28 * cycles.sum() * 1e18 + 3 * 0.1 * t_up
    assert sm.totals()["energy_j"] == pytest.approx(energy, rel=1e-9)


def test_lower_frequency_and_power_scale_costs() -> None:
    sm = unit_rate_model()
    s, j = sm.compute(2, 1e9, freq_hz=0.5e9)
    assert float(s) == pytest.approx(2.0) and float(j) == pytest.approx(0.025)  # 1e-28 * 1e9 * 0.25e18
    s_low, j_low = sm.transmit(2, 1, MODEL_BYTES, power_w=0.05)  # SNR 0.5 -> R = 1e6 log2(1.5)
    assert float(s_low) == pytest.approx(1.0 / math.log2(1.5), rel=1e-9)
    assert float(j_low) == pytest.approx(0.05 * float(s_low), rel=1e-12)


@pytest.mark.parametrize("freq", [0.0, -1.0, 1.5e9])
def test_frequency_outside_limit_rejected(freq: float) -> None:
    with pytest.raises(ConfigError, match="freq_hz"):
        unit_rate_model().compute([2, 3], 1e6, freq_hz=freq)


def test_transmit_validation() -> None:
    sm = unit_rate_model()
    with pytest.raises(ValueError, match="not a parent-child link"):
        sm.transmit(2, 4, 10)
    with pytest.raises(ValueError, match="not a parent-child link"):
        sm.transmit(2, 3, 10)
    with pytest.raises(ConfigError, match="power_w"):
        sm.transmit(2, 1, 10, power_w=0.2)
    with pytest.raises(ValueError):
        sm.compute(9, 1.0)
    with pytest.raises(ValueError):
        sm.begin_round(-1)
    assert len(sm.ledger) == 0


def test_build_is_seeded() -> None:
    topo = Topology.hierarchical(2, 5)
    specs = {"device": HardwareSpec(f_max_hz=(0.5e9, 1e9))}
    spec = ChannelSpec(fading="rayleigh")
    a, b = SystemModel.build(topo, specs, spec, Seeds(3)), SystemModel.build(topo, specs, spec, Seeds(3))
    c = SystemModel.build(topo, specs, spec, Seeds(4))
    devs = topo.devices
    np.testing.assert_array_equal(a.f_max_hz, b.f_max_hz)
    np.testing.assert_array_equal(a.uplink_rate(devs), b.uplink_rate(devs))
    assert not np.array_equal(a.f_max_hz, c.f_max_hz)
    assert not np.array_equal(a.uplink_rate(devs), c.uplink_rate(devs))


def test_reparent_and_checkpoint_round_trip() -> None:
    sm = unit_rate_model()
    run_two_tier_round(sm)
    sm.reparent(5, 1)  # edge0 now shares 2 MHz over 3 devices
    assert sm.channel.bandwidth(2) == pytest.approx(2e6 / 3)
    state = sm.state_dict()
    fresh = unit_rate_model()
    fresh.load_state_dict(state)
    assert fresh.topology.parent(5) == 1 and fresh.channel.bandwidth(5) == pytest.approx(2e6 / 3)
    assert fresh.totals() == sm.totals() and fresh.now == sm.now
    fresh.begin_round(1)
    sm.begin_round(1)
    np.testing.assert_array_equal(fresh.transmit(5, 1, 100)[0], sm.transmit(5, 1, 100)[0])


def test_empty_batches_are_no_ops() -> None:
    sm = unit_rate_model()
    s, j = sm.compute(np.array([], dtype=np.int64), 1.0)
    assert s.shape == (0,) and j.shape == (0,)
    sm.transmit(np.array([], dtype=np.int64), np.array([], dtype=np.int64), 1.0)
    assert len(sm.ledger) == 0 and sm.now == 0.0


LINKS = [(2, 1), (3, 1), (5, 4), (6, 4), (1, 0), (4, 0)]  # (child, parent) in hierarchical(2, 2)

op = st.one_of(
    st.tuples(st.just("round")),
    st.tuples(st.just("compute"), st.lists(st.integers(0, 6), min_size=1, max_size=5), st.floats(0.0, 1e10)),
    st.tuples(
        st.just("transmit"),
        st.lists(st.tuples(st.sampled_from(LINKS), st.booleans()), min_size=1, max_size=4),
        st.floats(0.0, 1e7),
    ),
)


@settings(max_examples=50, deadline=None)
@given(ops=st.lists(op, max_size=12))
def test_property_costs_non_negative_additive_and_clock_monotone(ops: list[tuple]) -> None:
    sm = SystemModel.build(Topology.hierarchical(2, 2), None, ChannelSpec(fading="rayleigh"), Seeds(5))
    spent, rnd, last_now = 0.0, 0, 0.0
    for item in ops:
        if item[0] == "round":
            rnd += 1
            sm.begin_round(rnd)
            continue
        if item[0] == "compute":
            secs, joules = sm.compute(item[1], item[2])
        else:
            pairs = [(c, p) if up else (p, c) for (c, p), up in item[1]]
            secs, joules = sm.transmit([s for s, _ in pairs], [d for _, d in pairs], item[2])
        assert np.all(secs >= 0) and np.all(joules >= 0)
        spent += float(np.sum(joules))
        assert sm.now >= last_now
        last_now = sm.now
    tot = sm.totals()
    assert tot["energy_j"] == pytest.approx(spent, rel=1e-9, abs=1e-12)
    assert tot["energy_j"] == pytest.approx(tot["compute_j"] + tot["transmit_j"], rel=1e-9, abs=1e-12)
    assert tot["energy_j"] == pytest.approx(sum(t["energy_j"] for t in tot["by_tier"].values()), abs=1e-9)
    per_round = sum(sm.ledger.round_totals(int(r))["energy_j"] for r in sm.ledger.rounds())
    assert per_round == pytest.approx(tot["energy_j"], rel=1e-9, abs=1e-12)
    assert tot["delay_s"] == pytest.approx(sm.now, rel=1e-12, abs=0.0)
    ev = sm.ledger.events()
    np.testing.assert_allclose(ev["t_end"] - ev["t_start"], ev["seconds"], rtol=1e-9, atol=1e-9)
