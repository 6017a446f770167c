"""Datasets (digits, synthetic, MNIST/Fashion-MNIST IDX, CIFAR-10/100) and their split across devices."""

from edgelearn.data.builtin import load_digits_bundle, load_synthetic_bundle
from edgelearn.data.cifar import (
    load_cifar10_bundle,
    load_cifar100_bundle,
    read_cifar_batch,
    write_cifar_batch,
    write_cifar_meta,
)
from edgelearn.data.dataset import ArrayDataset, DatasetBundle
from edgelearn.data.idx import find_idx_files, load_idx_bundle, read_idx, write_idx
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
