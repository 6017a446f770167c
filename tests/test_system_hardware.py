"""Hardware specs, defaults and per-node sampling."""

from __future__ import annotations

import numpy as np
import pytest

from edgelearn.errors import ConfigError
from edgelearn.system.catalog import CLOUD_DEFAULT, DEVICE_DEFAULT, EDGE_DEFAULT, sample_profiles
from edgelearn.system.hardware import (
    ACCELERATOR,
    HardwareProfile,
    HardwareSpec,
    profile_arrays,
)
from edgelearn.system.topology import Tier, Topology

A100 = HardwareProfile(kind=ACCELERATOR, flops_per_s=6.24e13, power_w=400.0, p_max_w=1.0)
"""The default cloud node: catalog profile a100 with the servers' 1 W radio."""


def test_defaults_match_the_paper_and_the_catalog() -> None:
    assert (DEVICE_DEFAULT.f_max_hz, DEVICE_DEFAULT.kappa, DEVICE_DEFAULT.p_max_w) == (1e9, 1e-28, 0.1)
    assert (EDGE_DEFAULT.f_max_hz, EDGE_DEFAULT.kappa, EDGE_DEFAULT.p_max_w) == (5e9, 1e-28, 1.0)
    assert DEVICE_DEFAULT.cycles_per_flop == 0.25
    assert (CLOUD_DEFAULT.kind, CLOUD_DEFAULT.f_max_hz, CLOUD_DEFAULT.p_max_w) == (ACCELERATOR, None, 1.0)
    assert (CLOUD_DEFAULT.flops_per_s, CLOUD_DEFAULT.power_w) == (6.24e13, 400.0)


def test_sample_fixed_defaults_per_tier() -> None:
    topo = Topology.hierarchical(2, 2)
    profiles = sample_profiles(topo, None, np.random.default_rng(0))
    assert len(profiles) == topo.num_nodes
    assert profiles[0] == A100
    assert profiles[1] == HardwareProfile(5e9, 1e-28, 0.25, 1.0)
    assert all(profiles[i] == HardwareProfile(1e9, 1e-28, 0.25, 0.1) for i in topo.devices)
    arrays = profile_arrays(profiles)
    np.testing.assert_array_equal(arrays["p_max_w"], [1.0, 1.0, 0.1, 0.1, 1.0, 0.1, 0.1])


def test_sample_ranges_are_uniform_per_node_and_deterministic() -> None:
    topo = Topology.flat(200)
    specs = {Tier.DEVICE: HardwareSpec(f_max_hz=(0.5e9, 1e9), p_max_w=[0.05, 0.1])}
    a = profile_arrays(sample_profiles(topo, specs, np.random.default_rng(7)))
    b = profile_arrays(sample_profiles(topo, {"device": specs[Tier.DEVICE]}, np.random.default_rng(7)))
    c = profile_arrays(sample_profiles(topo, specs, np.random.default_rng(8)))
    f = a["f_max_hz"][topo.devices]
    assert f.min() >= 0.5e9 and f.max() <= 1e9 and np.unique(f).size == 200
    assert 0.7e9 < f.mean() < 0.8e9  # U(0.5, 1) GHz has mean 0.75 GHz
    assert a["p_max_w"][topo.devices].min() >= 0.05
    assert a["flops_per_s"][0] == 6.24e13 and np.isnan(a["f_max_hz"][0])  # the cloud keeps its default
    np.testing.assert_array_equal(a["f_max_hz"], b["f_max_hz"])
    assert not np.array_equal(a["f_max_hz"], c["f_max_hz"])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"f_max_hz": -1.0}, "f_max_hz"),
        ({"f_max_hz": 1e9, "kappa": 0.0}, "kappa"),
        ({"f_max_hz": (2e9, 1e9)}, "f_max_hz"),
        ({"f_max_hz": (1e9, 2e9, 3e9)}, "f_max_hz"),
        ({"f_max_hz": 1e9, "p_max_w": "high"}, "p_max_w"),
        ({"f_max_hz": 1e9, "cycles_per_flop": float("nan")}, "cycles_per_flop"),
    ],
)
def test_bad_spec_values(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        HardwareSpec(**kwargs)


def test_unknown_tier_rejected() -> None:
    with pytest.raises(ConfigError, match="gpu"):
        sample_profiles(Topology.flat(2), {"gpu": DEVICE_DEFAULT}, np.random.default_rng(0))
