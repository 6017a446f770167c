"""Closed-form pieces of the optimum and the time <-> frequency/power maps of the exact convex program.

Both are our derivations (not in Lyu et al., arXiv 2404.00836): with the change of variables from
(clock, power) to (compute time, upload time), the inner problem at fixed (M, N) is convex (``convex.py``),
and its stationarity conditions give the forms below.

All functions are vectorised over numpy arrays (broadcasting). Notation: a = N0 W / h (power at SNR 1),
c = q / W (upload time at 1 bit/s/Hz), so an upload of duration tau needs p = a (2^(c / tau) - 1) and
costs E_com = p tau; ``cycles`` = C B is the compute work of one round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LN2 = float(np.log(2.0))

BISECTION_STEPS = 80
"""Bisection steps of :func:`device_split`; 80 halvings shrink any bracket below 1e-24 of its width."""


def server_frequency(lambda_energy: float, lambda_delay: float, kappa: float, f_max: float) -> float:
    """Optimal ES clock f~* = min(f~_max, (lambda_T / (2 lambda_E kappa~))^(1/3)) (our derivation).

    ``lambda_energy`` and ``lambda_delay`` are the multipliers of the energy (per J) and delay (per s)
    budgets; the result does not depend on the batch size.
    """
    if lambda_energy <= 0:
        return float(f_max)
    return float(min(f_max, (lambda_delay / (2.0 * lambda_energy * kappa)) ** (1.0 / 3.0)))


def upload_power(tau: np.ndarray | float, a: np.ndarray | float, c: np.ndarray | float) -> np.ndarray:
    """Transmit power that uploads in ``tau`` seconds: p = a (2^(c / tau) - 1) (inverse Shannon rate)."""
    return np.asarray(a) * np.expm1(LN2 * np.asarray(c) / np.asarray(tau))


def upload_time(p: np.ndarray | float, a: np.ndarray | float, c: np.ndarray | float) -> np.ndarray:
    """Upload time at power ``p``: tau = c / log2(1 + p / a) = q / R (Shannon rate)."""
    return np.asarray(c) * LN2 / np.log1p(np.asarray(p) / np.asarray(a))


def upload_energy(tau: np.ndarray | float, a: np.ndarray | float, c: np.ndarray | float) -> np.ndarray:
    """Upload energy as a function of upload time: E_com = a tau (2^(c / tau) - 1), convex in tau."""
    return np.asarray(tau) * upload_power(tau, a, c)


def upload_energy_slope(tau: np.ndarray | float, a: np.ndarray | float, c: np.ndarray | float) -> np.ndarray:
    """dE_com/dtau = a [2^(c/tau) (1 - c ln2 / tau) - 1] (< 0), written with expm1 to avoid cancellation."""
    z = LN2 * np.asarray(c) / np.asarray(tau)
    return np.asarray(a) * (np.expm1(z) - z * np.exp(z))


def compute_energy_at_time(
    cycles: np.ndarray | float, t: np.ndarray | float, kappa: np.ndarray | float
) -> np.ndarray:
    """Compute energy when ``cycles`` must finish in ``t`` seconds: kappa cycles^3 / t^2 (f = cycles / t)."""
    cyc = np.asarray(cycles, dtype=np.float64)
    return np.asarray(kappa) * cyc**3 / np.asarray(t, dtype=np.float64) ** 2


@dataclass(frozen=True)
class DeviceSplit:
    """Energy-optimal split of a round deadline into compute and upload time, per device (and round)."""

    tau: np.ndarray
    """Upload time, s."""
    t: np.ndarray
    """Compute time, s (tau + t = deadline where feasible)."""
    f: np.ndarray
    """Clock frequency, Hz."""
    p: np.ndarray
    """Transmit power, W."""
    energy: np.ndarray
    """Compute plus upload energy, J (inf where infeasible)."""
    feasible: np.ndarray
    """Whether the deadline can be met within f_max and P_max."""


def device_split(
    cycles: np.ndarray | float,
    deadline: np.ndarray | float,
    kappa: np.ndarray | float,
    f_max: np.ndarray | float,
    a: np.ndarray | float,
    c: np.ndarray | float,
    tau_min: np.ndarray | float,
) -> DeviceSplit:
    """Minimise kappa cycles^3 / t^2 + E_com(tau) s.t. t + tau <= deadline, t >= cycles / f_max,
    tau >= tau_min (our derivation).

    The device finishes exactly at the deadline; the split solves the stationarity condition
    2 kappa (cycles / t)^3 = -dE_com/dtau, i.e. f^3 = -E_com'(tau) / (2 kappa), by bisection on tau.
    """
    cyc, dl, kap, fm, aa, cc, tmin = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (cycles, deadline, kappa, f_max, a, c, tau_min))
    )
    lo = tmin.copy()
    hi = dl - cyc / fm
    feasible = hi >= lo
    hi = np.where(feasible, hi, lo)

    def slope(tau: np.ndarray) -> np.ndarray:
        t = np.maximum(dl - tau, np.finfo(np.float64).tiny)
        with np.errstate(over="ignore", invalid="ignore"):  # only infeasible entries can overflow
            return 2.0 * kap * (cyc / t) ** 3 + upload_energy_slope(tau, aa, cc)

    left, right = lo.copy(), hi.copy()
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (left + right)
        up = slope(mid) > 0
        right = np.where(up, mid, right)
        left = np.where(up, left, mid)
    tau = 0.5 * (left + right)
    tau = np.where(slope(lo) >= 0, lo, tau)
    tau = np.where(slope(hi) <= 0, hi, tau)
    tau = np.clip(tau, lo, hi)
    t = np.where(feasible, dl - tau, np.inf)
    f = np.minimum(np.where(feasible, cyc / t, fm), fm)
    p = np.where(feasible, upload_power(tau, aa, cc), np.inf)
    energy = np.where(feasible, kap * cyc * f**2 + p * tau, np.inf)
    return DeviceSplit(tau=tau, t=t, f=f, p=p, energy=energy, feasible=feasible)
