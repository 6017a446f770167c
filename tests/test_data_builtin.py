"""Digits and synthetic bundles: shapes, normalization, stratified split and determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.datasets import load_digits

from edgelearn.data.builtin import load_digits_bundle, load_synthetic_bundle, stratified_split
from edgelearn.data.dataset import ArrayDataset, channel_stats
from edgelearn.errors import DataError

# Class counts of scikit-learn's digits (UCI optdigits test set), 1797 in all.
DIGITS_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_digits_shapes_and_split_sizes() -> None:
    b = load_digits_bundle(seed=0)
    # Per class round(0.2 * n): 36+36+35+37+36+36+36+36+35+36 = 359 test samples.
    assert len(b.test) == 359
    assert len(b.train) == 1797 - 359
    assert b.train.x.shape == (1438, 1, 8, 8) and b.test.x.shape == (359, 1, 8, 8)
    assert b.train.x.dtype == np.float32 and b.train.y.dtype == np.int64
    assert b.input_shape == (1, 8, 8)
    assert b.num_classes == 10 and b.classes == [str(d) for d in range(10)]
    assert "load_digits" in b.source
    expected_test = [math.floor(n * 0.2 + 0.5) for n in DIGITS_CLASS_COUNTS]
    assert np.bincount(b.test.y, minlength=10).tolist() == expected_test
    assert (np.bincount(b.train.y, minlength=10) + expected_test).tolist() == DIGITS_CLASS_COUNTS


def test_digits_normalization_uses_train_stats() -> None:
    b = load_digits_bundle(seed=0)
    assert len(b.mean) == 1 and len(b.std) == 1
    assert abs(float(b.train.x.mean())) < 1e-5
    assert float(b.train.x.std()) == pytest.approx(1.0, abs=1e-4)
    # Undoing the transform must give the original integer intensities 0..16 (scaled by 1/16).
    for split in (b.train, b.test):
        raw = (split.x.astype(np.float64) * b.std[0] + b.mean[0]) * 16.0
        assert np.allclose(raw, np.round(raw), atol=1e-3)
        assert raw.min() > -1e-3 and raw.max() < 16 + 1e-3
    # The stored mean is that of the train pixels /16 (digits' overall mean is ~4.88/16).
    all_pixels = load_digits().images / 16.0
    assert b.mean[0] == pytest.approx(all_pixels.mean(), abs=0.01)


def test_digits_deterministic_per_seed() -> None:
    a, b, c = load_digits_bundle(seed=3), load_digits_bundle(seed=3), load_digits_bundle(seed=4)
    assert np.array_equal(a.train.x, b.train.x) and np.array_equal(a.test.y, b.test.y)
    assert not np.array_equal(a.train.x, c.train.x)


def test_stratified_split_is_a_disjoint_cover() -> None:
    labels = np.array([0] * 5 + [1] * 2 + [2] * 1)
    train, test = stratified_split(labels, 0.2, np.random.default_rng(0))
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(8))
    # class 0: round(1.0)=1 test; class 1: round(0.4)=0 -> raised to 1; class 2 (1 sample): 0 test.
    assert np.bincount(labels[test], minlength=3).tolist() == [1, 1, 0]
    with pytest.raises(DataError, match="test_fraction"):
        stratified_split(labels, 1.0, np.random.default_rng(0))


def test_synthetic_sizes_balance_and_determinism() -> None:
    a = load_synthetic_bundle(seed=7, num_train=1000, num_test=300)
    b = load_synthetic_bundle(seed=7, num_train=1000, num_test=300)
    c = load_synthetic_bundle(seed=8, num_train=1000, num_test=300)
    assert a.train.x.shape == (1000, 1, 8, 8) and a.test.x.shape == (300, 1, 8, 8)
    assert np.bincount(a.train.y).tolist() == [100] * 10
    assert np.bincount(a.test.y).tolist() == [30] * 10
    assert np.array_equal(a.train.x, b.train.x) and np.array_equal(a.test.y, b.test.y)
    assert not np.array_equal(a.train.x, c.train.x)
    assert abs(float(a.train.x.mean())) < 1e-5


def test_synthetic_train_set_does_not_depend_on_num_test() -> None:
    a = load_synthetic_bundle(seed=1, num_train=200, num_test=10, input_shape=(16,))
    b = load_synthetic_bundle(seed=1, num_train=200, num_test=50, input_shape=(16,))
    # Normalization uses train stats only, so even the normalized train arrays agree.
    assert np.array_equal(a.train.x, b.train.x) and a.mean == b.mean
    assert a.train.x.shape == (200, 16) and a.input_shape == (16,)


def test_synthetic_is_learnable_but_not_trivial() -> None:
    b = load_synthetic_bundle(seed=0, num_train=2000, num_test=1000)
    xtr = b.train.x.reshape(len(b.train), -1)
    xte = b.test.x.reshape(len(b.test), -1)
    centroids = np.stack([xtr[b.train.y == k].mean(axis=0) for k in range(b.num_classes)])
    dist = ((xte[:, None, :] - centroids[None]) ** 2).sum(axis=2)
    acc = float(np.mean(dist.argmin(axis=1) == b.test.y))
    assert 0.5 < acc < 0.97  # chance is 0.1


def test_synthetic_million_samples_is_vectorized() -> None:
    b = load_synthetic_bundle(seed=0, num_train=1_000_000, num_test=10, num_classes=4, input_shape=(8,))
    assert b.train.x.shape == (1_000_000, 8) and b.train.x.dtype == np.float32
    assert np.bincount(b.train.y).tolist() == [250_000] * 4
    assert abs(float(b.train.x.mean(dtype=np.float64))) < 1e-4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_train": 0},
        {"num_classes": 1},
        {"noise": 0.0},
        {"input_shape": (1, 0, 8)},
    ],
)
def test_synthetic_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(DataError):
        load_synthetic_bundle(seed=0, **kwargs)  # type: ignore[arg-type]


def test_channel_stats_hand_computed() -> None:
    # Two channels: channel 0 holds 0,2 -> mean 1, std 1; channel 1 holds 4,4 -> mean 4, std 0.
    x = np.array([[[[0.0]], [[4.0]]], [[[2.0]], [[4.0]]]], dtype=np.float32)
    mean, std = channel_stats(x, chunk_rows=1)
    assert mean.tolist() == [1.0, 4.0] and std.tolist() == [1.0, 0.0]


def test_array_dataset_validation_and_subset() -> None:
    ds = ArrayDataset(np.arange(12, dtype=np.float64).reshape(6, 2), np.array([0, 1, 0, 1, 0, 1]))
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64 and len(ds) == 6
    sub = ds.subset([5, 0])
    assert sub.x.tolist() == [[10.0, 11.0], [0.0, 1.0]] and sub.y.tolist() == [1, 0]
    with pytest.raises(DataError, match="out of range"):
        ds.subset([6])
    with pytest.raises(DataError, match="one label per sample"):
        ArrayDataset(np.zeros((3, 2)), np.zeros(2, dtype=np.int64))
