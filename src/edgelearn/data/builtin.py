"""Datasets that need no files: scikit-learn's bundled 8x8 digits and seeded synthetic Gaussian clusters."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from edgelearn.data.dataset import DatasetBundle, make_bundle
from edgelearn.errors import DataError
from edgelearn.seeding import Seeds

# scikit-learn's digits are 8x8 images with integer intensities 0..16 (UCI optdigits preprocessing).
DIGITS_MAX_VALUE = 16.0
DIGITS_SHAPE = (1, 8, 8)
DIGITS_CLASSES = [str(d) for d in range(10)]
DEFAULT_TEST_FRACTION = 0.2

# Synthetic defaults: a small set that trains in seconds on a CPU.
DEFAULT_SYNTHETIC_TRAIN = 2000
DEFAULT_SYNTHETIC_TEST = 500
DEFAULT_SYNTHETIC_CLASSES = 10
DEFAULT_SYNTHETIC_SHAPE = (1, 8, 8)
# Class centres lie at distance ~class_sep from the origin (so ~1.41*class_sep apart) in noise-std units.
# With noise 1.0 and 64 features, class_sep 3.0 gives a linear model ~80% test accuracy: learnable, with
# headroom (measured with scikit-learn LogisticRegression on 2000/500 samples, seeds 0-2).
DEFAULT_CLASS_SEP = 3.0
DEFAULT_NOISE = 1.0
# Rows generated per step so a 1,000,000-sample set is built without a second full-size temporary.
SYNTHETIC_CHUNK_ROWS = 65_536


def stratified_split(
    labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) index arrays holding ~``test_fraction`` of every class in the test part.

    Each class with at least two samples keeps at least one sample on both sides.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(
            f"test_fraction must be strictly between 0 and 1, got {test_fraction}",
            hint="use e.g. data.test_fraction: 0.2",
        )
    train_parts: list[np.ndarray] = []
    test_parts: list[np.ndarray] = []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_test = math.floor(idx.size * test_fraction + 0.5)
        if idx.size >= 2:
            n_test = min(max(n_test, 1), idx.size - 1)
        test_parts.append(idx[:n_test])
        train_parts.append(idx[n_test:])
    train = np.sort(np.concatenate(train_parts)).astype(np.int64)
    test = np.sort(np.concatenate(test_parts)).astype(np.int64)
    return train, test


DIGITS_CACHE_NAME = "digits-v1"
"""Cache entry of the normalized digits arrays; bump the suffix if :func:`digits_arrays_fresh` changes."""


def digits_arrays_fresh() -> dict[str, np.ndarray]:
    """All 1797 digits from scikit-learn: ``images`` float32 (N, 1, 8, 8) in [0, 1], ``labels`` int64 (N,)."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = (np.asarray(raw.images, dtype=np.float32) / DIGITS_MAX_VALUE).reshape(-1, *DIGITS_SHAPE)
    return {"images": images, "labels": np.asarray(raw.target, dtype=np.int64)}


def digits_arrays() -> dict[str, np.ndarray]:
    """:func:`digits_arrays_fresh`, read from the user cache after the first call (see ``edgelearn.cache``).

    Importing scikit-learn (and much of SciPy) costs a short run about a second; the cached file holds the
    same arrays bit for bit and loads in milliseconds.
    """
    from edgelearn.cache import cached_arrays

    return cached_arrays(DIGITS_CACHE_NAME, digits_arrays_fresh)


def load_digits_bundle(seed: int, test_fraction: float = DEFAULT_TEST_FRACTION) -> DatasetBundle:
    """scikit-learn's 1797 8x8 digits (bundled, no download), split per class deterministically by seed.

    The arrays come from the user cache when present (scikit-learn is imported only to build it).
    """
    arrays = digits_arrays()
    images, labels = arrays["images"], arrays["labels"]
    train_idx, test_idx = stratified_split(labels, test_fraction, Seeds(seed).rng("data", 0))
    return make_bundle(
        "digits",
        images[train_idx],
        labels[train_idx],
        images[test_idx],
        labels[test_idx],
        num_classes=len(DIGITS_CLASSES),
        classes=list(DIGITS_CLASSES),
        source=f"scikit-learn load_digits (test_fraction={test_fraction}, seed={seed})",
    )


def _check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(d) for d in input_shape)
    if not shape or any(d <= 0 for d in shape):
        raise DataError(
            f"synthetic input_shape must be a non-empty tuple of positive sizes, got {tuple(input_shape)}",
            hint="use e.g. [1, 8, 8] for image-like data or [32] for flat features",
        )
    return shape


def _draw_split(
    rng: np.random.Generator, n: int, centers: np.ndarray, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` balanced, shuffled samples around ``centers`` with isotropic Gaussian ``noise``."""
    num_classes, dim = centers.shape
    y = rng.permutation(np.arange(n, dtype=np.int64) % num_classes)
    x = np.empty((n, dim), dtype=np.float32)
    rng.standard_normal(dtype=np.float32, out=x)
    c32 = centers.astype(np.float32)
    for start in range(0, n, SYNTHETIC_CHUNK_ROWS):
        block = x[start : start + SYNTHETIC_CHUNK_ROWS]
        block *= np.float32(noise)
        block += c32[y[start : start + SYNTHETIC_CHUNK_ROWS]]
    return x, y


def load_synthetic_bundle(
    seed: int,
    num_train: int = DEFAULT_SYNTHETIC_TRAIN,
    num_test: int = DEFAULT_SYNTHETIC_TEST,
    num_classes: int = DEFAULT_SYNTHETIC_CLASSES,
    input_shape: Sequence[int] = DEFAULT_SYNTHETIC_SHAPE,
    class_sep: float = DEFAULT_CLASS_SEP,
    noise: float = DEFAULT_NOISE,
) -> DatasetBundle:
    """Seeded Gaussian class clusters of any size (vectorized; 1,000,000 samples of 64 floats ~ 256 MiB).

    Centres, train and test come from separate seed streams, so the train set does not change with num_test.
    """
    shape = _check_shape(input_shape)
    if int(num_train) < 1 or int(num_test) < 0:
        raise DataError(
            f"synthetic needs num_train >= 1 and num_test >= 0, "
            f"got num_train={num_train}, num_test={num_test}"
        )
    if int(num_classes) < 2:
        raise DataError(f"synthetic needs num_classes >= 2, got {num_classes}")
    if not noise > 0 or not class_sep >= 0:
        raise DataError(
            f"synthetic needs noise > 0 and class_sep >= 0, got noise={noise}, class_sep={class_sep}",
            hint=f"the defaults are noise={DEFAULT_NOISE}, class_sep={DEFAULT_CLASS_SEP}",
        )
    dim = math.prod(shape)
    seeds = Seeds(seed)
    centers = seeds.rng("data", 0).standard_normal((int(num_classes), dim)) * (class_sep / math.sqrt(dim))
    train_x, train_y = _draw_split(seeds.rng("data", 1), int(num_train), centers, noise)
    test_x, test_y = _draw_split(seeds.rng("data", 2), int(num_test), centers, noise)
    return make_bundle(
        "synthetic",
        train_x.reshape(-1, *shape),
        train_y,
        test_x.reshape(-1, *shape),
        test_y,
        num_classes=int(num_classes),
        classes=[f"class_{i}" for i in range(int(num_classes))],
        source=f"synthetic Gaussian clusters (seed={seed}, class_sep={class_sep}, noise={noise})",
    )
