"""In-memory datasets (float32 features, int64 labels) and train-set standardization shared by all loaders."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgelearn.errors import DataError

# Rows processed per step when computing channel statistics, so a 1,000,000-sample set never needs a
# full float64 copy (64 MiB of float64 per chunk at 8x8, about 50 MiB at 3x32x32).
STATS_CHUNK_ROWS = 16_384
# Channels whose standard deviation is below this are left unscaled (constant channel), avoiding 0/0.
MIN_STD = 1e-8


@dataclass
class ArrayDataset:
    """Features ``x`` (float32, (N, C, H, W) or (N, D)) with integer labels ``y`` (int64, (N,)).

    ``index`` holds each row's position in the split as loaded (``arange(N)`` for a fresh dataset) and
    travels through :meth:`subset`, so a hold-out, a subsample and every device's share can be compared on
    the index level: that is how a run proves that pre-training data and device data never overlap.
    """

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray | None = None

    def __post_init__(self) -> None:
        x = np.asarray(self.x)
        y = np.asarray(self.y)
        if x.ndim < 2:
            raise DataError(
                f"ArrayDataset.x must have a sample axis and features, got shape {x.shape}",
                hint="pass x shaped (N, C, H, W) for images or (N, D) for feature vectors",
            )
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(
                f"ArrayDataset.y must be 1-D with one label per sample: x has {x.shape[0]} samples, "
                f"y has shape {y.shape}",
                hint="check that images and labels come from the same split",
            )
        if y.size and not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"ArrayDataset.y must hold integer class ids, got dtype {y.dtype}")
        self.x = x if x.dtype == np.float32 else x.astype(np.float32)
        self.y = y if y.dtype == np.int64 else y.astype(np.int64)
        if self.index is None:
            self.index = np.arange(len(y), dtype=np.int64)
        else:
            index = np.asarray(self.index, dtype=np.int64)
            if index.shape != y.shape:
                raise DataError(
                    f"ArrayDataset.index must hold one position per sample: {y.shape[0]} samples, "
                    f"index of shape {index.shape}"
                )
            self.index = index

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, indices: Sequence[int] | np.ndarray) -> ArrayDataset:
        """The samples at ``indices`` (a copy), e.g. one device's share of a partition."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1:
            raise DataError(f"subset indices must be 1-D, got shape {idx.shape}")
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise DataError(
                f"subset index out of range for a dataset of {len(self)} samples "
                f"(min {int(idx.min())}, max {int(idx.max())})",
                hint="indices must come from a partition of this very dataset",
            )
        assert self.index is not None  # set in __post_init__
        return ArrayDataset(self.x[idx], self.y[idx], self.index[idx])


@dataclass
class DatasetBundle:
    """A train/test pair plus what a model and a report need to know about it."""

    name: str
    train: ArrayDataset
    test: ArrayDataset
    num_classes: int
    input_shape: tuple[int, ...]
    classes: list[str] | None = None
    source: str = ""
    mean: tuple[float, ...] = field(default_factory=tuple)
    std: tuple[float, ...] = field(default_factory=tuple)
    holdout: ArrayDataset | None = None
    """Training samples removed before subsampling and partitioning (:func:`split_holdout`): data no
    device holds, for pre-training (e.g. FedAgg's bridge autoencoder). Rows keep their loaded positions."""
    unassigned: ArrayDataset | None = None
    """Training samples ``data.max_train`` left out (:func:`subsample_train`): kept aside, never a
    device's, and usable as unlabelled pre-training data (``autoencoder.source: unassigned_train``)."""


