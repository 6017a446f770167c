"""CIFAR-10/100 python batches: round trip on tiny generated files, corruption and malicious pickles."""

from __future__ import annotations

import _codecs
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from edgelearn.data.cifar import (
    CIFAR10_CLASSES,
    load_cifar10_bundle,
    load_cifar100_bundle,
    read_cifar_batch,
    write_cifar_batch,
    write_cifar_meta,
)
from edgelearn.errors import DataError

ROW = 3072


def _rows(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, ROW), dtype=np.uint8)


def _make_cifar10(parent: Path, rows_per_batch: int = 4, n_test: int = 3) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(0)
    folder = parent / "cifar-10-batches-py"
    all_rows, all_labels = [], []
    for i in range(1, 6):
        data, labels = _rows(rng, rows_per_batch), rng.integers(0, 10, rows_per_batch).tolist()
        write_cifar_batch(folder / f"data_batch_{i}", data, labels)
        all_rows.append(data)
        all_labels += labels
    write_cifar_batch(folder / "test_batch", _rows(rng, n_test), rng.integers(0, 10, n_test).tolist())
    return np.concatenate(all_rows), all_labels


def test_written_batch_looks_like_the_official_files(tmp_path: Path) -> None:
    p = tmp_path / "data_batch_1"
    write_cifar_batch(p, np.zeros((2, ROW), dtype=np.uint8), [3, 4])
    raw = p.read_bytes()
    assert raw[:2] == b"\x80\x02"  # pickle protocol 2
    batch = read_cifar_batch(p)
    assert sorted(batch) == ["batch_label", "data", "labels"]
    assert batch["labels"] == [3, 4] and batch["data"].dtype == np.uint8


@pytest.mark.parametrize("point_at", ["folder", "parent"])
def test_cifar10_round_trip(tmp_path: Path, point_at: str) -> None:
    rows, labels = _make_cifar10(tmp_path)
    data_dir = tmp_path / "cifar-10-batches-py" if point_at == "folder" else tmp_path
    b = load_cifar10_bundle(data_dir)
    assert b.train.x.shape == (20, 3, 32, 32) and b.test.x.shape == (3, 3, 32, 32)
    assert b.input_shape == (3, 32, 32) and b.num_classes == 10
    assert b.train.y.tolist() == labels  # batches concatenated in order 1..5
    assert b.classes == CIFAR10_CLASSES
    # Per-channel stats: channel c is columns c*1024..(c+1)*1024 of every row, scaled by 1/255.
    for c in range(3):
        assert b.mean[c] == pytest.approx(rows[:, c * 1024 : (c + 1) * 1024].mean() / 255.0, rel=1e-6)
    undone = b.train.x.astype(np.float64) * np.array(b.std)[None, :, None, None]
    undone = (undone + np.array(b.mean)[None, :, None, None]) * 255.0
    assert np.allclose(undone.reshape(20, ROW), rows, atol=1e-3)
    # Pixel (channel 1 = green, row 2, column 5) of image 0 is byte 1024 + 2*32 + 5 of its row.
    assert undone[0, 1, 2, 5] == pytest.approx(rows[0, 1024 + 69], abs=1e-3)


def test_cifar10_meta_names_are_used(tmp_path: Path) -> None:
    _make_cifar10(tmp_path)
    names = [f"n{i}" for i in range(10)]
    write_cifar_meta(tmp_path / "cifar-10-batches-py" / "batches.meta", {"label_names": names})
    assert load_cifar10_bundle(tmp_path).classes == names


