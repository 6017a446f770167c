"""One entry point, ``load_dataset(name, ...)``, mapping dataset names and options to their loaders.

Each loader imports its module when called, so naming a dataset loads only that dataset's code.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgelearn.errors import DataError
from edgelearn.extensions import registered

if TYPE_CHECKING:
    from edgelearn.data.dataset import DatasetBundle


@dataclass(frozen=True)
class DatasetSpec:
    """How to load one named dataset: a loader taking (data_dir, seed, **options) and its option names."""

    loader: Callable[..., DatasetBundle]
    options: tuple[str, ...]
    uses_data_dir: bool
    summary: str = ""
    """One line for ``edgelearn list datasets``."""


def _digits(data_dir: Path | None, seed: int, **opts: Any) -> DatasetBundle:
    from edgelearn.data.builtin import load_digits_bundle

    return load_digits_bundle(seed, **opts)


def _synthetic(data_dir: Path | None, seed: int, **opts: Any) -> DatasetBundle:
    from edgelearn.data.builtin import load_synthetic_bundle

    return load_synthetic_bundle(seed, **opts)


def _mnist(data_dir: Path | None, seed: int, **opts: Any) -> DatasetBundle:
    from edgelearn.data.idx import load_idx_bundle

    return load_idx_bundle("mnist", data_dir)


def _fashion(data_dir: Path | None, seed: int, **opts: Any) -> DatasetBundle:
    from edgelearn.data.idx import load_idx_bundle

    return load_idx_bundle("fashion_mnist", data_dir)


def _cifar10(data_dir: Path | None, seed: int, **opts: Any) -> DatasetBundle:
    from edgelearn.data.cifar import load_cifar10_bundle

    return load_cifar10_bundle(data_dir)


def _cifar100(data_dir: Path | None, seed: int, **opts: Any) -> DatasetBundle:
    from edgelearn.data.cifar import load_cifar100_bundle

    return load_cifar100_bundle(data_dir, **opts)


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        _digits, ("test_fraction",), uses_data_dir=False, summary="scikit-learn's 8x8 digits, embedded"
    ),
    "synthetic": DatasetSpec(
        _synthetic,
        ("num_train", "num_test", "num_classes", "input_shape", "class_sep", "noise"),
        uses_data_dir=False,
        summary="seeded Gaussian class blobs of any shape (tests, scaling)",
    ),
    "mnist": DatasetSpec(_mnist, (), uses_data_dir=True, summary="MNIST from its IDX files (data.data_dir)"),
    "fashion_mnist": DatasetSpec(
        _fashion, (), uses_data_dir=True, summary="Fashion-MNIST IDX files (Debian dataset-fashion-mnist)"
    ),
    "cifar10": DatasetSpec(_cifar10, (), uses_data_dir=True, summary="CIFAR-10 python batches (data_dir)"),
    "cifar100": DatasetSpec(
        _cifar100, ("label_mode",), uses_data_dir=True, summary="CIFAR-100 python batches (data.data_dir)"
    ),
}


def dataset_name(name: str) -> str:
    """``name`` when it is a registered dataset (installed plugins are loaded on a miss), else a DataError
    listing the known ones, so a misspelled ``data.dataset`` fails before anything runs."""
    if not registered(name, DATASETS):
        raise DataError(
            f"data.dataset {name!r} is not a registered dataset",
            hint=f"use one of: {', '.join(DATASETS)} (plugins register more: edgelearn list datasets)",
        )
    return name


def load_dataset(
    name: str, *, data_dir: str | os.PathLike[str] | None = None, seed: int = 0, **options: Any
) -> DatasetBundle:
    """Load dataset ``name`` as a normalized train/test bundle.

    ``seed`` drives the digits split and synthetic generation (file datasets are fixed); ``data_dir`` is
    ignored by digits and synthetic. Options set to None mean "use the loader's default".
    """
    spec = DATASETS.get(dataset_name(name))
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(spec.options))
    if unknown:
        allowed = ", ".join(spec.options) if spec.options else "none"
        raise DataError(
            f"dataset {name!r} does not take option(s) {', '.join(unknown)}",
            hint=f"options for {name}: {allowed}",
        )
    path = Path(data_dir).expanduser() if (data_dir is not None and spec.uses_data_dir) else None
    return spec.loader(path, int(seed), **given)