def channel_stats(x: np.ndarray, chunk_rows: int = STATS_CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of ``x``, in float64, computed in chunks to bound memory.

    Images (N, C, ...) get one value per channel C; flat features (N, D) are treated as one channel.
    """
    if x.shape[0] == 0:
        raise DataError("cannot compute normalization statistics of an empty training set")
    flat = _as_channels(x)
    n_per_channel = flat.shape[0] * flat.shape[2]
    total = np.zeros(flat.shape[1], dtype=np.float64)
    for start in range(0, flat.shape[0], chunk_rows):
        total += flat[start : start + chunk_rows].sum(axis=(0, 2), dtype=np.float64)
    mean = total / n_per_channel
    sq = np.zeros_like(mean)
    for start in range(0, flat.shape[0], chunk_rows):
        diff = flat[start : start + chunk_rows].astype(np.float64) - mean[None, :, None]
        sq += np.einsum("ncd,ncd->c", diff, diff)
    std = np.sqrt(sq / n_per_channel)
    return mean, std


def _as_channels(x: np.ndarray) -> np.ndarray:
    """View ``x`` as (N, C, rest): images keep their channel axis, flat data becomes one channel."""
    if x.ndim == 2:
        return x.reshape(x.shape[0], 1, x.shape[1])
    return x.reshape(x.shape[0], x.shape[1], -1)


def standardize_inplace(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    """Subtract ``mean`` and divide by ``std`` per channel, in place (float32), chunked like the stats."""
    if x.dtype != np.float32 or not x.flags.c_contiguous or not x.flags.writeable:
        raise DataError(
            f"in-place standardization needs a writable C-contiguous float32 array, got {x.dtype} "
            f"(contiguous={x.flags.c_contiguous}, writeable={x.flags.writeable})",
            hint="pass np.ascontiguousarray(x, dtype=np.float32)",
        )
    flat = _as_channels(x)
    safe_std = np.where(std < MIN_STD, 1.0, std)
    m = mean.astype(np.float32)[None, :, None]
    s = safe_std.astype(np.float32)[None, :, None]
    for start in range(0, flat.shape[0], STATS_CHUNK_ROWS):
        block = flat[start : start + STATS_CHUNK_ROWS]
        block -= m
        block /= s


def normalize_pair(train_x: np.ndarray, test_x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Standardize train and test features in place with the TRAIN set's per-channel mean/std.

    Returns the (mean, std) tuples to store on the bundle, so a report can undo or repeat the transform.
    """
    mean, std = channel_stats(train_x)
    standardize_inplace(train_x, mean, std)
    if test_x.shape[0]:
        standardize_inplace(test_x, mean, std)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def make_bundle(
    name: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_classes: int,
    classes: list[str] | None,
    source: str,
    normalize: bool = True,
) -> DatasetBundle:
    """Build a bundle from float32 feature arrays (already scaled to [0, 1] for pixels), standardizing them.

    Writable C-contiguous float32 inputs are normalized in place (no copy) to save memory.
    """
    train_x = _writable_float32(train_x)
    test_x = _writable_float32(test_x)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    if normalize:
        mean, std = normalize_pair(train_x, test_x)
    return DatasetBundle(
        name=name,
        train=ArrayDataset(train_x, train_y),
        test=ArrayDataset(test_x, test_y),
        num_classes=int(num_classes),
        input_shape=tuple(int(d) for d in train_x.shape[1:]),
        classes=classes,
        source=source,
        mean=mean,
        std=std,
    )


def _writable_float32(x: np.ndarray) -> np.ndarray:
    """``x`` itself when it is already a writable C-contiguous float32 array, else a float32 copy."""
    if x.dtype == np.float32 and x.flags.c_contiguous and x.flags.writeable:
        return x
    return np.array(x, dtype=np.float32, order="C", copy=True)


def stratified_pick(y: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of a seeded sample of ``size`` labels in the same class proportions as ``y``.

    Each class gets ``floor(count * size / n)``; the remaining picks go to the classes with the largest
    fractional parts, so the result has exactly ``size`` positions (``0 <= size <= len(y)``).
    """
    n = len(y)
    classes, counts = np.unique(y, return_counts=True)
    quota = np.floor(counts * size / n).astype(np.int64)
    short = size - int(quota.sum())
    order = np.argsort(-(counts * size / n - quota), kind="stable")
    quota[order[:short]] += 1
    picks = [rng.choice(np.flatnonzero(y == c), size=int(q), replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, dtype=np.int64)


def index_digest(index: np.ndarray) -> str:
    """SHA-256 of sorted int64 positions: names a hold-out or pre-training set in summary.json and files."""
    return hashlib.sha256(np.sort(np.asarray(index, dtype=np.int64)).tobytes()).hexdigest()


def _rest(n: int, picked: np.ndarray) -> np.ndarray:
    """Positions in ``range(n)`` not in ``picked``, in order."""
    keep = np.ones(n, dtype=bool)
    keep[picked] = False
    return np.flatnonzero(keep)


def subsample_train(bundle: DatasetBundle, size: int, rng: np.random.Generator) -> DatasetBundle:
    """``bundle`` with a seeded subsample of ``size`` training samples in the same class proportions
    (e.g. the 10,000-image Fashion-MNIST setting of FedAgg's demo); the test split is kept whole.

    The samples not chosen are kept aside in ``bundle.unassigned`` (never a device's), not thrown away.
    """
    n = len(bundle.train)
    if size >= n:
        return bundle
    if size < 1:
        raise DataError(f"data.max_train={size}; need at least 1 sample")
    idx = stratified_pick(bundle.train.y, size, rng)
    return replace(bundle, train=bundle.train.subset(idx), unassigned=bundle.train.subset(_rest(n, idx)))


def split_holdout(bundle: DatasetBundle, size: int, rng: np.random.Generator) -> DatasetBundle:
    """Remove a seeded, class-stratified slice of ``size`` training samples into ``bundle.holdout``.

    Runs before ``data.max_train`` and before partitioning, so no device can ever receive a held-out
    sample. At most half of the training split may be held out: more would starve the devices, and is
    almost always a mistaken size.
    """
    n = len(bundle.train)
    if size < 1:
        return bundle
    if 2 * size > n:
        raise DataError(
            f"data.holdout: a hold-out of {size} samples would take more than half of the {n} training "
            "samples",
            hint=f"hold out at most {n // 2} (data.holdout, or algorithm.autoencoder.max_samples when "
            "data.holdout is unset)",
        )
    idx = stratified_pick(bundle.train.y, size, rng)
    return replace(bundle, train=bundle.train.subset(_rest(n, idx)), holdout=bundle.train.subset(idx))


def split_summary(bundle: DatasetBundle) -> dict[str, Any]:
    """summary.json's account of the training split: what the devices share, what was held out before
    partitioning (with the SHA-256 of its positions) and what ``data.max_train`` kept aside."""
    split: dict[str, Any] = {"devices": len(bundle.train), "test": len(bundle.test)}
    for name in ("holdout", "unassigned"):
        part = getattr(bundle, name)
        if part is not None:
            split[name] = {"samples": len(part), "indices_sha256": index_digest(part.index)}
    return split
