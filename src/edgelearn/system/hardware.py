"""Per-node hardware of two kinds, and the per-tier specs nodes are drawn from.

* ``dvfs``: a CPU under dynamic voltage and frequency scaling, the compute model of Lyu et al., "Rethinking
  Resource Management in Edge Learning: A Joint Pre-training and Fine-tuning Design Paradigm"
  (arXiv:2404.00836), system model: cycles = FLOPs x cycles_per_flop, delay = cycles / f and energy =
  kappa x cycles x f^2 at a clock f <= f_max_hz (dynamic CMOS power kappa f^3). The two-stage planner
  chooses these clocks; devices and edge servers use this kind by default.
* ``accelerator``: a GPU, an NPU board or a multi-core CPU server, priced by its sustained throughput and
  active power: delay = FLOPs / flops_per_s and energy = power_w x delay (so J/FLOP = power_w /
  flops_per_s). It has no clock to choose. ``idle_power_w`` is recorded with the profile but never
  charged: the ledger charges work (compute and transmissions), not the time a node waits for others, for
  either kind.

Every node also has a transmit power limit ``p_max_w``. Named profiles (the paper's nodes, edge boards, a
Xeon server, datacenter GPUs, each with its source) live in ``edgelearn.system.catalog``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgelearn.errors import ConfigError

Range = tuple[float, float]
FloatOrRange = float | Range

DVFS = "dvfs"
"""Kind of a CPU priced by the DVFS model (clock, switched capacitance, cycles per FLOP)."""

ACCELERATOR = "accelerator"
"""Kind of a node priced by sustained FLOP/s and active power (GPU, NPU, multi-core CPU server)."""

KINDS = (DVFS, ACCELERATOR)

KIND_FIELDS: dict[str, tuple[str, ...]] = {
    DVFS: ("f_max_hz", "kappa", "cycles_per_flop"),
    ACCELERATOR: ("flops_per_s", "power_w", "idle_power_w"),
}
"""The compute fields of each kind; giving one to a node of the other kind is an error."""

REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    DVFS: ("f_max_hz", "kappa", "cycles_per_flop"),
    ACCELERATOR: ("flops_per_s", "power_w"),
}
"""Compute fields a node of each kind must have (``idle_power_w`` is optional)."""

NUMERIC_FIELDS = ("f_max_hz", "kappa", "cycles_per_flop", "p_max_w", "flops_per_s", "power_w", "idle_power_w")
"""Every number of a spec, in the order ranges are drawn (the DVFS fields keep their historical order, so
the draws of a DVFS-only run are the same as before accelerators existed)."""

MAY_BE_ZERO = frozenset({"idle_power_w"})
"""Fields where 0 is a valid value (a node that draws nothing while idle); every other field needs > 0."""

KAPPA_DEFAULT = 1e-28
"""Effective switched capacitance, kappa = kappa~ = 1e-28 (Lyu et al., arXiv:2404.00836, simulation
settings)."""

CYCLES_PER_FLOP_DEFAULT = 0.25
"""4 FLOPs per cycle (SIMD). A project choice: it makes the paper's MNIST CNN (~0.96 MFLOPs forward, ~2.9
MFLOPs forward+backward per sample) cost ~0.7e6 cycles, close to the paper's C = 1e6 cycles/sample."""

DEVICE_F_MAX_HZ = 1e9
"""Device CPU limit f_max = 1 GHz (Lyu et al., arXiv:2404.00836, simulation settings)."""

DEVICE_P_MAX_W = 0.1
"""Device transmit power limit P_max = 0.1 W = 20 dBm (Lyu et al., arXiv:2404.00836, simulation settings)."""

EDGE_F_MAX_HZ = 5e9
"""Edge-server CPU limit f~_max = 5 GHz (Lyu et al., arXiv:2404.00836, simulation settings)."""

SERVER_P_MAX_W = 1.0
"""Server (edge/cloud) transmit power, 1 W = 30 dBm. A project choice: the paper neglects the downlink;
30 dBm is a small-cell base-station level."""

DVFS_DEFAULTS: dict[str, float] = {"kappa": KAPPA_DEFAULT, "cycles_per_flop": CYCLES_PER_FLOP_DEFAULT}
"""What a DVFS spec without a profile assumes for the fields it omits (the paper's values)."""


class HardwareFieldError(ConfigError):
    """A hardware value, kind or profile name is invalid; ``key`` names the field at fault (e.g.
    ``kappa``, ``profile``) and ``problem`` says what is wrong, without the key path."""

    def __init__(self, key: str, problem: str, *, hint: str | None = None) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"hardware.{key}: {problem}", hint=hint)


