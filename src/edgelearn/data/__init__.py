"""Datasets (digits, synthetic, MNIST/Fashion-MNIST IDX, CIFAR-10/100) and their split across devices.

The loader modules are imported when one of their names is first used (``load_dataset`` imports only the
named dataset's loader), so a run pays only for the dataset it reads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edgelearn.data.dataset import ArrayDataset, DatasetBundle
from edgelearn.data.partition import (
    partition,
    partition_dirichlet,
    partition_iid,
    partition_shards,
    partition_stats,
    summarize_partition,
    validate_partition,
)
from edgelearn.data.registry import DATASETS, load_dataset

if TYPE_CHECKING:
    from edgelearn.data.builtin import load_digits_bundle, load_synthetic_bundle
    from edgelearn.data.cifar import (
        load_cifar10_bundle,
        load_cifar100_bundle,
        read_cifar_batch,
        write_cifar_batch,
        write_cifar_meta,
    )
    from edgelearn.data.idx import find_idx_files, load_idx_bundle, read_idx, write_idx

_LAZY: dict[str, str] = {
    "load_digits_bundle": "builtin",
    "load_synthetic_bundle": "builtin",
    "load_cifar10_bundle": "cifar",
    "load_cifar100_bundle": "cifar",
    "read_cifar_batch": "cifar",
    "write_cifar_batch": "cifar",
    "write_cifar_meta": "cifar",
    "find_idx_files": "idx",
    "load_idx_bundle": "idx",
    "read_idx": "idx",
    "write_idx": "idx",
}
"""Loader names -> the submodule defining them, imported on first attribute access."""


def __getattr__(name: str) -> Any:
    """Import a loader's module on first use of one of its names."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgelearn.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"edgelearn.data.{module}"), name)


__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DatasetBundle",
    "find_idx_files",
    "load_cifar10_bundle",
    "load_cifar100_bundle",
    "load_dataset",
    "load_digits_bundle",
    "load_idx_bundle",
    "load_synthetic_bundle",
    "partition",
    "partition_dirichlet",
    "partition_iid",
    "partition_shards",
    "partition_stats",
    "read_cifar_batch",
    "read_idx",
    "summarize_partition",
    "validate_partition",
    "write_cifar_batch",
    "write_cifar_meta",
    "write_idx",
]
