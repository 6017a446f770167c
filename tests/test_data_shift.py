"""General vs task data: shift kinds, levels, and the exact Wasserstein-1 estimate."""

from __future__ import annotations

import numpy as np
import pytest

from edgelearn.data import load_dataset
from edgelearn.data.dataset import ArrayDataset
from edgelearn.data.shift import apply_shift, make_shift, wasserstein1
from edgelearn.errors import DataError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def test_level_zero_is_the_same_distribution(digits) -> None:
    s = make_shift(digits, "rotation", 0.0, np.random.default_rng(0))
    assert len(s.general) + len(s.task_train) == len(digits.train)
    assert s.task_test is digits.test or np.array_equal(s.task_test.x, digits.test.x)


def test_label_shift_moves_the_prior(digits) -> None:
    rng = np.random.default_rng(0)
    s = make_shift(digits, "label", 1.0, rng)
    assert set(np.unique(s.task_train.y)) <= set(range(5))  # level 1: only the favoured half
    assert len(np.unique(s.general.y)) == 10
    half = make_shift(digits, "label", 0.5, np.random.default_rng(0)).task_train
    share = np.mean(half.y < 5)
    assert share == pytest.approx(0.75, abs=0.02)  # 0.5 * 0.5 + 0.5 * 1


def test_rotation_by_hand() -> None:
    x = np.zeros((1, 1, 3, 3), np.float32)
    x[0, 0, 0, 1] = 1.0  # top middle
    out = apply_shift(ArrayDataset(x, np.array([0])), "rotation", 1.0, 10, np.random.default_rng(0))
    # 90 degrees counter-clockwise in the (H, W) plane: the top-middle pixel moves to the middle-left
    assert out.x[0, 0, 1, 0] == pytest.approx(1.0)
    assert out.x[0, 0, 0, 1] == pytest.approx(0.0)


def test_w1_grows_with_the_shift(digits) -> None:
    w = []
    for level in (0.0, 0.5, 1.0):
        s = make_shift(digits, "rotation", level, np.random.default_rng(1))
        w.append(wasserstein1(s.general, s.task_train, np.random.default_rng(2), samples=300, label_cost=0.0))
    assert w[0] < w[1] < w[2]


def test_w1_exact_on_a_tiny_case() -> None:
    a = ArrayDataset(np.array([[0.0], [1.0]], np.float32), np.array([0, 1]))
    b = ArrayDataset(np.array([[3.0], [1.5]], np.float32), np.array([0, 1]))
    # optimal matching 0->1.5 (label cost 2) + 1->3 (label cost 2) vs 0->3 + 1->1.5 (no label cost):
    # with label_cost 2: min((1.5 + 2) + (2 + 2), 3 + 0.5) / 2 = 3.5 / 2
    assert wasserstein1(a, b, np.random.default_rng(0), label_cost=2.0) == pytest.approx(1.75)


def test_bad_shift_inputs(digits) -> None:
    with pytest.raises(DataError, match="not one of"):
        make_shift(digits, "blur", 0.1, np.random.default_rng(0))
    with pytest.raises(DataError, match="outside"):
        make_shift(digits, "noise", 1.5, np.random.default_rng(0))
    with pytest.raises(DataError, match="needs image data"):
        apply_shift(
            ArrayDataset(np.zeros((2, 3), np.float32), np.array([0, 1])),
            "rotation",
            0.5,
            2,
            np.random.default_rng(0),
        )
