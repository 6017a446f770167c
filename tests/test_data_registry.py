"""load_dataset: name and option dispatch, and its error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgelearn.data import load_dataset, write_cifar_batch, write_idx
from edgelearn.data.registry import DATASETS
from edgelearn.errors import DataError


def test_names() -> None:
    assert list(DATASETS) == ["digits", "synthetic", "mnist", "fashion_mnist", "cifar10", "cifar100"]


def test_digits_with_option() -> None:
    b = load_dataset("digits", seed=1, test_fraction=0.25)
    # Per class round(0.25 * n): 45+46+44+46+45+46+45+45+44+45 = 451 test samples.
    assert len(b.test) == 451 and len(b.train) == 1797 - 451
    assert b.name == "digits"


def test_synthetic_options_and_none_means_default() -> None:
    b = load_dataset("synthetic", seed=2, num_train=50, num_test=20, input_shape=(3, 2, 2), noise=None)
    assert b.train.x.shape == (50, 3, 2, 2) and len(b.mean) == 3
    a = load_dataset("synthetic", seed=2, num_train=50, num_test=20, input_shape=(3, 2, 2))
    assert np.array_equal(a.train.x, b.train.x)


def test_unknown_name_lists_allowed() -> None:
    with pytest.raises(DataError) as err:
        load_dataset("imagenet")
    msg = str(err.value)
    assert "'imagenet'" in msg and all(name in msg for name in DATASETS)


def test_unknown_option_lists_allowed() -> None:
    with pytest.raises(DataError, match="does not take option.*label_mode") as err:
        load_dataset("digits", label_mode="fine")
    assert "test_fraction" in str(err.value)
    with pytest.raises(DataError, match="options for mnist: none"):
        load_dataset("mnist", data_dir="/nonexistent", test_fraction=0.1)


def test_file_datasets_use_data_dir(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name, n in (("train", 6), ("t10k", 2)):
        write_idx(tmp_path / f"{name}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 2, 2), dtype=np.uint8))
        write_idx(tmp_path / f"{name}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))
    b = load_dataset("mnist", data_dir=str(tmp_path))
    assert b.name == "mnist" and b.train.x.shape == (6, 1, 2, 2)
    folder = tmp_path / "cifar-100-python"
    rows = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
    for split in ("train", "test"):
        write_cifar_batch(folder / split, rows, [3, 4], "fine_labels", extra_labels={"coarse_labels": [1, 2]})
    c = load_dataset("cifar100", data_dir=tmp_path, label_mode="coarse")
    assert c.num_classes == 20 and c.train.y.tolist() == [1, 2]
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("cifar10")


def test_max_train_keeps_class_proportions_and_is_seeded() -> None:
    from edgelearn.data.dataset import subsample_train

    bundle = load_dataset("digits", seed=0)
    small = subsample_train(bundle, 300, np.random.default_rng(5))
    again = subsample_train(bundle, 300, np.random.default_rng(5))
    assert len(small.train) == 300 and np.array_equal(small.train.y, again.train.y)
    assert len(small.test) == len(bundle.test)
    full = np.bincount(bundle.train.y) / len(bundle.train)
    part = np.bincount(small.train.y, minlength=len(full)) / 300
    assert np.abs(full - part).max() <= 1 / 300 + 1e-12  # largest-remainder quotas: off by at most one
    assert subsample_train(bundle, 10**6, np.random.default_rng(0)) is bundle
