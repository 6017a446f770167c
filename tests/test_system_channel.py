"""Channel: path-loss gains, bandwidth shares, rates, fading determinism and reparenting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgelearn.errors import ConfigError
from edgelearn.seeding import Seeds
from edgelearn.system.channel import Channel, ChannelSpec
from edgelearn.system.topology import Topology

N0_W_PER_HZ = 10 ** (-20.4)  # -174 dBm/Hz


def make_channel(topo: Topology, spec: ChannelSpec, seed: int = 0) -> Channel:
    seeds = Seeds(seed)
    return Channel(topo, spec, rng=seeds.rng("channel", 0), rng_factory=lambda r: seeds.rng("channel", 1, r))


def test_spec_defaults() -> None:
    spec = ChannelSpec()
    assert spec.bandwidth_hz == 1e6 and spec.noise_psd_dbm_per_hz == -174.0
    assert (spec.path_loss_a_db, spec.path_loss_b_db) == (128.1, 37.6)
    assert spec.distance_m == (50.0, 250.0) and spec.fading == "none"


def test_fixed_distance_gain_bandwidth_and_rate_by_hand() -> None:
    topo = Topology.hierarchical(2, 2, cloud_devices=1)  # 0 cloud, 1 dev0, 2 edge0, 3,4 devs, 5 edge1, 6,7
    ch = make_channel(topo, ChannelSpec(distance_m=100.0, device_to_cloud_distance_m=1000.0))
    assert ch.noise_psd_w_per_hz == pytest.approx(N0_W_PER_HZ, rel=1e-12)
    assert ch.gain(3, 0) == pytest.approx(10**-9.05, rel=1e-12)  # 90.5 dB at 100 m
    assert ch.gain(1, 0) == pytest.approx(10**-12.81, rel=1e-12)  # 128.1 dB at 1 km
    np.testing.assert_allclose(ch.bandwidth([1, 3, 4, 6]), [1e6, 5e5, 5e5, 5e5])
    # SNR = p g / (N0 B) = 0.1 * 10^-9.05 / (10^-20.4 * 5e5) = 10^10.35 / 5e5
    expected = 5e5 * math.log2(1 + 10**10.35 / 5e5)
    assert ch.rate(3, 0, 0.1) == pytest.approx(expected, rel=1e-9)
    assert ch.rate(2, 0, 1.0) == 1e8  # wired backhaul, power-independent
    assert math.isnan(ch.gain(2, 0)) and not ch.is_wireless(2) and ch.is_wireless(3)
    np.testing.assert_allclose(ch.rate(np.array([3, 2]), 0, 0.1), [expected, 1e8])
    with pytest.raises(ValueError, match="cloud"):
        ch.rate(0, 0, 1.0)


def test_distances_drawn_in_range() -> None:
    topo = Topology.hierarchical(1, 300, cloud_devices=300)
    ch = make_channel(topo, ChannelSpec())
    under_edge = [d for d in topo.devices if topo.parent(d) != 0]
    under_cloud = [d for d in topo.devices if topo.parent(d) == 0]
    d_edge, d_cloud = ch.distance(under_edge), ch.distance(under_cloud)
    assert d_edge.min() >= 50 and d_edge.max() <= 250 and np.unique(d_edge).size == 300
    assert d_cloud.min() >= 200 and d_cloud.max() <= 500


def test_rayleigh_fading_is_deterministic_and_order_free() -> None:
    topo = Topology.hierarchical(2, 3)
    devs = np.array(topo.devices)
    spec = ChannelSpec(fading="rayleigh")
    a = make_channel(topo, spec)
    first = a.gain(devs, 3)
    for r in range(10):  # also pushes round 3 out of the cache
        a.gain(devs, r)
    np.testing.assert_array_equal(a.gain(devs, 3), first)
    b = make_channel(topo, spec)
    singles_reversed = [b.gain(int(d), 3) for d in devs[::-1]][::-1]
    np.testing.assert_array_equal(singles_reversed, first)
    assert not np.allclose(a.gain(devs, 4), first, rtol=1e-3, atol=0.0)
    no_fading = make_channel(topo, ChannelSpec())
    ratio = first / no_fading.gain(devs, 3)  # same distances (same distance stream) -> ratio is the fading
    assert np.all(ratio > 0) and np.unique(ratio).size == devs.size


def test_rayleigh_power_gain_has_unit_mean() -> None:
    ch = make_channel(Topology.flat(20000), ChannelSpec(fading="rayleigh"))
    fading = ch.fading(0)[1:]
    assert abs(fading.mean() - 1.0) < 0.03 and abs(fading.std() - 1.0) < 0.05  # Exp(1): mean = std = 1


def test_reparent_refreshes_shares_and_distance() -> None:
    topo = Topology.hierarchical(2, 2)  # 1 edge0: 2,3 ; 4 edge1: 5,6
    ch = make_channel(topo, ChannelSpec(distance_m=100.0, device_to_cloud_distance_m=300.0))
    topo.reparent(5, 1)
    np.testing.assert_allclose(ch.bandwidth([2, 5, 6]), [1e6 / 3, 1e6 / 3, 1e6])
    topo.reparent(6, 0)
    assert ch.distance(6) == 300.0 and ch.bandwidth(6) == 1e6
    assert ch.gain(6, 0) == pytest.approx(10 ** (-(128.1 + 37.6 * math.log10(0.3)) / 10), rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bandwidth_hz": 0.0}, "bandwidth_hz"),
        ({"distance_m": (250.0, 50.0)}, "distance_m"),
        ({"distance_m": -5.0}, "distance_m"),
        ({"fading": "rician"}, "fading"),
        ({"backhaul_rate_bps": -1.0}, "backhaul_rate_bps"),
        ({"device_to_cloud_distance_m": (0.0, 10.0)}, "device_to_cloud_distance_m"),
    ],
)
def test_bad_channel_spec(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        ChannelSpec(**kwargs)
