"""The convex cone forms of compute and radio energy that every planner shares (two-stage and tree).

* **DVFS compute** (Lyu et al., arXiv 2404.00836: ``E = kappa C f^2``, ``t = C / f``). With ``x = C / f_max``
  (the time at full clock) and ``t >= x`` the actual time, ``E = kappa f_max^3 x^3 / t^2``: the constraint
  ``s >= x^3 / t^2`` is the power cone ``s^(1/3) t^(2/3) >= x`` and ``E = kappa f_max^3 s``.
* **Radio** (Shannon rate ``W log2(1 + p g / (W N0))``): with ``tau`` the upload time in units of
  ``c = bits / W`` (so ``p = a (2^(1/tau) - 1)``, ``a = W N0 / g``), ``E = p c tau = a c (tau 2^(1/tau) -
  tau)``; ``u >= tau exp(ln 2 / tau)`` is the exponential cone ``(ln 2, tau, u)`` and ``E = a c (u - tau)``.

Both are jointly convex, so programs built from them are solved to global optimality.
"""

from __future__ import annotations

import math

import cvxpy as cp
import numpy as np


def dvfs_energy_cone(s: cp.Expression, t: cp.Expression, x: cp.Expression) -> cp.Constraint:
    """``s >= x^3 / t^2`` elementwise (``s``, ``t``, ``x`` of one shape; ``x``, ``t`` in seconds, or ``x``
    1 and ``t`` in multiples of the time at f_max, so ``s >= 1 / t^2``)."""
    if s.ndim == 0:
        return cp.PowCone3D(s, t, x, 1.0 / 3.0)
    return cp.PowCone3D(cp.vec(s, order="C"), cp.vec(t, order="C"), cp.vec(x, order="C"), 1.0 / 3.0)


def radio_energy_cone(tau: cp.Expression, u: cp.Expression) -> cp.Constraint:
    """``u >= tau 2^(1/tau)`` elementwise (``tau`` in units of bits per Hz of bandwidth)."""
    if tau.ndim == 0:
        return cp.ExpCone(math.log(2.0), tau, u)
    return cp.ExpCone(np.full(tau.size, math.log(2.0)), cp.vec(tau, order="C"), cp.vec(u, order="C"))


def radio_energy_cone_at_full_power(
    tau_hat: cp.Expression, w: cp.Expression, tau_min: np.ndarray
) -> cp.Constraint:
    """The radio cone measured from full power, for links with a high SNR: with ``tau = tau_min tau_hat``
    (``tau_hat >= 1``), ``tau 2^(1/tau) = tau_min 2^(1/tau_min) w`` where ``w >= tau_hat exp(k (1 -
    tau_hat) / tau_hat)``, ``k = ln 2 / tau_min``: the exponential cone ``(k (1 - tau_hat), tau_hat, w)``,
    with ``w = 1`` at p_max. The energy ``a c (tau 2^(1/tau) - tau)`` is then ``a c tau_min (2^(1/tau_min) w
    - tau_hat)``: every number stays near 1, where the plain form's ``2^(1/tau_min)`` (1e7 at 25 bit/s/Hz)
    defeats the solver."""
    k = math.log(2.0) / np.asarray(tau_min, dtype=np.float64)
    th = cp.vec(tau_hat, order="C")
    return cp.ExpCone(cp.multiply(k, 1 - th), th, cp.vec(w, order="C"))
