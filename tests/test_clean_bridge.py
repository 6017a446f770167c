"""FedAgg's bridge autoencoder never sees evaluation data or a device's data (issue 13), proved on the index
level on the partitions real runs make: every training-split position ends up in exactly one of the
hold-out, the samples ``data.max_train`` kept aside, and the devices' shares; the autoencoder's pre-training
positions lie in the hold-out (or the unassigned samples) only, and its images are the loaded training
split's rows at those positions (so never test images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny import synthetic_config

from edgelearn.algorithms.fedagg.bridge import device_train_index, heldout_images
from edgelearn.data import load_dataset
from edgelearn.data.idx import IDX_FILE_NAMES, write_idx
from edgelearn.errors import ConfigError, DataError
from edgelearn.run_config import build_config, load_config
from edgelearn.runner import build_context, run

ROOT = Path(__file__).resolve().parents[1]
FEDAGG_DIGITS = ROOT / "configs/fedagg/digits.yaml"


def _positions(ctx) -> dict[str, np.ndarray]:  # noqa: ANN001 - a RunContext
    """Training-split positions of the devices' data, the hold-out and the aside samples."""
    b = ctx.bundle
    return {
        "devices": device_train_index(b, ctx.parts),
        "holdout": np.asarray(b.holdout.index) if b.holdout is not None else np.zeros(0, np.int64),
        "unassigned": np.asarray(b.unassigned.index) if b.unassigned is not None else np.zeros(0, np.int64),
    }


def _assert_split_is_a_partition(ctx, n_loaded: int) -> dict[str, np.ndarray]:  # noqa: ANN001
    """Devices, hold-out and aside samples are pairwise disjoint and together cover the loaded split."""
    pos = _positions(ctx)
    every = np.concatenate(list(pos.values()))
    assert len(np.unique(every)) == len(every), "a training sample is in two places"
    assert np.array_equal(np.sort(every), np.arange(n_loaded)), "a training sample was lost"
    return pos


def _pretraining(ctx, source: str, max_samples: int) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    return heldout_images(
        ctx.bundle, ctx.parts, source=source, max_samples=max_samples, rng=np.random.default_rng(0)
    )


@settings(max_examples=12, deadline=None)
@given(
    method=st.sampled_from(["iid", "dirichlet", "shards"]),
    holdout=st.integers(2, 60),
    max_train=st.one_of(st.none(), st.integers(40, 120)),
    seed=st.integers(0, 2**16),
)
def test_holdout_is_disjoint_from_every_device_on_real_partitions(
    method: str, holdout: int, max_train: int | None, seed: int
) -> None:
    overrides = [
        "data.num_train=200",
        f"data.holdout={holdout}",
        f"partition.method={method}",
        "partition.min_size=1",
        "topology.devices=6",
        f"seed={seed}",
    ]
    if max_train is not None:
        overrides.append(f"data.max_train={max_train}")
    cfg = synthetic_config(overrides)
    ctx = build_context(cfg)
    pos = _assert_split_is_a_partition(ctx, 200)
    assert len(pos["holdout"]) == holdout
    # class-stratified: each class's share of the hold-out is its share of the split, up to rounding
    loaded = load_dataset(
        "synthetic",
        seed=ctx.seeds.int_seed("data") % (2**31),
        num_train=200,
        num_test=40,
        num_classes=10,
        input_shape=(1, 8, 8),
    )
    counts = np.bincount(loaded.train.y, minlength=10)
    held = np.bincount(loaded.train.y[pos["holdout"]], minlength=10)
    assert np.all(np.abs(held - counts * holdout / 200) < 1.0 + 1e-9)
    for source in ("holdout", "unassigned_train"):
        if source == "unassigned_train" and max_train is None:
            continue  # every sample is a device's or held out: nothing unassigned (tested below)
        images, index = _pretraining(ctx, source, max_samples=1000)
        pool = pos["holdout"] if source == "holdout" else pos["unassigned"]
        assert np.isin(index, pool).all() and not np.isin(index, pos["devices"]).any()
        # the images are the loaded training split's rows at those positions, so never test images
        assert np.array_equal(images, loaded.train.x[index])


