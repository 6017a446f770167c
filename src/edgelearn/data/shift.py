"""General (server) vs task (device) data with a controllable distribution shift, and its Wasserstein-1 size.

Two-stage edge learning (Lyu et al., arXiv 2404.00836) pre-trains on an edge server's stored *general* data
and fine-tunes on the devices' *task* data, and measures their shift by a Wasserstein distance. From one
dataset we carve both, then shift the task side (our constructions):

- ``label``: task class prior = (1 - level) * uniform + level * uniform over the first half of the classes;
- ``rotation``: task images rotated by ``level * max_rotation_deg`` degrees;
- ``noise``: task features plus Gaussian noise of standard deviation ``level * max_noise_std``.

``level = 0`` gives the same distribution on both sides. The task test set gets the same shift, so accuracy
is measured on the task distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from edgelearn.data.dataset import ArrayDataset, DatasetBundle
from edgelearn.errors import DataError

ShiftKind = Literal["label", "rotation", "noise"]
SHIFT_KINDS: tuple[str, ...] = ("label", "rotation", "noise")
# Level 1 of a rotation shift turns task images by this many degrees.
MAX_ROTATION_DEG = 90.0
# Level 1 of a noise shift adds Gaussian noise of this std (features are standardized, so 1 = one train std).
MAX_NOISE_STD = 1.0


@dataclass
class ShiftedData:
    """The server's general set and the devices' task train/test sets, with the shift that made them."""

    general: ArrayDataset
    task_train: ArrayDataset
    task_test: ArrayDataset
    kind: str
    level: float


def _check(kind: str, level: float, general_fraction: float) -> None:
    if kind not in SHIFT_KINDS:
        raise DataError(f"shift kind {kind!r} is not one of {', '.join(SHIFT_KINDS)}")
    if not 0.0 <= level <= 1.0:
        raise DataError(
            f"shift level {level} is outside [0, 1]", hint="0 = no shift, 1 = the strongest shift"
        )
    if not 0.0 < general_fraction < 1.0:
        raise DataError(f"general_fraction {general_fraction} must be in (0, 1)")


def _label_resample(
    data: ArrayDataset, level: float, num_classes: int, rng: np.random.Generator
) -> ArrayDataset:
    """Resample ``data`` without replacement (as many as possible) so its class prior follows the shift."""
    favoured = np.arange(num_classes) < max(1, num_classes // 2)
    prior = (1 - level) / num_classes + level * favoured / favoured.sum()
    counts = np.bincount(data.y, minlength=num_classes)
    # The largest set that the available samples of every class allow at this prior.
    with np.errstate(divide="ignore"):
        total = int(np.floor(np.min(np.where(prior > 0, counts / prior, np.inf))))
    want = np.floor(prior * total).astype(np.int64)
    keep = [
        rng.choice(np.flatnonzero(data.y == c), size=int(want[c]), replace=False) for c in range(num_classes)
    ]
    idx = np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
    return data.subset(idx)


def _rotate(x: np.ndarray, degrees: float) -> np.ndarray:
    if x.ndim != 4 or degrees == 0:
        if x.ndim != 4 and degrees != 0:
            raise DataError(
                "a rotation shift needs image data shaped (N, C, H, W)", hint="use kind: noise or label"
            )
        return x
    return ndimage.rotate(x, degrees, axes=(2, 3), reshape=False, order=1, mode="nearest").astype(np.float32)


def apply_shift(
    data: ArrayDataset, kind: str, level: float, num_classes: int, rng: np.random.Generator
) -> ArrayDataset:
    """The task-side version of ``data`` under a shift of ``kind`` at ``level`` in [0, 1]."""
    if level == 0:
        return data
    if kind == "label":
        return _label_resample(data, level, num_classes, rng)
    if kind == "rotation":
        return ArrayDataset(_rotate(data.x, level * MAX_ROTATION_DEG), data.y)
    noise = rng.standard_normal(data.x.shape).astype(np.float32) * (level * MAX_NOISE_STD)
    return ArrayDataset(data.x + noise, data.y)


def make_shift(
    bundle: DatasetBundle,
    kind: str,
    level: float,
    rng: np.random.Generator,
    *,
    general_fraction: float = 0.5,
) -> ShiftedData:
    """Split ``bundle.train`` into general (server) and task (devices) parts and shift the task side.

    The split is stratified-random with ``general_fraction`` of the samples on the server; the test split is
    shifted the same way so it measures the task distribution.
    """
    _check(kind, level, general_fraction)
    n = len(bundle.train)
    perm = rng.permutation(n)
    cut = int(round(general_fraction * n))
    if cut == 0 or cut == n:
        raise DataError(f"general_fraction {general_fraction} leaves one side empty for {n} samples")
    general = bundle.train.subset(np.sort(perm[:cut]))
    task_pool = bundle.train.subset(np.sort(perm[cut:]))
    return ShiftedData(
        general=general,
        task_train=apply_shift(task_pool, kind, level, bundle.num_classes, rng),
        task_test=apply_shift(bundle.test, kind, level, bundle.num_classes, rng),
        kind=kind,
        level=level,
    )


def wasserstein1(
    a: ArrayDataset,
    b: ArrayDataset,
    rng: np.random.Generator,
    *,
    samples: int = 500,
    label_cost: float | None = None,
) -> float:
    """Exact Wasserstein-1 distance between equal-size uniform subsamples of ``a`` and ``b``.

    Ground cost ||x - x'||_2 + label_cost * [y != y'] (our metric on labelled samples; label_cost defaults to
    the median feature distance so a label mismatch weighs like a typical image difference). With equal sizes
    and uniform weights the optimal transport plan is a permutation, so the assignment problem solves it
    exactly.
    """
    n = min(samples, len(a), len(b))
    if n < 1:
        raise DataError("Wasserstein-1 needs at least one sample on each side")
    ia = rng.choice(len(a), size=n, replace=False)
    ib = rng.choice(len(b), size=n, replace=False)
    xa = a.x[ia].reshape(n, -1).astype(np.float64)
    xb = b.x[ib].reshape(n, -1).astype(np.float64)
    cost = cdist(xa, xb)
    lam = float(np.median(cost)) if label_cost is None else float(label_cost)
    cost += lam * (a.y[ia][:, None] != b.y[ib][None, :])
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())