@pytest.mark.parametrize(("mode", "k"), [("fine", 100), ("coarse", 20)])
def test_cifar100_round_trip(tmp_path: Path, mode: str, k: int) -> None:
    rng = np.random.default_rng(5)
    folder = tmp_path / "cifar-100-python"
    fine, coarse = [99, 0, 42, 7], [19, 0, 3, 1]
    write_cifar_batch(
        folder / "train", _rows(rng, 4), fine, "fine_labels", extra_labels={"coarse_labels": coarse}
    )
    write_cifar_batch(
        folder / "test", _rows(rng, 2), [5, 6], "fine_labels", extra_labels={"coarse_labels": [2, 3]}
    )
    write_cifar_meta(
        folder / "meta",
        {
            "fine_label_names": [f"f{i}" for i in range(100)],
            "coarse_label_names": [f"c{i}" for i in range(20)],
        },
    )
    b = load_cifar100_bundle(tmp_path, label_mode=mode)
    assert b.num_classes == k and b.train.x.shape == (4, 3, 32, 32)
    assert b.train.y.tolist() == (fine if mode == "fine" else coarse)
    assert b.test.y.tolist() == ([5, 6] if mode == "fine" else [2, 3])
    assert (
        b.classes is not None and len(b.classes) == k and b.classes[1] == ("f1" if mode == "fine" else "c1")
    )


def test_cifar100_bad_label_mode(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="label_mode"):
        load_cifar100_bundle(tmp_path, label_mode="medium")


def test_truncated_batch_names_file(tmp_path: Path) -> None:
    _make_cifar10(tmp_path)
    p = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="data_batch_3") as err:
        load_cifar10_bundle(tmp_path)
    assert "truncated or corrupt" in str(err.value)


def test_missing_key_and_bad_shapes(tmp_path: Path) -> None:
    _make_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    rng = np.random.default_rng(1)
    write_cifar_batch(folder / "test_batch", _rows(rng, 2), [1, 2], "fine_labels")
    with pytest.raises(DataError, match="test_batch has no 'labels' entry"):
        load_cifar10_bundle(tmp_path)
    write_cifar_batch(folder / "test_batch", _rows(rng, 2), [1, 2, 3])
    with pytest.raises(DataError, match="must be 2 integer labels"):
        load_cifar10_bundle(tmp_path)
    write_cifar_batch(folder / "test_batch", _rows(rng, 2), [1, 10])
    with pytest.raises(DataError, match="expected 0..9"):
        load_cifar10_bundle(tmp_path)
    with (folder / "test_batch").open("wb") as fh:
        pickle.dump({b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]}, fh, protocol=2)
    with pytest.raises(DataError, match="rows of 3072"):
        load_cifar10_bundle(tmp_path)


def test_plain_list_batch_needs_no_globals(tmp_path: Path) -> None:
    p = tmp_path / "batch"
    with p.open("wb") as fh:
        pickle.dump({"data": [[7] * ROW], "labels": [2]}, fh, protocol=4)
    batch = read_cifar_batch(p)
    assert batch["labels"] == [2] and batch["data"][0][0] == 7


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_executing(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil(marker)}, protocol=2))
    with pytest.raises(DataError) as err:
        load_cifar10_bundle(tmp_path)
    msg = str(err.value)
    assert "refusing to load" in msg and "system" in msg and "data_batch_1" in msg
    assert "not a CIFAR batch" in msg
    assert not marker.exists()


class _Codec:
    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (_codecs.encode, ("abc", "rot13"))


def test_allowed_global_with_disallowed_arguments_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "batch"
    p.write_bytes(pickle.dumps({b"data": _Codec()}, protocol=2))
    with pytest.raises(DataError, match="latin-1"):
        read_cifar_batch(p)


def test_non_dict_and_missing_paths(tmp_path: Path) -> None:
    p = tmp_path / "batch"
    p.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(DataError, match="holds a list"):
        read_cifar_batch(p)
    with pytest.raises(DataError, match="--data-dir"):
        load_cifar10_bundle(None)
    with pytest.raises(DataError, match="found neither"):
        load_cifar10_bundle(tmp_path)
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"\x1f\x8b")
    with pytest.raises(DataError, match="tar xzf cifar-10-python.tar.gz"):
        load_cifar10_bundle(archive)


def test_old_numpy_module_path_is_accepted(tmp_path: Path) -> None:
    # Files pickled by numpy < 2 (like the official ones) reference numpy.core.multiarray._reconstruct.
    p = tmp_path / "batch"
    rows = np.arange(ROW, dtype=np.uint8)[None, :]
    raw = pickle.dumps({b"data": rows, b"labels": [1]}, protocol=2)
    assert b"numpy._core.multiarray" in raw
    p.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert np.array_equal(read_cifar_batch(p)["data"], rows)