def test_digits_config_holds_out_before_partitioning_and_reports_it(tmp_path: Path) -> None:
    cfg = load_config(
        FEDAGG_DIGITS,
        [
            "algorithm.rounds=1",
            "output.plots=false",
            "engine.torch_threads=1",
            "algorithm.autoencoder.epochs=1",
            "eval.every=1",
        ],
    )
    ctx = build_context(cfg)
    loaded_train = 1797 - 359  # digits' test_fraction 0.2 leaves 359 test images
    pos = _assert_split_is_a_partition(ctx, loaded_train)
    assert len(pos["holdout"]) == 360 and len(pos["unassigned"]) == 0
    summary = run(cfg, tmp_path / "run", progress=False)
    bridge, split = summary["bridge"], summary["data_split"]
    assert bridge["autoencoder_source"] == "holdout" and bridge["autoencoder_samples"] == 360
    assert split["holdout"]["samples"] == 360 and split["devices"] == loaded_train - 360
    assert bridge["autoencoder_indices_sha256"] == split["holdout"]["indices_sha256"]
    on_disk = json.loads((tmp_path / "run/summary.json").read_text())
    assert on_disk["bridge"]["autoencoder_source"] == "holdout"


def test_switched_baseline_shares_fedaggs_device_data() -> None:
    """``data.holdout`` in the data section: HierFAVG switched into FedAgg's file gets the same devices."""
    fedagg = build_context(load_config(FEDAGG_DIGITS, ["engine.torch_threads=1"]))
    hier = build_context(load_config(FEDAGG_DIGITS, ["engine.torch_threads=1", "algorithm.name=hierfavg"]))
    assert all(np.array_equal(a, b) for a, b in zip(fedagg.parts, hier.parts))
    assert np.array_equal(fedagg.bundle.train.index, hier.bundle.train.index)


def test_unassigned_train_uses_what_max_train_leaves_out_on_an_idx_dataset(tmp_path: Path) -> None:
    """A Fashion-MNIST-format dataset with data.max_train: the autoencoder pre-trains on images no device
    holds, the devices keep exactly the subsample a run without any hold-out would give them."""
    rng = np.random.default_rng(0)
    n_train, n_test = 300, 50
    arrays = {
        "train_images": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train_labels": np.arange(n_train, dtype=np.uint8) % 10,
        "test_images": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "test_labels": np.arange(n_test, dtype=np.uint8) % 10,
    }
    for role, name in IDX_FILE_NAMES.items():
        write_idx(tmp_path / name, arrays[role])
    base = [
        "data.dataset=fashion_mnist",
        f"data.data_dir={tmp_path}",
        "data.max_train=100",
        "topology.devices=5",
        "partition.method=iid",
        "device=cpu",
        "engine.torch_threads=1",
    ]
    fedagg = build_context(
        build_config({}, [*base, "algorithm.name=fedagg", "algorithm.autoencoder.source=unassigned_train"])
    )
    plain = build_context(build_config({}, base))
    pos = _assert_split_is_a_partition(fedagg, n_train)
    assert len(pos["holdout"]) == 0 and len(pos["unassigned"]) == n_train - 100
    assert np.array_equal(pos["devices"], _positions(plain)["devices"])  # same devices' data
    images, index = _pretraining(fedagg, "unassigned_train", max_samples=150)
    assert len(index) == 150 and np.isin(index, pos["unassigned"]).all()
    loaded = load_dataset("fashion_mnist", data_dir=str(tmp_path))
    assert np.array_equal(images, loaded.train.x[index])


def test_pretraining_on_test_data_is_refused_everywhere(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="test split is refused"):
        load_config(FEDAGG_DIGITS, ["algorithm.autoencoder.source=test"])
    # a FedAgg context without a hold-out cannot fall back to other data
    ctx = build_context(synthetic_config(["data.holdout=0", "topology.devices=4"]))
    with pytest.raises(DataError, match="leaves 0 image"):
        _pretraining(ctx, "holdout", 10)
