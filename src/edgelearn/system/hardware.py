"""Per-node hardware: CPU clock limit, switched capacitance, cycles per FLOP and transmit power limit.

Compute follows the CMOS dynamic-power model of paper_two_stage.md §3.2: delay = cycles / f and
energy = kappa * cycles * f^2, with cycles = FLOPs * cycles_per_flop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

from edgelearn.errors import ConfigError
from edgelearn.system.topology import TIER_CODE, Tier, Topology

Range = tuple[float, float]
FloatOrRange = float | Range

KAPPA_DEFAULT = 1e-28
"""Effective switched capacitance, kappa = kappa~ = 1e-28 (paper_two_stage.md §8.3)."""

CYCLES_PER_FLOP_DEFAULT = 0.25
"""4 FLOPs per cycle (SIMD). A project choice: it makes the §8.2 MNIST CNN (~0.96 MFLOPs forward,
~2.9 MFLOPs forward+backward per sample) cost ~0.7e6 cycles, close to C = 1e6 cycles/sample of
paper_two_stage.md §8.3."""

DEVICE_F_MAX_HZ = 1e9
"""Device CPU limit f_max = 1 GHz (paper_two_stage.md §8.3)."""

DEVICE_P_MAX_W = 0.1
"""Device transmit power limit P_max = 0.1 W = 20 dBm (paper_two_stage.md §8.3)."""

EDGE_F_MAX_HZ = 5e9
"""Edge-server CPU limit f~_max = 5 GHz (paper_two_stage.md §8.3)."""

SERVER_P_MAX_W = 1.0
"""Server (edge/cloud) transmit power, 1 W = 30 dBm. A project choice: the spec neglects the downlink
(paper_two_stage.md §3.3); 30 dBm is a small-cell base-station level."""

CLOUD_F_MAX_HZ = 2e10
"""Cloud compute limit 20 GHz-equivalent (4x one edge server). A project choice: the two-stage spec has no
cloud; the cloud only aggregates in hierarchical schemes, so its exact speed rarely matters."""


@dataclass(frozen=True)
class HardwareProfile:
    """Concrete hardware of one node (all values > 0)."""

    f_max_hz: float
    kappa: float
    cycles_per_flop: float
    p_max_w: float

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not np.isfinite(value) or value <= 0:
                raise ConfigError(f"hardware.{f.name}: got {value!r}; need a finite number > 0")


@dataclass(frozen=True)
class HardwareSpec:
    """Hardware of a tier: each field is a fixed value or a ``(low, high)`` range drawn uniformly per node."""

    f_max_hz: FloatOrRange
    kappa: FloatOrRange = KAPPA_DEFAULT
    cycles_per_flop: FloatOrRange = CYCLES_PER_FLOP_DEFAULT
    p_max_w: FloatOrRange = DEVICE_P_MAX_W

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _check_value(getattr(self, f.name), f"hardware.{f.name}"))


def _check_value(value: object, where: str) -> FloatOrRange:
    """Validate a float or (low, high) range with 0 < low <= high; lists become tuples."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ConfigError(f"{where}: got {value!r}; a range must be [low, high]")
        low, high = (_check_value(v, where) for v in value)
        assert isinstance(low, float) and isinstance(high, float)
        if low > high:
            raise ConfigError(f"{where}: range [{low}, {high}] has low > high", hint="swap the two values")
        return (low, high)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{where}: got {value!r}; need a number or a [low, high] range")
    if not np.isfinite(value) or value <= 0:
        raise ConfigError(f"{where}: got {value!r}; need a finite number > 0")
    return float(value)


DEVICE_DEFAULT = HardwareSpec(
    f_max_hz=DEVICE_F_MAX_HZ,
    kappa=KAPPA_DEFAULT,
    cycles_per_flop=CYCLES_PER_FLOP_DEFAULT,
    p_max_w=DEVICE_P_MAX_W,
)
"""End device: 1 GHz, kappa 1e-28, 0.1 W (paper_two_stage.md §8.3). For heterogeneity use e.g.
``HardwareSpec(f_max_hz=(0.5e9, 1e9))``."""

EDGE_DEFAULT = HardwareSpec(
    f_max_hz=EDGE_F_MAX_HZ,
    kappa=KAPPA_DEFAULT,
    cycles_per_flop=CYCLES_PER_FLOP_DEFAULT,
    p_max_w=SERVER_P_MAX_W,
)
"""Edge server: 5 GHz, kappa 1e-28 (paper_two_stage.md §8.3), 1 W transmit power (project choice)."""

CLOUD_DEFAULT = HardwareSpec(
    f_max_hz=CLOUD_F_MAX_HZ,
    kappa=KAPPA_DEFAULT,
    cycles_per_flop=CYCLES_PER_FLOP_DEFAULT,
    p_max_w=SERVER_P_MAX_W,
)
"""Cloud: 20 GHz-equivalent, kappa 1e-28, 1 W (project choices, see the constants above)."""

TIER_DEFAULTS: dict[Tier, HardwareSpec] = {
    Tier.CLOUD: CLOUD_DEFAULT,
    Tier.EDGE: EDGE_DEFAULT,
    Tier.DEVICE: DEVICE_DEFAULT,
}


def sample_profiles(
    topology: Topology, specs: Mapping[Tier | str, HardwareSpec] | None, rng: np.random.Generator
) -> list[HardwareProfile]:
    """One profile per node id, drawing every range uniformly per node; tiers missing from ``specs`` use
    ``TIER_DEFAULTS``. Deterministic for a given ``rng`` (draw order: tier, then field, then node id)."""
    chosen = dict(TIER_DEFAULTS)
    for key, spec in (specs or {}).items():
        try:
            tier = Tier(key)
        except ValueError:
            raise ConfigError(
                f"hardware: unknown tier {key!r}", hint=f"use one of {[t.value for t in Tier]}"
            ) from None
        if not isinstance(spec, HardwareSpec):
            raise ConfigError(f"hardware.{tier.value}: expected a HardwareSpec, got {type(spec).__name__}")
        chosen[tier] = spec
    codes = topology.tier_codes
    columns = {f.name: np.empty(topology.num_nodes) for f in fields(HardwareProfile)}
    for tier in Tier:
        ids = np.flatnonzero(codes == TIER_CODE[tier])
        for name, column in columns.items():
            value = getattr(chosen[tier], name)
            column[ids] = (
                rng.uniform(value[0], value[1], size=ids.size) if isinstance(value, tuple) else value
            )
    return [
        HardwareProfile(**{name: float(column[i]) for name, column in columns.items()})
        for i in range(topology.num_nodes)
    ]


def profile_arrays(profiles: list[HardwareProfile]) -> dict[str, np.ndarray]:
    """Columnar view ``{field: float64 array indexed by node id}`` for vectorized cost evaluation."""
    return {
        f.name: np.array([getattr(p, f.name) for p in profiles], dtype=np.float64)
        for f in fields(HardwareProfile)
    }
