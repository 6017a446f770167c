"""Pure cost formulas (compute/transmit delay and energy, Shannon rate, unit conversions).

Every function accepts Python floats or numpy arrays (broadcasting) and returns a float for scalar input,
an array otherwise (except :func:`compute_cost`, which always returns arrays). Formulas follow the system
model of two-stage edge learning (Lyu et al., arXiv:2404.00836) as we reconstruct it in the usual FEEL form:
DVFS compute (delay cycles / f, energy kappa cycles f^2) and Shannon-rate uploads (delay q / R, energy
p q / R); accelerators are priced by sustained FLOP/s and active power (``system/hardware.py``).
"""

from __future__ import annotations

import numpy as np

ArrayLike = float | np.ndarray

PATH_LOSS_A_DB = 128.1
"""Path-loss intercept at 1 km, dB: 128.1 + 37.6 log10(d_km), the 3GPP TR 36.814 macro-cell model that
FEEL simulations commonly use."""

PATH_LOSS_B_DB = 37.6
"""Path-loss slope, dB per decade of distance (3GPP TR 36.814, as above)."""

METRES_PER_KM = 1000.0
MW_PER_W_DB = 30.0
"""dBm = dBW + 30."""

BITS_PER_BYTE = 8


def _out(x: np.ndarray) -> ArrayLike:
    """0-d results become Python floats; arrays pass through."""
    return float(x) if np.ndim(x) == 0 else x


def compute_cycles(flops: ArrayLike, cycles_per_flop: ArrayLike) -> ArrayLike:
    """CPU cycles needed for ``flops`` floating-point operations."""
    return _out(np.multiply(flops, cycles_per_flop, dtype=np.float64))


def compute_delay(cycles: ArrayLike, f_hz: ArrayLike) -> ArrayLike:
    """Seconds to run ``cycles`` at clock ``f_hz``: cycles / f (DVFS model)."""
    return _out(np.divide(cycles, f_hz, dtype=np.float64))


def compute_energy(kappa: ArrayLike, cycles: ArrayLike, f_hz: ArrayLike) -> ArrayLike:
    """Joules of dynamic CPU power for ``cycles`` at ``f_hz``: kappa * cycles * f^2 (DVFS model)."""
    f = np.asarray(f_hz, dtype=np.float64)
    return _out(np.asarray(kappa, dtype=np.float64) * np.asarray(cycles, dtype=np.float64) * f * f)


def compute_cost(
    flops: np.ndarray,
    work_per_flop: np.ndarray,
    rate: np.ndarray,
    kappa: np.ndarray,
    power_w: np.ndarray,
    dvfs: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(seconds, joules) of ``flops`` on nodes of either kind, elementwise in one vectorized pass.

    A node does work = flops x work_per_flop at ``rate`` work per second, so seconds = work / rate. DVFS
    nodes (``dvfs`` True): work is CPU cycles (work_per_flop = cycles_per_flop), rate the clock f, and
    joules = kappa x cycles x f^2 (DVFS model), the same operations as :func:`compute_cycles`,
    :func:`compute_delay` and :func:`compute_energy`, so results match them bit for bit. Accelerators:
    work_per_flop = 1, rate = flops_per_s, joules = power_w x seconds. The other kind's coefficient
    (``power_w`` of a DVFS node, ``kappa`` of an accelerator) is ignored, NaN allowed.
    """
    work = np.multiply(flops, work_per_flop, dtype=np.float64)
    seconds = np.divide(work, rate, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # the unused kind's NaN coefficients
        dvfs_joules = np.asarray(kappa, dtype=np.float64) * work * rate * rate
        accel_joules = np.multiply(power_w, seconds, dtype=np.float64)
    return seconds, np.where(dvfs, dvfs_joules, accel_joules)


def transmit_delay(bits: ArrayLike, rate_bps: ArrayLike) -> ArrayLike:
    """Seconds to send ``bits`` at ``rate_bps``: bits / rate.

    Zero bits take zero seconds whatever the rate; a positive payload over a zero rate takes ``inf``
    (an unusable link), which callers should treat as a dropped/infeasible transmission.
    """
    b = np.asarray(bits, dtype=np.float64)
    r = np.asarray(rate_bps, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _out(np.where(b == 0, 0.0, b / r))


def transmit_energy(power_w: ArrayLike, seconds: ArrayLike) -> ArrayLike:
    """Joules radiated at ``power_w`` for ``seconds``: p * t (E = p q / R for an upload of q bits)."""
    return _out(np.multiply(power_w, seconds, dtype=np.float64))


def shannon_rate(
    bandwidth_hz: ArrayLike, power_w: ArrayLike, gain: ArrayLike, noise_psd_w_per_hz: ArrayLike
) -> ArrayLike:
    """Achievable rate in bit/s: B log2(1 + p g / (N0 B)); zero bandwidth gives zero rate."""
    b = np.asarray(bandwidth_hz, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = (
            np.asarray(power_w, dtype=np.float64)
            * np.asarray(gain, dtype=np.float64)
            / (np.asarray(noise_psd_w_per_hz, dtype=np.float64) * b)
        )
        return _out(np.where(b == 0, 0.0, b * np.log2(1.0 + snr)))


def dbm_to_w(dbm: ArrayLike) -> ArrayLike:
    """Convert dBm to watts: 10^((dBm - 30) / 10)."""
    return _out(np.power(10.0, (np.asarray(dbm, dtype=np.float64) - MW_PER_W_DB) / 10.0))


def w_to_dbm(watts: ArrayLike) -> ArrayLike:
    """Convert watts to dBm: 10 log10(W) + 30."""
    return _out(10.0 * np.log10(np.asarray(watts, dtype=np.float64)) + MW_PER_W_DB)


def db_to_linear(db: ArrayLike) -> ArrayLike:
    """Convert a power ratio in dB to linear: 10^(dB / 10)."""
    return _out(np.power(10.0, np.asarray(db, dtype=np.float64) / 10.0))


def linear_to_db(ratio: ArrayLike) -> ArrayLike:
    """Convert a linear power ratio to dB: 10 log10(ratio)."""
    return _out(10.0 * np.log10(np.asarray(ratio, dtype=np.float64)))


def path_loss_db(distance_m: ArrayLike, a: float = PATH_LOSS_A_DB, b: float = PATH_LOSS_B_DB) -> ArrayLike:
    """Large-scale path loss in dB at ``distance_m`` metres: a + b log10(d / 1000) (the formula uses km)."""
    return _out(a + b * np.log10(np.asarray(distance_m, dtype=np.float64) / METRES_PER_KM))
