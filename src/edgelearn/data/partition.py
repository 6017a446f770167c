"""Split a training set's indices across devices: IID, Dirichlet label skew, and label-sorted shards.

Every method returns one sorted int64 index array per device; together they are disjoint and cover every
training sample exactly once (no method drops samples).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgelearn.errors import DataError
from edgelearn.extensions import registered

# Dirichlet redraws before the deterministic repair step takes over (the common reference code,
# e.g. FedLab / NIID-Bench, redraws without bound until every client has enough samples).
DEFAULT_DIRICHLET_TRIES = 10
DEFAULT_MIN_SIZE = 1
# McMahan et al. (2017) gave each of 100 clients 2 shards of 300 MNIST samples.
DEFAULT_SHARDS_PER_DEVICE = 2


def _check_devices(num_devices: int) -> int:
    if int(num_devices) < 1:
        raise DataError(
            f"num_devices must be at least 1, got {num_devices}", hint="set topology.num_devices >= 1"
        )
    return int(num_devices)


def _check_labels(labels: np.ndarray | Sequence[int]) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise DataError(f"partition labels must be a 1-D integer array, got shape {y.shape} dtype {y.dtype}")
    if y.size and int(y.min()) < 0:
        raise DataError(f"partition labels must be non-negative class ids, found {int(y.min())}")
    return y.astype(np.int64, copy=False)


def _finish(parts: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def partition_iid(num_samples: int, num_devices: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle and deal samples evenly: device sizes differ by at most one."""
    d = _check_devices(num_devices)
    if int(num_samples) < d:
        raise DataError(
            f"iid partition: {num_samples} samples cannot give each of {d} devices at least one",
            hint="use fewer devices or more training samples",
        )
    return _finish(np.array_split(rng.permutation(int(num_samples)), d))


