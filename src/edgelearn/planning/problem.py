"""Inputs of the two-stage planning problem (P1) (Lyu et al., arXiv 2404.00836), as plain numpy arrays.

One edge server pre-trains on general data; K devices fine-tune by FEEL with FDMA uploads (our
reconstruction of the paper's system model: equal bandwidth shares, Shannon-rate uploads, DVFS compute).
Channels are static (``gain`` of shape (K,)) or given per fine-tuning round (shape (R, K), e.g. Rayleigh
fading known in advance); with per-round gains a plan can have at most R fine-tuning rounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from edgelearn.errors import BudgetError, ConfigError
from edgelearn.planning.bound import BoundConstants

MAX_BATCH_PRE = 5000
"""Pre-training batch cap D~ <= 5000 (our default)."""

MAX_BATCH_FT = 1000
"""Per-device fine-tuning batch cap B~_k <= min(1000, |D_k|) (our default)."""

ArrayIn = float | Sequence[float] | np.ndarray

_DEVICE_FIELDS = ("f_max", "kappa", "cycles_per_sample", "p_max", "bandwidth", "data_sizes")
_SERVER_FIELDS = ("f_max_server", "kappa_server", "cycles_per_sample_server", "noise_psd", "payload_bits")


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"TwoStageProblem.{name}: got {value!r}; need a number > 0")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ConfigError(f"TwoStageProblem.{name}: got {value!r}; need a finite number > 0")
    return v


def _positive_array(name: str, value: object, shape: tuple[int, ...] | None) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"TwoStageProblem.{name}: got {value!r}; need an array of numbers > 0") from None
    if shape is not None and arr.shape != shape:
        raise ConfigError(
            f"TwoStageProblem.{name}: shape {arr.shape}, expected {shape}",
            hint="give one value per device (use TwoStageProblem.from_arrays to broadcast scalars)",
        )
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        bad = arr[~(np.isfinite(arr) & (arr > 0))][:3] if arr.size else "empty"
        raise ConfigError(f"TwoStageProblem.{name}: values {bad} are not finite numbers > 0")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class TwoStageProblem:
    """Everything the planner needs: server, devices, radio, step sizes, budgets, bound constants.

    Units: Hz, cycles per sample, W, W/Hz, bits, J, s. ``gain`` is the channel power gain h_k (shape (K,)) or
    h_k^(n) per fine-tuning round (shape (R, K)). ``downlink_s`` is a constant delay added to every
    fine-tuning round (default 0: the downlink broadcast is neglected, our reading of the paper's model).
    """

    f_max_server: float
    kappa_server: float
    cycles_per_sample_server: float
    general_size: int
    eta_pre: float
    f_max: np.ndarray
    kappa: np.ndarray
    cycles_per_sample: np.ndarray
    p_max: np.ndarray
    bandwidth: np.ndarray
    gain: np.ndarray
    data_sizes: np.ndarray
    noise_psd: float
    payload_bits: float
    eta_ft: float
    energy_j: float
    delay_s: float
    constants: BoundConstants
    downlink_s: float = 0.0
    max_batch_pre: int = MAX_BATCH_PRE
    max_batch_ft: int = MAX_BATCH_FT

    def __post_init__(self) -> None:
        for name in _SERVER_FIELDS + ("eta_pre", "eta_ft"):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))
        for name in ("energy_j", "delay_s"):
            value = getattr(self, name)
            ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
            if not ok or not math.isfinite(float(value)) or float(value) <= 0:
                raise BudgetError(
                    f"budget.{name}: got {value!r}; a budget must be a finite number > 0",
                    hint="set budget.energy_j (joules) and budget.delay_s (seconds) to positive values",
                )
            object.__setattr__(self, name, float(value))
        for name in ("general_size", "max_batch_pre", "max_batch_ft"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"TwoStageProblem.{name}: got {value!r}; need an integer >= 1")
            object.__setattr__(self, name, int(value))
        dl = self.downlink_s
        if isinstance(dl, bool) or not isinstance(dl, (int, float)) or not math.isfinite(dl) or dl < 0:
            raise ConfigError(f"TwoStageProblem.downlink_s: got {dl!r}; need a finite number >= 0")
        object.__setattr__(self, "downlink_s", float(dl))
        if not isinstance(self.constants, BoundConstants):
            raise ConfigError(
                f"TwoStageProblem.constants: got {type(self.constants).__name__}; need BoundConstants"
            )
        f_max = _positive_array("f_max", self.f_max, None)
        if f_max.ndim != 1:
            raise ConfigError(f"TwoStageProblem.f_max: need a 1-D array (one per device), got {f_max.shape}")
        shape = f_max.shape
        object.__setattr__(self, "f_max", f_max)
        for name in _DEVICE_FIELDS[1:]:
            object.__setattr__(self, name, _positive_array(name, getattr(self, name), shape))
        sizes = self.data_sizes
        if np.any(sizes != np.round(sizes)):
            raise ConfigError("TwoStageProblem.data_sizes: need whole numbers of samples per device")
        gain = _positive_array("gain", self.gain, None)
        if gain.ndim not in (1, 2) or gain.shape[-1] != shape[0]:
            raise ConfigError(
                f"TwoStageProblem.gain: shape {gain.shape}; need (K,) = {shape} for static channels or "
                f"(rounds, K) = (R, {shape[0]}) for per-round gains"
            )
        object.__setattr__(self, "gain", gain)

    @classmethod
    def from_arrays(
        cls,
        *,
        f_max_server: float,
        kappa_server: float,
        cycles_per_sample_server: float,
        general_size: int,
        eta_pre: float,
        f_max: ArrayIn,
        kappa: ArrayIn,
        cycles_per_sample: ArrayIn,
        p_max: ArrayIn,
        bandwidth: ArrayIn,
        gain: ArrayIn,
        data_sizes: ArrayIn,
        noise_psd: float,
        payload_bits: float,
        eta_ft: float,
        energy_j: float,
        delay_s: float,
        constants: BoundConstants,
        downlink_s: float = 0.0,
        max_batch_pre: int = MAX_BATCH_PRE,
        max_batch_ft: int = MAX_BATCH_FT,
        num_devices: int | None = None,
    ) -> TwoStageProblem:
        """Build a problem, broadcasting scalar device values to all K devices.

        K is ``num_devices`` if given, else the length of the device arrays (``gain``'s last axis).
        """
        device_values = {
            "f_max": f_max,
            "kappa": kappa,
            "cycles_per_sample": cycles_per_sample,
            "p_max": p_max,
            "bandwidth": bandwidth,
            "data_sizes": data_sizes,
        }
        sizes = {np.shape(v)[-1] for v in [*device_values.values(), gain] if np.ndim(v) >= 1}
        if num_devices is not None:
            sizes.add(int(num_devices))
        if len(sizes) > 1:
            raise ConfigError(
                f"TwoStageProblem: device arrays disagree on the number of devices: {sorted(sizes)}"
            )
        if not sizes:
            raise ConfigError(
                "TwoStageProblem: cannot tell the number of devices",
                hint="pass num_devices=K or give at least one per-device array",
            )
        k = sizes.pop()
        if k < 1:
            raise ConfigError(f"TwoStageProblem: num_devices={k}; need at least one device")
        broadcast = {}
        for name, value in device_values.items():
            arr = (
                np.asarray(value, dtype=np.float64) if np.ndim(value) else np.full(k, value, dtype=np.float64)
            )
            broadcast[name] = arr
        gain_arr = np.asarray(gain, dtype=np.float64) if np.ndim(gain) else np.full(k, gain, dtype=np.float64)
        return cls(
            f_max_server=f_max_server,
            kappa_server=kappa_server,
            cycles_per_sample_server=cycles_per_sample_server,
            general_size=general_size,
            eta_pre=eta_pre,
            gain=gain_arr,
            noise_psd=noise_psd,
            payload_bits=payload_bits,
            eta_ft=eta_ft,
            energy_j=energy_j,
            delay_s=delay_s,
            constants=constants,
            downlink_s=downlink_s,
            max_batch_pre=max_batch_pre,
            max_batch_ft=max_batch_ft,
            **broadcast,
        )

    # ----------------------------------------------------------------------------------------------------
    @property
    def num_devices(self) -> int:
        """K."""
        return int(self.f_max.shape[0])

    @property
    def per_round(self) -> bool:
        """True when channel gains are given per fine-tuning round (no symmetric reduction possible)."""
        return self.gain.ndim == 2

    @property
    def rounds_available(self) -> int | None:
        """R, the most fine-tuning rounds per-round gains allow (None for static channels)."""
        return int(self.gain.shape[0]) if self.per_round else None

    @property
    def batch_cap_pre(self) -> int:
        """Largest pre-training batch: min(max_batch_pre, |D~|)."""
        return min(self.max_batch_pre, self.general_size)

    @property
    def batch_cap_ft(self) -> np.ndarray:
        """Largest fine-tuning batch per device: min(max_batch_ft, |D_k|)."""
        return np.minimum(float(self.max_batch_ft), self.data_sizes)

    @property
    def bound_valid(self) -> bool:
        """Whether both step sizes satisfy eta <= 1/L, the condition of bound form A (``bound.py``)."""
        inv_l = 1.0 / self.constants.L
        return self.eta_pre <= inv_l and self.eta_ft <= inv_l

    def gains(self, rounds: int | None = None) -> np.ndarray:
        """Channel gains as a (groups, K) array: (1, K) for static channels, the first ``rounds`` rows for
        per-round gains (all R rows if ``rounds`` is None)."""
        if not self.per_round:
            return self.gain[None, :]
        r = self.gain.shape[0] if rounds is None else rounds
        if r > self.gain.shape[0]:
            raise ConfigError(
                f"TwoStageProblem.gain: {r} fine-tuning rounds requested but gains are given for "
                f"{self.gain.shape[0]} rounds",
                hint="provide channel gains for more rounds",
            )
        return self.gain[:r]

    def noise_over_gain(self, gains: np.ndarray) -> np.ndarray:
        """a = N0 W_k / h_k: the power that gives SNR 1, so p = a (2^(q / (W tau)) - 1)."""
        return self.noise_psd * self.bandwidth / gains

    def upload_bit_time(self) -> np.ndarray:
        """c = q / W_k in seconds: upload time at a spectral efficiency of 1 bit/s/Hz."""
        return self.payload_bits / self.bandwidth

    def min_upload_time(self, gains: np.ndarray) -> np.ndarray:
        """tau_min = q / (W_k log2(1 + P_max h_k / (N0 W_k))): the upload time at full power."""
        return self.upload_bit_time() / np.log2(1.0 + self.p_max / self.noise_over_gain(gains))

    def with_budgets(self, energy_j: float | None = None, delay_s: float | None = None) -> TwoStageProblem:
        """A copy with other budgets (for sweeps and the separate-design baseline)."""
        return replace(
            self,
            energy_j=self.energy_j if energy_j is None else energy_j,
            delay_s=self.delay_s if delay_s is None else delay_s,
        )

    def with_constants(self, constants: BoundConstants) -> TwoStageProblem:
        """A copy with other bound constants (e.g. a different shift delta)."""
        return replace(self, constants=constants)
