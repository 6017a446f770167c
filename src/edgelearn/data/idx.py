"""MNIST / Fashion-MNIST IDX files (plain or gzipped): strict reader, writer, and folder discovery."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from edgelearn.data.dataset import DatasetBundle, make_bundle
from edgelearn.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
# IDX header: two zero bytes, a type code, the number of dimensions, then one big-endian uint32 per dimension.
IDX_UBYTE = 0x08
IDX_MAGIC_PREFIX = b"\x00\x00"
IDX_DIM_BYTES = 4
IDX_PREAMBLE_BYTES = 4
IDX_MAX_DIMS = 3
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
PIXEL_MAX = 255.0

# The four standard file names (LeCun's MNIST site; Fashion-MNIST kept them), each optionally with ".gz".
IDX_FILE_NAMES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
STANDARD_NAMES_TEXT = ", ".join(IDX_FILE_NAMES.values()) + " (each optionally ending in .gz)"
# Debian's `apt-get install dataset-fashion-mnist` puts the four .gz files flat in this folder.
FASHION_MNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
# How many folder levels below data_dir are searched (covers e.g. torchvision's FashionMNIST/raw/).
IDX_SEARCH_DEPTH = 3

MNIST_CLASSES = [str(d) for d in range(10)]
# Label names from the Fashion-MNIST README (Zalando Research).
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
IDX_DATASETS: dict[str, list[str]] = {"mnist": MNIST_CLASSES, "fashion_mnist": FASHION_MNIST_CLASSES}

_REDOWNLOAD_HINT = (
    "the file looks truncated or corrupt (an interrupted download?): fetch it again, or for Fashion-MNIST "
    "reinstall the Debian package dataset-fashion-mnist"
)


def _read_raw(path: Path) -> bytes:
    """The decompressed bytes of ``path``; gzip is detected by its magic bytes, not the file suffix."""
    if not path.is_file():
        raise DataError(
            f"IDX file not found: {path}",
            hint=f"put the standard files in one folder and point data_dir at it: {STANDARD_NAMES_TEXT}",
        )
    raw = path.read_bytes()
    if raw[: len(GZIP_MAGIC)] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"cannot decompress gzipped IDX file {path}: {exc}", hint=_REDOWNLOAD_HINT) from exc


def _kind(ndim: int) -> str:
    return {1: "label", 3: "image"}.get(ndim, "array")


def read_idx(path: str | os.PathLike[str], *, expected_ndim: int | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (plain or gzipped) into a uint8 array, validating header and length."""
    p = Path(path)
    data = _read_raw(p)
    if len(data) < IDX_PREAMBLE_BYTES:
        raise DataError(
            f"{p} is too short to be an IDX file: {len(data)} bytes, the header alone needs at least "
            f"{IDX_PREAMBLE_BYTES + IDX_DIM_BYTES}",
            hint=_REDOWNLOAD_HINT,
        )
    (magic,) = struct.unpack(">I", data[:IDX_PREAMBLE_BYTES])
    type_code, ndim = data[2], data[3]
    if data[:2] != IDX_MAGIC_PREFIX or type_code != IDX_UBYTE or not 1 <= ndim <= IDX_MAX_DIMS:
        raise DataError(
            f"{p} is not an unsigned-byte IDX file: magic number 0x{magic:08x}, expected "
            f"0x{IMAGES_MAGIC:08x} (images) or 0x{LABELS_MAGIC:08x} (labels)",
            hint=f"check that data_dir holds the original MNIST-format files: {STANDARD_NAMES_TEXT}",
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataError(
            f"{p} holds {ndim}-D data (magic 0x{magic:08x}) but {expected_ndim}-D "
            f"{_kind(expected_ndim)} data was expected",
            hint="the image and label files may be swapped or renamed",
        )
    header = IDX_PREAMBLE_BYTES + IDX_DIM_BYTES * ndim
    if len(data) < header:
        raise DataError(
            f"{p}: the IDX header declares {ndim} dimensions ({header} bytes) but the file has only "
            f"{len(data)} bytes",
            hint=_REDOWNLOAD_HINT,
        )
    dims = struct.unpack(f">{ndim}I", data[IDX_PREAMBLE_BYTES:header])
    expected = math.prod(dims)
    found = len(data) - header
    if found != expected:
        raise DataError(
            f"{p}: expected {expected} bytes of {_kind(ndim)} data after the {header}-byte header, "
            f"found {found} (the header declares shape {tuple(dims)})",
            hint=_REDOWNLOAD_HINT,
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write a uint8 array of 1-3 dims as an IDX file, gzipped when ``path`` ends in .gz (fixtures)."""
    arr = np.asarray(array)
    p = Path(path)
    if arr.dtype != np.uint8:
        raise DataError(
            f"write_idx({p}) supports only uint8 arrays, got dtype {arr.dtype}",
            hint="convert with array.astype(np.uint8) after checking values lie in 0..255",
        )
    if not 1 <= arr.ndim <= IDX_MAX_DIMS:
        raise DataError(f"write_idx({p}) supports 1 to {IDX_MAX_DIMS} dimensions, got shape {arr.shape}")
    header = IDX_MAGIC_PREFIX + bytes([IDX_UBYTE, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = header + np.ascontiguousarray(arr).tobytes()
    if p.name.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(payload)


def _files_in(folder: Path) -> dict[str, Path]:
    """The standard IDX files present directly in ``folder`` (uncompressed preferred over .gz)."""
    found: dict[str, Path] = {}
    for role, name in IDX_FILE_NAMES.items():
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[role] = candidate
                break
    return found


def _candidate_folders(root: Path, depth: int) -> list[Path]:
    """Folders at most ``depth`` levels below ``root`` that hold a training-images file, sorted."""
    hits: list[Path] = []
    root_depth = len(root.parts)
    train_names = {IDX_FILE_NAMES["train_images"], IDX_FILE_NAMES["train_images"] + ".gz"}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if train_names.intersection(filenames):
            hits.append(here)
        if len(here.parts) - root_depth >= depth:
            dirnames.clear()
        dirnames.sort()
    return sorted(hits)


def find_idx_files(data_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Locate the four standard IDX files in ``data_dir`` or, failing that, in one folder below it."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data_dir {root} does not exist or is not a folder",
            hint=f"point data.data_dir / --data-dir at the folder holding {STANDARD_NAMES_TEXT}",
        )
    found = _files_in(root)
    if len(found) < len(IDX_FILE_NAMES):
        folders = [f for f in _candidate_folders(root, IDX_SEARCH_DEPTH) if f != root]
        if len(folders) > 1:
            listing = ", ".join(str(f) for f in folders)
            raise DataError(
                f"several folders under {root} hold IDX training images: {listing}",
                hint="point data_dir at exactly one of them",
            )
        if len(folders) == 1 and not found:
            root, found = folders[0], _files_in(folders[0])
    missing = [IDX_FILE_NAMES[r] for r in IDX_FILE_NAMES if r not in found]
    if missing:
        raise DataError(
            f"missing IDX file(s) in {root}: {', '.join(missing)} (with or without .gz)",
            hint=f"an MNIST-format folder needs all four standard files: {STANDARD_NAMES_TEXT}",
        )
    return found


def _to_float_images(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) -> float32 (N, 1, H, W) scaled to [0, 1]."""
    x = images.astype(np.float32)
    x /= PIXEL_MAX
    return x.reshape(x.shape[0], 1, *x.shape[1:])


def _check_pair(images: np.ndarray, labels: np.ndarray, img_path: Path, lbl_path: Path, k: int) -> None:
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{img_path} holds {images.shape[0]} images but {lbl_path} holds {labels.shape[0]} labels",
            hint="the two files must come from the same split and release; fetch them again together",
        )
    if labels.size and int(labels.max()) >= k:
        raise DataError(
            f"{lbl_path} contains label {int(labels.max())}, "
            f"but this dataset has only {k} classes (0..{k - 1})",
            hint="check that data_dir holds the dataset named in the config",
        )


def load_idx_bundle(name: str, data_dir: str | os.PathLike[str] | None = None) -> DatasetBundle:
    """Load ``mnist`` or ``fashion_mnist`` from IDX files as (N, 1, 28, 28) float32, standardized on train."""
    if name not in IDX_DATASETS:
        raise DataError(
            f"load_idx_bundle: unknown IDX dataset {name!r}", hint=f"use one of {sorted(IDX_DATASETS)}"
        )
    if data_dir is None:
        if name != "fashion_mnist":
            raise DataError(
                f"{name} has no default location: its IDX files must be supplied",
                hint=f"pass --data-dir / set data.data_dir to a folder holding {STANDARD_NAMES_TEXT}",
            )
        if not FASHION_MNIST_DEFAULT_DIR.is_dir():
            raise DataError(
                f"fashion_mnist: default folder {FASHION_MNIST_DEFAULT_DIR} not found",
                hint="run `apt-get install dataset-fashion-mnist`, or pass --data-dir / set data.data_dir "
                f"to a folder holding {STANDARD_NAMES_TEXT}",
            )
        data_dir = FASHION_MNIST_DEFAULT_DIR
    files = find_idx_files(data_dir)
    classes = IDX_DATASETS[name]
    arrays: dict[str, np.ndarray] = {}
    for role, path in files.items():
        arrays[role] = read_idx(path, expected_ndim=3 if role.endswith("images") else 1)
    for split in ("train", "test"):
        _check_pair(
            arrays[f"{split}_images"],
            arrays[f"{split}_labels"],
            files[f"{split}_images"],
            files[f"{split}_labels"],
            len(classes),
        )
    train_x = _to_float_images(arrays.pop("train_images"))
    test_x = _to_float_images(arrays.pop("test_images"))
    return make_bundle(
        name,
        train_x,
        arrays["train_labels"].astype(np.int64),
        test_x,
        arrays["test_labels"].astype(np.int64),
        num_classes=len(classes),
        classes=list(classes),
        source=", ".join(str(files[r]) for r in IDX_FILE_NAMES),
    )
