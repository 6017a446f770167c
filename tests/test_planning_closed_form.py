"""Closed forms of the optimum (our derivation): server clock, device compute/upload split, time <-> power
maps."""

from __future__ import annotations

import numpy as np
import pytest

from edgelearn.planning.closed_form import (
    compute_energy_at_time,
    device_split,
    server_frequency,
    upload_energy,
    upload_energy_slope,
    upload_power,
    upload_time,
)


def test_server_frequency_formula() -> None:
    # (lambda_T / (2 lambda_E kappa))^(1/3) = (2e-3 / (2 * 1e-2 * 1e-28))^(1/3) = (1e27)^(1/3) = 1e9
    assert server_frequency(1e-2, 2e-3, 1e-28, 5e9) == pytest.approx(1e9, rel=1e-12)
    assert server_frequency(1e-2, 2e3, 1e-28, 5e9) == 5e9  # clipped at f_max
    assert server_frequency(0.0, 1.0, 1e-28, 5e9) == 5e9  # energy free: run flat out


def test_upload_power_and_time_are_inverse() -> None:
    # a = 1e-6 W, c = 2 s: tau = 1 s needs p = a (2^2 - 1) = 3e-6 W
    assert float(upload_power(1.0, 1e-6, 2.0)) == pytest.approx(3e-6, rel=1e-12)
    assert float(upload_time(3e-6, 1e-6, 2.0)) == pytest.approx(1.0, rel=1e-12)
    assert float(upload_energy(1.0, 1e-6, 2.0)) == pytest.approx(3e-6, rel=1e-12)
    taus = np.geomspace(0.05, 50.0, 7)
    np.testing.assert_allclose(upload_time(upload_power(taus, 1e-6, 2.0), 1e-6, 2.0), taus, rtol=1e-10)
    # slope against a central difference
    h = 1e-6
    numeric = (upload_energy(taus + h, 1e-6, 2.0) - upload_energy(taus - h, 1e-6, 2.0)) / (2 * h)
    np.testing.assert_allclose(upload_energy_slope(taus, 1e-6, 2.0), numeric, rtol=1e-5)
    # long uploads approach the Shannon limit a c ln2
    assert float(upload_energy(1e6, 1e-6, 2.0)) == pytest.approx(1e-6 * 2.0 * np.log(2.0), rel=1e-5)


@pytest.mark.parametrize("deadline", [0.0219, 0.08, 0.3, 3.0])  # 0.0219: compute at f_max
def test_device_split_matches_dense_grid(deadline: float) -> None:
    cycles, kappa, f_max, a, c = 2e7, 1e-27, 1e9, 4e-5, 0.02
    tau_min = float(c / np.log2(1 + 0.1 / a))  # P_max = 0.1 W
    split = device_split(cycles, deadline, kappa, f_max, a, c, tau_min)
    taus = np.linspace(tau_min, deadline - cycles / f_max, 200_001)
    energy = compute_energy_at_time(cycles, deadline - taus, kappa) + upload_energy(taus, a, c)
    best = int(np.argmin(energy))
    assert bool(split.feasible)
    assert float(split.energy) == pytest.approx(float(energy[best]), rel=1e-7)
    assert float(split.energy) <= float(energy[best]) * (1 + 1e-12)
    assert float(split.t + split.tau) == pytest.approx(deadline, rel=1e-12)
    assert float(split.f) <= f_max * (1 + 1e-12) and float(split.p) <= 0.1 * (1 + 1e-9)
    interior = tau_min < float(split.tau) < deadline - cycles / f_max
    if interior:  # stationarity f^3 = -E_com'(tau) / (2 kappa)
        lhs = float(split.f) ** 3
        rhs = -float(upload_energy_slope(split.tau, a, c)) / (2 * kappa)
        assert lhs == pytest.approx(rhs, rel=1e-6)


def test_device_split_infeasible_deadline() -> None:
    split = device_split(1e9, 0.5, 1e-28, 1e9, 1e-5, 0.1, 0.01)  # 1 s of compute at f_max > deadline
    assert not bool(split.feasible)
    assert float(split.energy) == np.inf