def _dirichlet_draw(
    labels: np.ndarray, num_devices: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """One draw: each class is split over devices by proportions ~ Dir(alpha).

    This is the per-class label-skew split of Yurochkin et al. (2019) / Wang et al. (2020), the usual stand-in
    for Hsu et al. (2019) in FL benchmarks.
    """
    chunks: list[list[np.ndarray]] = [[] for _ in range(num_devices)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        p = np.nan_to_num(rng.dirichlet(np.full(num_devices, alpha)), nan=0.0)
        if not p.sum() > 0:  # tiny alpha can underflow every component; give the class to one device
            p = np.zeros(num_devices)
            p[rng.integers(num_devices)] = 1.0
        cuts = (np.cumsum(p / p.sum()) * idx.size).astype(np.int64)[:-1]
        for dev, piece in enumerate(np.split(idx, cuts)):
            chunks[dev].append(piece)
    return [np.concatenate(c) if c else np.empty(0, dtype=np.int64) for c in chunks]


def _repair_min_size(parts: list[np.ndarray], min_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Top up devices below ``min_size`` with random samples from the largest devices (at most D*D moves)."""
    sizes = np.array([p.size for p in parts])
    for dev in np.flatnonzero(sizes < min_size):
        while sizes[dev] < min_size:
            donor = int(np.argmax(sizes))
            give = int(min(min_size - sizes[dev], sizes[donor] - min_size))
            pick = rng.choice(parts[donor].size, size=give, replace=False)
            keep = np.ones(parts[donor].size, dtype=bool)
            keep[pick] = False
            parts[dev] = np.concatenate([parts[dev], parts[donor][pick]])
            parts[donor] = parts[donor][keep]
            sizes[dev] += give
            sizes[donor] -= give
    return parts


def partition_dirichlet(
    labels: np.ndarray | Sequence[int],
    num_devices: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = DEFAULT_MIN_SIZE,
    max_tries: int = DEFAULT_DIRICHLET_TRIES,
) -> list[np.ndarray]:
    """Label-skewed split (per-class proportions ~ Dir(alpha)); smaller alpha means more skew.

    Guarantees every device at least ``min_size`` samples: up to ``max_tries`` redraws, then the best draw
    is repaired by moving random samples from the largest devices. Always terminates.
    """
    y = _check_labels(labels)
    d = _check_devices(num_devices)
    if not alpha > 0:
        raise DataError(
            f"dirichlet alpha must be > 0, got {alpha}",
            hint="use e.g. 0.1 (strong label skew) to 100 (near IID)",
        )
    if int(min_size) < 0 or int(max_tries) < 1:
        raise DataError(f"min_size must be >= 0 and max_tries >= 1, got {min_size} and {max_tries}")
    if int(min_size) * d > y.size:
        raise DataError(
            f"dirichlet partition impossible: min_size {min_size} x {d} devices = {int(min_size) * d} "
            f"samples needed, but the training set has only {y.size}",
            hint="lower partition.min_size or the number of devices, or use a larger training set",
        )
    best: list[np.ndarray] | None = None
    for _ in range(int(max_tries)):
        parts = _dirichlet_draw(y, d, float(alpha), rng)
        smallest = min(p.size for p in parts)
        if best is None or smallest > min(p.size for p in best):
            best = parts
        if smallest >= int(min_size):
            break
    if best is None:  # unreachable: max_tries >= 1 was checked above
        raise DataError("dirichlet partition made no draw")
    return _finish(_repair_min_size(best, int(min_size), rng))


def partition_shards(
    labels: np.ndarray | Sequence[int],
    num_devices: int,
    shards_per_device: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """McMahan et al. (2017) pathological non-IID: sort by label, cut into D*S shards, deal S to each device.

    Shard sizes differ by at most one when N is not divisible by D*S (no sample is dropped).
    """
    y = _check_labels(labels)
    d = _check_devices(num_devices)
    s = int(shards_per_device)
    if s < 1 or d * s > y.size:
        raise DataError(
            f"shards partition: {d} devices x {s} shards = {d * s} shards for {y.size} samples",
            hint="shards_per_device must be >= 1 and devices x shards_per_device <= training samples",
        )
    within = rng.permutation(y.size)
    order = within[np.argsort(y[within], kind="stable")]
    shards = np.array_split(order, d * s)
    deal = rng.permutation(d * s).reshape(d, s)
    return _finish([np.concatenate([shards[k] for k in row]) for row in deal])


PARTITION_METHODS: dict[str, tuple[str, ...]] = {
    "iid": (),
    "dirichlet": ("alpha", "min_size", "max_tries"),
    "shards": ("shards_per_device",),
}


_PLUGINS: dict[str, Callable[..., Sequence[np.ndarray]]] = {}
"""Partitioners registered by plugins: name -> split(labels, num_devices, rng, **options)."""


def register_partitioner(
    name: str, split: Callable[..., Sequence[np.ndarray]], options: tuple[str, ...]
) -> None:
    """Add (or replace) partition method ``name`` taking keyword ``options`` (see edgelearn.plugins)."""
    PARTITION_METHODS[name] = options
    _PLUGINS[name] = split


def partition_method(method: str) -> str:
    """``method`` when it is a registered partitioner (installed plugins are loaded on a miss), else a
    DataError listing the known ones, so a misspelled ``partition.method`` fails before anything runs."""
    if not registered(method, PARTITION_METHODS):
        raise DataError(
            f"partition.method {method!r} is not a registered partitioner",
            hint=f"use one of: {', '.join(PARTITION_METHODS)} (plugins register more: edgelearn list "
            "partitioners)",
        )
    return method


def partition(
    method: str, labels: np.ndarray | Sequence[int], num_devices: int, rng: np.random.Generator, **kw: Any
) -> list[np.ndarray]:
    """Dispatch to ``partition_<method>`` with its keyword options (None values mean "default")."""
    partition_method(method)
    opts = {k: v for k, v in kw.items() if v is not None}
    unknown = sorted(set(opts) - set(PARTITION_METHODS[method]))
    if unknown:
        allowed = ", ".join(PARTITION_METHODS[method]) or "none"
        raise DataError(
            f"partition method {method!r} does not take option(s) {', '.join(unknown)}",
            hint=f"options for {method}: {allowed}",
        )
    y = _check_labels(labels)
    if method in _PLUGINS:
        parts = _PLUGINS[method](y, num_devices, rng, **opts)
        return _checked_plugin_split(method, parts, y.size, num_devices)
    if method == "iid":
        return partition_iid(y.size, num_devices, rng)
    if method == "dirichlet":
        if "alpha" not in opts:
            raise DataError("dirichlet partition needs alpha", hint="set partition.alpha, e.g. 0.5")
        return partition_dirichlet(y, num_devices, rng=rng, **opts)
    shards = opts.get("shards_per_device", DEFAULT_SHARDS_PER_DEVICE)
    return partition_shards(y, num_devices, shards, rng)


def _checked_plugin_split(
    method: str, parts: Sequence[Any], num_samples: int, num_devices: int
) -> list[np.ndarray]:
    """A plugin partitioner's output as int64 arrays, refused (DataError naming the partitioner) unless it
    gives one array per device with in-range sample indices and no sample on two devices. Samples it
    leaves out stay unassigned (never a device's)."""
    where = f"partitioner {method!r} (partition.method)"
    if len(parts) != num_devices:
        raise DataError(f"{where} returned {len(parts)} index arrays for {num_devices} devices")
    out = [np.asarray(p, dtype=np.int64).ravel() for p in parts]
    flat = np.concatenate(out) if out else np.zeros(0, np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= num_samples):
        raise DataError(f"{where} returned sample indices outside 0..{num_samples - 1}")
    if len(np.unique(flat)) != flat.size:
        raise DataError(f"{where} put a sample on two devices (or twice on one)")
    return out


def validate_partition(parts: Sequence[np.ndarray], num_samples: int) -> None:
    """Raise DataError unless ``parts`` are disjoint and together cover 0..num_samples-1 exactly once."""
    flat = np.concatenate([np.asarray(p, dtype=np.int64) for p in parts]) if parts else np.empty(0, np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= num_samples):
        raise DataError(f"partition holds indices outside 0..{num_samples - 1}")
    counts = np.bincount(flat, minlength=num_samples)
    if np.any(counts != 1):
        raise DataError(
            f"partition is not a disjoint cover of {num_samples} samples: "
            f"{int(np.sum(counts == 0))} missing, {int(np.sum(counts > 1))} repeated"
        )


def summarize_partition(
    parts: Sequence[np.ndarray], labels: np.ndarray | Sequence[int], num_classes: int
) -> list[dict[str, Any]]:
    """Per device: ``size``, ``classes_present`` (a count) and label ``histogram`` (num_classes ints)."""
    y = _check_labels(labels)
    out: list[dict[str, Any]] = []
    for dev, idx in enumerate(parts):
        hist = np.bincount(y[np.asarray(idx, dtype=np.int64)], minlength=num_classes)
        out.append(
            {
                "device": dev,
                "size": int(hist.sum()),
                "classes_present": int(np.count_nonzero(hist)),
                "histogram": [int(v) for v in hist],
            }
        )
    return out


def partition_stats(
    parts: Sequence[np.ndarray], labels: np.ndarray | Sequence[int], num_classes: int
) -> dict[str, float]:
    """Min/mean/max device size and mean classes per device, for a one-line log of a partition."""
    rows = summarize_partition(parts, labels, num_classes)
    sizes = np.array([r["size"] for r in rows], dtype=np.float64)
    classes = np.array([r["classes_present"] for r in rows], dtype=np.float64)
    return {
        "num_devices": float(len(rows)),
        "min_size": float(sizes.min()) if sizes.size else 0.0,
        "mean_size": float(sizes.mean()) if sizes.size else 0.0,
        "max_size": float(sizes.max()) if sizes.size else 0.0,
        "mean_classes_per_device": float(classes.mean()) if classes.size else 0.0,
    }