def check_value(value: object, key: str) -> FloatOrRange:
    """Validate a number or a ``(low, high)`` range with 0 < low <= high (0 <= low for
    :data:`MAY_BE_ZERO` fields); lists become tuples, numbers floats."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise HardwareFieldError(key, f"got {value!r}; a range must be [low, high]")
        low, high = (check_value(v, key) for v in value)
        assert isinstance(low, float) and isinstance(high, float)
        if low > high:
            raise HardwareFieldError(key, f"range [{low}, {high}] has low > high", hint="swap the two values")
        return (low, high)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise HardwareFieldError(key, f"got {value!r}; need a number or a [low, high] range")
    number = float(value)
    zero_ok = key in MAY_BE_ZERO
    if not math.isfinite(number) or number < 0 or (number == 0 and not zero_ok):
        raise HardwareFieldError(key, f"got {value!r}; need a finite number {'>=' if zero_ok else '>'} 0")
    return number


def _top(value: FloatOrRange) -> float:
    return value[1] if isinstance(value, tuple) else value


def check_fields(kind: object, values: Mapping[str, object], *, need_radio: bool) -> dict[str, FloatOrRange]:
    """The validated numbers of a node or tier of ``kind``: every key known and of that kind, every value a
    valid number or range, the kind's required fields present (and ``p_max_w`` when ``need_radio``), and
    ``idle_power_w`` at most ``power_w``. Raises :class:`HardwareFieldError` naming the key at fault."""
    if kind not in KINDS:
        raise HardwareFieldError("kind", f"got {kind!r}; allowed: {', '.join(KINDS)}")
    other = next(k for k in KINDS if k != kind)
    out: dict[str, FloatOrRange] = {}
    for key, value in values.items():
        if key in KIND_FIELDS[other]:
            raise HardwareFieldError(
                key,
                f"`{key}` is a field of {other} hardware, but this node is {kind}",
                hint=f"remove `{key}`, or make the node {other} (kind: {other}, or a {other} profile)",
            )
        if key not in NUMERIC_FIELDS:
            raise HardwareFieldError(
                key, f"`{key}` is not a hardware field; allowed: {', '.join(NUMERIC_FIELDS)}"
            )
        out[key] = check_value(value, key)
    for key in REQUIRED_FIELDS[kind] + (("p_max_w",) if need_radio else ()):
        if key not in out:
            raise HardwareFieldError(key, f"{kind} hardware needs `{key}`", hint=f"give `{key}` or a profile")
    idle, power = out.get("idle_power_w"), out.get("power_w")
    if idle is not None and power is not None and _top(idle) > _top(power):
        raise HardwareFieldError(
            "idle_power_w",
            f"idle power {idle} W exceeds the active power {power} W",
            hint="idle_power_w is the draw while waiting, power_w the draw while computing",
        )
    return out


@dataclass(frozen=True)
class HardwareProfile:
    """Concrete hardware of one node: the fields of its ``kind`` (see :data:`KIND_FIELDS`) and ``p_max_w``
    are set, the other kind's fields are None. Positional order is the historical DVFS one."""

    f_max_hz: float | None = None
    kappa: float | None = None
    cycles_per_flop: float | None = None
    p_max_w: float | None = None
    flops_per_s: float | None = None
    power_w: float | None = None
    idle_power_w: float | None = None
    kind: str = DVFS

    def __post_init__(self) -> None:
        given = {k: getattr(self, k) for k in NUMERIC_FIELDS if getattr(self, k) is not None}
        for key, value in check_fields(self.kind, given, need_radio=True).items():
            if isinstance(value, tuple):
                raise HardwareFieldError(key, f"a node's value must be one number, got the range {value}")
            object.__setattr__(self, key, value)

    @property
    def seconds_per_flop(self) -> float:
        """Seconds per FLOP at full speed: cycles_per_flop / f_max (dvfs) or 1 / flops_per_s."""
        if self.kind == DVFS:
            return _f(self.cycles_per_flop) / _f(self.f_max_hz)
        return 1.0 / _f(self.flops_per_s)

    @property
    def joules_per_flop(self) -> float:
        """Joules per FLOP at full speed: kappa cycles_per_flop f_max^2 (dvfs) or power_w / flops_per_s."""
        if self.kind == DVFS:
            f = _f(self.f_max_hz)
            return _f(self.kappa) * _f(self.cycles_per_flop) * f * f  # inf, not OverflowError, when absurd
        return _f(self.power_w) / _f(self.flops_per_s)


def _f(value: float | None) -> float:
    assert value is not None  # check_fields guarantees the fields of the node's kind
    return value


@dataclass(frozen=True)
class HardwareSpec:
    """Hardware of a tier: each number is fixed or a ``(low, high)`` range drawn uniformly per node.

    A DVFS spec needs ``f_max_hz``; ``kappa`` and ``cycles_per_flop`` default to the paper's values
    (:data:`DVFS_DEFAULTS`). An accelerator spec (``kind="accelerator"``) needs ``flops_per_s`` and
    ``power_w``. Named, sourced specs: ``edgelearn.system.catalog``.
    """

    f_max_hz: FloatOrRange | None = None
    kappa: FloatOrRange | None = None
    cycles_per_flop: FloatOrRange | None = None
    p_max_w: FloatOrRange = DEVICE_P_MAX_W
    flops_per_s: FloatOrRange | None = None
    power_w: FloatOrRange | None = None
    idle_power_w: FloatOrRange | None = None
    kind: str = DVFS

    def __post_init__(self) -> None:
        given: dict[str, Any] = {k: getattr(self, k) for k in NUMERIC_FIELDS if getattr(self, k) is not None}
        if self.kind == DVFS:
            given = {**DVFS_DEFAULTS, **given}
        for key, value in check_fields(self.kind, given, need_radio=True).items():
            object.__setattr__(self, key, value)


def profile_arrays(profiles: list[HardwareProfile]) -> dict[str, np.ndarray]:
    """Columnar view for vectorized cost evaluation, every array indexed by node id: each of
    :data:`NUMERIC_FIELDS` as float64 (NaN where the node's kind has no such field), ``dvfs`` (bool: the
    node is priced by the DVFS model), ``seconds_per_flop`` and ``joules_per_flop`` at full speed."""
    out = {
        name: np.array(
            [np.nan if getattr(p, name) is None else getattr(p, name) for p in profiles], np.float64
        )
        for name in NUMERIC_FIELDS
    }
    out["dvfs"] = np.array([p.kind == DVFS for p in profiles], dtype=bool)
    out["seconds_per_flop"] = np.array([p.seconds_per_flop for p in profiles], dtype=np.float64)
    out["joules_per_flop"] = np.array([p.joules_per_flop for p in profiles], dtype=np.float64)
    return out
