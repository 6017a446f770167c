"""Cost formulas of edgelearn.system.costs against hand-computed numbers."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

import edgelearn.system as system_pkg
from edgelearn.system.costs import (
    compute_cycles,
    compute_delay,
    compute_energy,
    db_to_linear,
    dbm_to_w,
    linear_to_db,
    path_loss_db,
    shannon_rate,
    transmit_delay,
    transmit_energy,
    w_to_dbm,
)


def test_path_loss_hand_values() -> None:
    # 128.1 + 37.6 * log10(0.1 km) = 128.1 - 37.6
    assert path_loss_db(100.0) == pytest.approx(90.5, abs=1e-12)
    assert path_loss_db(1000.0) == pytest.approx(128.1, abs=1e-12)
    assert path_loss_db(10.0, a=100.0, b=20.0) == pytest.approx(60.0, abs=1e-12)
    out = path_loss_db(np.array([100.0, 1000.0]))
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [90.5, 128.1])


def test_unit_conversions() -> None:
    assert dbm_to_w(20.0) == pytest.approx(0.1, rel=1e-12)
    assert dbm_to_w(30.0) == pytest.approx(1.0, rel=1e-12)
    assert dbm_to_w(-174.0) == pytest.approx(3.981071705534973e-21, rel=1e-12)  # 10**-20.4
    assert w_to_dbm(0.1) == pytest.approx(20.0, abs=1e-12)
    assert db_to_linear(-90.5) == pytest.approx(10**-9.05, rel=1e-12)
    assert db_to_linear(3.0) == pytest.approx(1.9952623149688795, rel=1e-12)
    assert linear_to_db(100.0) == pytest.approx(20.0, abs=1e-12)
    assert isinstance(dbm_to_w(20.0), float)


def test_shannon_rate_hand_values() -> None:
    # SNR = 0.3 * 1e-13 / (1e-20 * 1e6) = 3 -> log2(4) = 2 -> 2 MB/s
    assert shannon_rate(1e6, 0.3, 1e-13, 1e-20) == pytest.approx(2e6, rel=1e-12)
    # SNR = 1 -> rate = B
    assert shannon_rate(5e5, 0.1, 5e-14, 1e-20) == pytest.approx(5e5, rel=1e-12)
    # SNR = 0.1 * 1e-9 / (1e-20 * 1e6) = 1e4 -> 1e6 * log2(10001)
    assert shannon_rate(1e6, 0.1, 1e-9, 1e-20) == pytest.approx(1e6 * 13.287856641, rel=1e-9)
    assert shannon_rate(0.0, 0.1, 1e-9, 1e-20) == 0.0
    assert shannon_rate(1e6, 0.0, 1e-9, 1e-20) == 0.0
    np.testing.assert_allclose(
        shannon_rate(np.array([1e6, 5e5]), 0.3, 1e-13, 1e-20), [2e6, 5e5 * math.log2(7)]
    )


def test_compute_cost_hand_values() -> None:
    assert compute_cycles(4e6, 0.25) == pytest.approx(1e6)
    assert compute_delay(1e6, 1e9) == pytest.approx(1e-3)
    assert compute_energy(1e-28, 1e6, 1e9) == pytest.approx(1e-4, rel=1e-12)
    # halving f doubles the time and quarters the energy
    assert compute_delay(1e6, 0.5e9) == pytest.approx(2e-3)
    assert compute_energy(1e-28, 1e6, 0.5e9) == pytest.approx(2.5e-5, rel=1e-12)
    np.testing.assert_allclose(compute_energy(1e-28, np.array([1e6, 2e6]), 1e9), [1e-4, 2e-4])


def test_transmit_cost_hand_values() -> None:
    assert transmit_delay(1e6, 2e6) == pytest.approx(0.5)
    assert transmit_energy(0.1, 0.5) == pytest.approx(0.05)
    assert transmit_delay(1e6, 0.0) == math.inf
    assert transmit_delay(0.0, 0.0) == 0.0
    np.testing.assert_array_equal(
        transmit_delay(np.array([0.0, 8.0, 8.0]), np.array([0.0, 4.0, 0.0])), [0, 2, np.inf]
    )


def test_system_package_never_imports_torch() -> None:
    folder = Path(system_pkg.__file__).parent
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "torch" for n in names), f"{path.name} imports torch"
