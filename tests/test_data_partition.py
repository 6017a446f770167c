"""Partitions across devices: disjoint covers, min_size guarantee, label skew, shards, and summaries."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgelearn.data.partition import (
    partition,
    partition_dirichlet,
    partition_iid,
    partition_shards,
    partition_stats,
    summarize_partition,
    validate_partition,
)
from edgelearn.errors import DataError


def _labels(per_class: int, num_classes: int = 10) -> np.ndarray:
    return np.repeat(np.arange(num_classes), per_class)


def _assert_cover(parts: list[np.ndarray], n: int) -> None:
    assert all(p.dtype == np.int64 for p in parts)
    flat = np.concatenate(parts)
    assert flat.size == n
    assert np.array_equal(np.sort(flat), np.arange(n))


def _mean_label_entropy(parts: list[np.ndarray], labels: np.ndarray) -> float:
    out = []
    for row in summarize_partition(parts, labels, int(labels.max()) + 1):
        hist = np.array(row["histogram"], dtype=np.float64)
        p = hist[hist > 0] / hist.sum()
        out.append(float(-(p * np.log2(p)).sum()))
    return float(np.mean(out))


def test_iid_sizes_and_determinism() -> None:
    parts = partition_iid(10, 3, np.random.default_rng(0))
    assert [p.size for p in parts] == [4, 3, 3]
    _assert_cover(parts, 10)
    again = partition_iid(10, 3, np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    with pytest.raises(DataError, match="at least one"):
        partition_iid(2, 3, np.random.default_rng(0))


def test_dirichlet_cover_and_min_size_after_repair() -> None:
    labels = _labels(10)  # 100 samples
    # Very small alpha with a single draw almost surely leaves devices short: the repair must fix it.
    parts = partition_dirichlet(labels, 10, 0.01, np.random.default_rng(0), min_size=8, max_tries=1)
    _assert_cover(parts, 100)
    assert min(p.size for p in parts) >= 8


def test_dirichlet_impossible_min_size_fails_fast() -> None:
    labels = np.zeros(1_000_000, dtype=np.int64)
    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        partition_dirichlet(labels, 1001, 0.5, np.random.default_rng(0), min_size=1000)
    assert time.perf_counter() - start < 0.5
    msg = str(err.value)
    assert "1000 x 1001 devices = 1001000" in msg and "1000000" in msg and "lower" in msg


def test_dirichlet_small_alpha_is_more_skewed() -> None:
    labels = _labels(500)  # 10 classes x 500
    skewed = partition_stats(partition_dirichlet(labels, 20, 0.1, np.random.default_rng(1)), labels, 10)
    near_iid = partition_stats(partition_dirichlet(labels, 20, 100.0, np.random.default_rng(1)), labels, 10)
    assert near_iid["mean_classes_per_device"] == 10.0
    assert skewed["mean_classes_per_device"] < 7.0
    # Mean per-device label entropy: IID is log2(10) = 3.32 bits; alpha = 0.1 gives about 1.2-1.5 bits.
    assert _mean_label_entropy(partition_dirichlet(labels, 20, 100.0, np.random.default_rng(1)), labels) > 3.2
    assert _mean_label_entropy(partition_dirichlet(labels, 20, 0.1, np.random.default_rng(1)), labels) < 2.0
    assert skewed["max_size"] - skewed["min_size"] > near_iid["max_size"] - near_iid["min_size"]


def test_dirichlet_rejects_bad_alpha() -> None:
    with pytest.raises(DataError, match="alpha"):
        partition_dirichlet(_labels(2), 2, 0.0, np.random.default_rng(0))


def test_shards_pathological_split() -> None:
    labels = np.random.default_rng(3).permutation(_labels(20))  # 200 samples, 20 per class, shuffled
    parts = partition_shards(labels, 10, 2, np.random.default_rng(0))
    _assert_cover(parts, 200)
    # 20 shards of 10 samples; shard boundaries align with the 20-sample class blocks, so each shard is
    # single-class and each device sees at most 2 classes.
    assert [p.size for p in parts] == [20] * 10
    assert all(np.unique(labels[p]).size <= 2 for p in parts)
    with pytest.raises(DataError, match="shards"):
        partition_shards(labels, 101, 2, np.random.default_rng(0))


def test_dispatcher() -> None:
    labels = _labels(6, 3)
    rng = np.random.default_rng(0)
    assert [p.size for p in partition("iid", labels, 4, rng)] == [5, 5, 4, 4]
    _assert_cover(partition("dirichlet", labels, 3, rng, alpha=0.5, min_size=2), 18)
    _assert_cover(partition("shards", labels, 3, rng, shards_per_device=None), 18)  # None -> default 2
    with pytest.raises(DataError, match="partition.method 'pathological' is not a registered partitioner"):
        partition("pathological", labels, 3, rng)
    with pytest.raises(DataError, match="does not take option"):
        partition("iid", labels, 3, rng, alpha=1.0)
    with pytest.raises(DataError, match="needs alpha"):
        partition("dirichlet", labels, 3, rng)


def test_summaries_hand_computed() -> None:
    labels = np.array([0, 0, 1, 2, 2, 2])
    parts = [np.array([0, 1, 3]), np.array([2, 4, 5])]
    rows = summarize_partition(parts, labels, 3)
    assert rows == [
        {"device": 0, "size": 3, "classes_present": 2, "histogram": [2, 0, 1]},
        {"device": 1, "size": 3, "classes_present": 2, "histogram": [0, 1, 2]},
    ]
    stats = partition_stats(parts, labels, 3)
    assert stats == {
        "num_devices": 2.0,
        "min_size": 3.0,
        "mean_size": 3.0,
        "max_size": 3.0,
        "mean_classes_per_device": 2.0,
    }


def test_validate_partition() -> None:
    validate_partition([np.array([0, 2]), np.array([1])], 3)
    with pytest.raises(DataError, match="1 missing, 1 repeated"):
        validate_partition([np.array([0, 1]), np.array([1])], 3)
    with pytest.raises(DataError, match="outside"):
        validate_partition([np.array([0, 3])], 3)


@settings(max_examples=50, deadline=None)
@given(
    num_samples=st.integers(1, 300),
    num_devices=st.integers(1, 30),
    num_classes=st.integers(1, 12),
    alpha=st.floats(0.001, 1000.0),
    min_frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_dirichlet_property_disjoint_cover(
    num_samples: int, num_devices: int, num_classes: int, alpha: float, min_frac: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_samples)
    min_size = int(min_frac * (num_samples // num_devices))
    if num_devices > num_samples:
        if min_size * num_devices <= num_samples:
            parts = partition_dirichlet(labels, num_devices, alpha, rng, min_size=min_size)
            validate_partition(parts, num_samples)
        return
    parts = partition_dirichlet(labels, num_devices, alpha, rng, min_size=min_size)
    assert len(parts) == num_devices
    validate_partition(parts, num_samples)
    assert min(p.size for p in parts) >= min_size


@settings(max_examples=50, deadline=None)
@given(
    num_samples=st.integers(1, 300),
    num_devices=st.integers(1, 30),
    shards=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_iid_and_shards_property_disjoint_cover(
    num_samples: int, num_devices: int, shards: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, num_samples)
    if num_devices <= num_samples:
        parts = partition_iid(num_samples, num_devices, rng)
        validate_partition(parts, num_samples)
        assert max(p.size for p in parts) - min(p.size for p in parts) <= 1
    if num_devices * shards <= num_samples:
        parts = partition_shards(labels, num_devices, shards, rng)
        validate_partition(parts, num_samples)
        assert len(parts) == num_devices
