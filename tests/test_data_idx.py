"""IDX (MNIST / Fashion-MNIST) reader, writer and folder discovery on tiny generated files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from edgelearn.data.idx import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DEFAULT_DIR,
    find_idx_files,
    load_idx_bundle,
    read_idx,
    write_idx,
)
from edgelearn.errors import DataError


def _write_split(folder: Path, n_train: int, n_test: int, *, gz: bool, seed: int = 0, hw: int = 4) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, hw, hw), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, hw, hw), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, arr in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), arr)
    return arrays


def test_header_bytes_hand_computed(tmp_path: Path) -> None:
    p = tmp_path / "a-idx2-ubyte"
    write_idx(p, np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8))
    assert p.read_bytes() == bytes.fromhex("00000802 00000002 00000003 010203040506")


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (4, 2, 3)])
def test_round_trip(tmp_path: Path, suffix: str, shape: tuple[int, ...]) -> None:
    arr = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    p = tmp_path / f"x{suffix}"
    write_idx(p, arr)
    assert (p.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    out = read_idx(p)
    assert out.dtype == np.uint8 and np.array_equal(out, arr)


def test_gzip_is_detected_by_magic_not_suffix(tmp_path: Path) -> None:
    arr = np.arange(10, dtype=np.uint8)
    gz_named_plain = tmp_path / "labels"
    write_idx(tmp_path / "tmp.gz", arr)
    gz_named_plain.write_bytes((tmp_path / "tmp.gz").read_bytes())
    assert np.array_equal(read_idx(gz_named_plain), arr)
    plain_named_gz = tmp_path / "plain.gz"
    write_idx(tmp_path / "plain", arr)
    plain_named_gz.write_bytes((tmp_path / "plain").read_bytes())
    assert np.array_equal(read_idx(plain_named_gz), arr)


def test_truncated_file_names_file_and_sizes(tmp_path: Path) -> None:
    p = tmp_path / "train-images-idx3-ubyte"
    write_idx(p, np.zeros((10, 28, 28), dtype=np.uint8))
    p.write_bytes(p.read_bytes()[: 16 + 1000])
    with pytest.raises(DataError) as err:
        read_idx(p)
    msg = str(err.value)
    assert str(p) in msg
    assert "expected 7840 bytes of image data after the 16-byte header, found 1000" in msg
    assert "How to fix" in msg


def test_truncated_gzip_raises_data_error(tmp_path: Path) -> None:
    p = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_idx(p, np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        read_idx(p)


def test_extra_trailing_bytes_are_rejected(tmp_path: Path) -> None:
    p = tmp_path / "labels"
    write_idx(p, np.arange(4, dtype=np.uint8))
    p.write_bytes(p.read_bytes() + b"\x00\x00")
    with pytest.raises(DataError, match="expected 4 bytes of label data after the 8-byte header, found 6"):
        read_idx(p)


def test_wrong_magic_and_html_are_rejected(tmp_path: Path) -> None:
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(bytes.fromhex("00000d03 00000001 00000001 00000001 ff"))  # float type code 0x0d
    with pytest.raises(DataError, match="magic number 0x00000d03"):
        read_idx(p)
    p.write_bytes(b"<html><body>Not Found</body></html>")
    with pytest.raises(DataError, match="not an unsigned-byte IDX file"):
        read_idx(p)
    p.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="too short"):
        read_idx(p)


def test_expected_ndim_mismatch(tmp_path: Path) -> None:
    p = tmp_path / "train-labels-idx1-ubyte"
    write_idx(p, np.zeros((2, 2, 2), dtype=np.uint8))
    with pytest.raises(DataError, match="1-D label data was expected"):
        read_idx(p, expected_ndim=1)


def test_missing_file_names_path_and_standard_names(tmp_path: Path) -> None:
    p = tmp_path / "nothing-here"
    with pytest.raises(DataError) as err:
        read_idx(p)
    assert str(p) in str(err.value) and "train-images-idx3-ubyte" in str(err.value)


def test_write_idx_rejects_non_uint8(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="uint8"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))
    with pytest.raises(DataError, match="dimensions"):
        write_idx(tmp_path / "x", np.zeros((1, 1, 1, 1), dtype=np.uint8))


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_bundle_round_trip(tmp_path: Path, gz: bool) -> None:
    arrays = _write_split(tmp_path, 20, 6, gz=gz)
    b = load_idx_bundle("fashion_mnist", tmp_path)
    assert b.train.x.shape == (20, 1, 4, 4) and b.test.x.shape == (6, 1, 4, 4)
    assert b.input_shape == (1, 4, 4) and b.num_classes == 10 and b.classes == FASHION_MNIST_CLASSES
    assert b.train.y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert b.test.y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    train_raw = arrays["train-images-idx3-ubyte"].astype(np.float64) / 255.0
    assert b.mean[0] == pytest.approx(train_raw.mean(), rel=1e-6)
    assert b.std[0] == pytest.approx(train_raw.std(), rel=1e-5)
    # Test images are standardized with the TRAIN statistics.
    undone = (b.test.x[:, 0].astype(np.float64) * b.std[0] + b.mean[0]) * 255.0
    assert np.allclose(undone, arrays["t10k-images-idx3-ubyte"], atol=1e-3)
    assert str(tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))) in b.source


def test_count_mismatch_names_both_files(tmp_path: Path) -> None:
    _write_split(tmp_path, 20, 6, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(19, dtype=np.uint8))
    with pytest.raises(DataError, match="holds 20 images but .*train-labels-idx1-ubyte holds 19 labels"):
        load_idx_bundle("mnist", tmp_path)


def test_label_out_of_range(tmp_path: Path) -> None:
    _write_split(tmp_path, 5, 2, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([1, 10], dtype=np.uint8))
    with pytest.raises(DataError, match="contains label 10"):
        load_idx_bundle("mnist", tmp_path)


def test_nested_layout_is_discovered(tmp_path: Path) -> None:
    nested = tmp_path / "FashionMNIST" / "raw"
    _write_split(nested, 4, 2, gz=True)
    files = find_idx_files(tmp_path)
    assert files["test_labels"] == nested / "t10k-labels-idx1-ubyte.gz"
    _write_split(tmp_path / "MNIST" / "raw", 4, 2, gz=False)
    with pytest.raises(DataError, match="several folders"):
        find_idx_files(tmp_path)


def test_missing_files_listed(tmp_path: Path) -> None:
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((1, 2, 2), dtype=np.uint8))
    with pytest.raises(DataError) as err:
        find_idx_files(tmp_path)
    msg = str(err.value)
    assert "t10k-images-idx3-ubyte" in msg and "train-labels-idx1-ubyte" in msg
    with pytest.raises(DataError, match="does not exist"):
        find_idx_files(tmp_path / "absent")


def test_mnist_without_data_dir_explains_how() -> None:
    with pytest.raises(DataError, match="--data-dir"):
        load_idx_bundle("mnist", None)
    with pytest.raises(DataError, match="unknown IDX dataset"):
        load_idx_bundle("emnist", None)


@pytest.mark.skipif(
    not FASHION_MNIST_DEFAULT_DIR.is_dir(), reason="Debian dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist_from_debian_package() -> None:
    b = load_idx_bundle("fashion_mnist")
    assert b.train.x.shape == (60000, 1, 28, 28) and b.test.x.shape == (10000, 1, 28, 28)
    assert np.bincount(b.train.y).tolist() == [6000] * 10
    # Widely quoted Fashion-MNIST train statistics: mean 0.2860, std 0.3530.
    assert b.mean[0] == pytest.approx(0.2860, abs=5e-4) and b.std[0] == pytest.approx(0.3530, abs=5e-4)


def test_gzip_reference_matches_stdlib(tmp_path: Path) -> None:
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    write_idx(tmp_path / "a.gz", arr)
    expected = bytes.fromhex("00000802 00000002 00000003") + bytes(range(6))
    assert gzip.decompress((tmp_path / "a.gz").read_bytes()) == expected
