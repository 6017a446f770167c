"""CIFAR-10 / CIFAR-100 "python version" batches, read with a restricted unpickler, never pickle.load."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgelearn.data.dataset import DatasetBundle, make_bundle
from edgelearn.errors import DataError

try:  # numpy >= 2 moved the pickle helper; old files still name numpy.core, new ones numpy._core.
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy < 2
    from numpy.core.multiarray import _reconstruct

CIFAR_IMAGE_SHAPE = (3, 32, 32)
CIFAR_ROW_BYTES = 3 * 32 * 32  # 1024 red, then 1024 green, then 1024 blue values, row-major
PIXEL_MAX = 255.0
# Protocol 2 is what the CIFAR authors' Python 2 cPickle files use, so generated fixtures look alike.
CIFAR_PICKLE_PROTOCOL = 2

CIFAR10_DIRNAME = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"
# Label names as published with CIFAR-10 (Krizhevsky 2009), used when batches.meta is absent.
CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
CIFAR100_DIRNAME = "cifar-100-python"
CIFAR100_TRAIN_FILE = "train"
CIFAR100_TEST_FILE = "test"
CIFAR100_META_FILE = "meta"
# label_mode -> (label key in the batch, label-name key in meta, number of classes)
CIFAR100_LABEL_MODES: dict[str, tuple[str, str, int]] = {
    "fine": ("fine_labels", "fine_label_names", 100),
    "coarse": ("coarse_labels", "coarse_label_names", 20),
}

_LATIN1 = frozenset({"latin1", "latin-1", "iso-8859-1"})


def _latin1_encode(text: object, encoding: object = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode``: protocol-2 pickles from Python 3 store bytes as latin-1 text."""
    if not isinstance(text, str) or not isinstance(encoding, str) or encoding.lower() not in _LATIN1:
        raise pickle.UnpicklingError("only latin-1 text-to-bytes encoding is allowed in a CIFAR batch")
    return text.encode("latin1")


def _plain_bytes(*args: object) -> bytes:
    """Stand-in for ``bytes``: protocol-2 pickles write ``b""`` as ``bytes()``; nothing else is allowed."""
    if not args:
        return b""
    if len(args) == 1 and isinstance(args[0], bytes | bytearray):
        return bytes(args[0])
    raise pickle.UnpicklingError("only bytes() or bytes(<bytes>) is allowed in a CIFAR batch")


NUMERIC_DTYPE_KINDS = "biuf"
"""dtype kinds a CIFAR batch may hold: flipped bytes must never yield object or structured arrays."""
_BYTE_ORDERS = frozenset({"<", ">", "|", "="})


class _NdarrayMarker:
    """What ``numpy.ndarray`` resolves to: only :func:`_plain_reconstruct` accepts it; calling it fails."""

    def __new__(cls, *args: object) -> _NdarrayMarker:
        raise pickle.UnpicklingError("numpy.ndarray may only be the first argument of _reconstruct")


def _plain_dtype(*args: object) -> np.dtype:
    """Stand-in for ``numpy.dtype``: plain numeric dtypes only (a corrupt file could name others)."""
    dtype = np.dtype(*args)  # type: ignore[call-overload]
    if dtype.kind not in NUMERIC_DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(f"dtype {dtype} is not allowed in a CIFAR batch")
    return dtype


def _plain_reconstruct(subtype: object, shape: object, dtype: object) -> np.ndarray:
    """Stand-in for numpy's ``_reconstruct``: an empty numeric ndarray, as numpy's own pickles start with."""
    if subtype is not _NdarrayMarker or not isinstance(shape, tuple) or shape not in ((0,), (1,)):
        raise pickle.UnpicklingError("only _reconstruct(numpy.ndarray, (0,), <dtype>) is allowed")
    return _reconstruct(np.ndarray, shape, _plain_dtype(dtype))


def _check_dtype_state(dtype: np.dtype, state: object) -> None:
    """A dtype's pickled state may only restate its own (a flipped flag could make numpy treat bytes as
    object pointers); the byte order is the one field allowed to differ."""
    canonical = dtype.__reduce__()[2]
    if isinstance(state, tuple) and len(state) == len(canonical):
        order = state[1].decode("latin1") if isinstance(state[1], bytes) else state[1]
        if state[0] == canonical[0] and order in _BYTE_ORDERS and state[2:] == canonical[2:]:
            return
    raise pickle.UnpicklingError(f"unexpected state for dtype {dtype} in a CIFAR batch")


# The only globals a CIFAR batch may reference: numpy array reconstruction and bytes rebuilding.
_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("numpy.core.multiarray", "_reconstruct"): _plain_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _plain_reconstruct,
    ("numpy", "ndarray"): _NdarrayMarker,
    ("numpy", "dtype"): _plain_dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "bytes"): _plain_bytes,
    ("builtins", "bytes"): _plain_bytes,
}


class CifarUnpickler(pickle._Unpickler):
    """Unpickler that resolves only the globals a CIFAR batch needs and refuses everything else.

    It is the pure-Python unpickler on purpose: its memo is a dict, whereas the C one sizes its memo array
    from the index a (corrupt) PUT opcode names, so a flipped byte could make it fill gigabytes (found by
    fuzzing, tests/test_config_fuzz.py). A batch holds a few thousand opcodes, so the speed cost is small.
    For the same reason BUILD on a dtype is checked and protocol-5 buffers are refused (a mutated opcode
    made numpy free a bytearray it still pointed into).
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, file: IO[bytes], path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def _load_build(self) -> None:
        if isinstance(self.stack[-2], np.dtype):  # type: ignore[attr-defined]
            _check_dtype_state(self.stack[-2], self.stack[-1])  # type: ignore[attr-defined]
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]

    def _refuse_buffer(self) -> None:
        raise pickle.UnpicklingError("protocol-5 buffers are not allowed in a CIFAR batch")

    dispatch[pickle.BUILD[0]] = _load_build
    for _op in (pickle.BYTEARRAY8, pickle.NEXT_BUFFER, pickle.READONLY_BUFFER):
        dispatch[_op[0]] = _refuse_buffer
    del _op

    def find_class(self, module: str, name: str) -> Any:
        """Return an allow-listed global or raise DataError without importing or calling anything."""
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise DataError(
                f"refusing to load {module}.{name} from {self._path}: not a CIFAR batch",
                hint="CIFAR batches hold only numpy arrays, lists and bytes; use the official "
                "'python version' files and never load pickles from untrusted sources",
            )
        return target


def _key_text(key: object) -> str:
    return key.decode("latin1") if isinstance(key, bytes) else str(key)


def read_cifar_batch(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Unpickle one CIFAR batch/meta file safely; keys are returned as str (files store them as bytes)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(
            f"CIFAR file not found: {p}",
            hint="download and extract the CIFAR 'python version' archive, and point data_dir at it",
        )
    try:
        with p.open("rb") as fh:
            obj = CifarUnpickler(fh, p).load()
    except DataError:
        raise
    except Exception as exc:  # any unpickling failure of untrusted bytes means a corrupt file
        raise DataError(
            f"cannot read CIFAR batch {p}: {type(exc).__name__}: {exc}",
            hint="the file looks truncated or corrupt: extract the original archive again",
        ) from exc
    if not isinstance(obj, dict):
        raise DataError(f"{p} is not a CIFAR batch: it holds a {type(obj).__name__}, expected a dict")
    return {_key_text(k): v for k, v in obj.items()}


def _get(batch: Mapping[str, Any], key: str, path: Path) -> Any:
    if key not in batch:
        found = ", ".join(sorted(str(k) for k in batch))
        raise DataError(
            f"{path} has no {key!r} entry (keys found: {found})",
            hint="the file is truncated, from another dataset, or the wrong label_mode was chosen",
        )
    return batch[key]


def batch_arrays(
    batch: Mapping[str, Any], path: Path, label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validated (uint8 (n, 3072) rows, int64 (n,) labels) from an unpickled batch."""
    data = np.asarray(_get(batch, "data", path))
    if data.ndim != 2 or data.shape[1] != CIFAR_ROW_BYTES or not np.issubdtype(data.dtype, np.integer):
        raise DataError(
            f"{path}: 'data' must be rows of {CIFAR_ROW_BYTES} uint8 values, got shape {data.shape} "
            f"dtype {data.dtype}",
            hint="the file is not a CIFAR 'python version' batch or it is corrupt",
        )
    if data.dtype != np.uint8:
        if data.size and (int(data.min()) < 0 or int(data.max()) > int(PIXEL_MAX)):
            raise DataError(f"{path}: pixel values must lie in 0..255")
        data = data.astype(np.uint8)
    labels = np.asarray(_get(batch, label_key, path))
    if (
        labels.ndim != 1
        or labels.shape[0] != data.shape[0]
        or (labels.size and not np.issubdtype(labels.dtype, np.integer))
    ):
        raise DataError(
            f"{path}: {label_key!r} must be {data.shape[0]} integer labels (one per image row), "
            f"got shape {labels.shape} dtype {labels.dtype}",
            hint="the file is truncated or corrupt: extract the original archive again",
        )
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(
            f"{path}: {label_key!r} has values {int(labels.min())}..{int(labels.max())}, "
            f"expected 0..{num_classes - 1}",
            hint="check that data_dir holds the dataset named in the config",
        )
    return data, labels.astype(np.int64)


def _resolve_dir(data_dir: str | os.PathLike[str] | None, dataset: str, dirname: str, marker: str) -> Path:
    """``data_dir`` itself if it holds ``marker``, else ``data_dir/dirname``; DataError otherwise."""
    if data_dir is None:
        raise DataError(
            f"{dataset} has no default location: its files must be supplied",
            hint=f"pass --data-dir / set data.data_dir to the extracted {dirname} folder or its parent",
        )
    root = Path(data_dir).expanduser()
    if root.is_file():
        raise DataError(
            f"{dataset}: data_dir {root} is a file, expected the extracted {dirname} folder",
            hint=f"extract the archive first (e.g. tar xzf {root.name}) and point data_dir at the result",
        )
    for folder in (root, root / dirname):
        if (folder / marker).is_file():
            return folder
    raise DataError(
        f"{dataset}: found neither {root / marker} nor {root / dirname / marker}",
        hint=f"point data_dir at the extracted {dirname} folder or the folder that contains it",
    )


def _stack(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate batches into float32 (N, 3, 32, 32) images in [0, 1] and int64 labels."""
    rows = np.concatenate([d for d, _ in parts]) if len(parts) > 1 else parts[0][0]
    x = rows.astype(np.float32).reshape(-1, *CIFAR_IMAGE_SHAPE)
    x /= PIXEL_MAX
    return x, np.concatenate([y for _, y in parts])


def _label_names(meta_path: Path, key: str, count: int) -> list[str] | None:
    """Class names from a meta file, or None when it is absent or lists the wrong number of names."""
    if not meta_path.is_file():
        return None
    names = read_cifar_batch(meta_path).get(key)
    if not isinstance(names, list) or len(names) != count:
        return None
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def load_cifar10_bundle(data_dir: str | os.PathLike[str] | None) -> DatasetBundle:
    """CIFAR-10 (50,000 train / 10,000 test, 3x32x32) from ``cifar-10-batches-py`` or its parent folder."""
    folder = _resolve_dir(data_dir, "cifar10", CIFAR10_DIRNAME, CIFAR10_TRAIN_FILES[0])
    num_classes = len(CIFAR10_CLASSES)
    paths = [folder / f for f in CIFAR10_TRAIN_FILES]
    train = [batch_arrays(read_cifar_batch(p), p, "labels", num_classes) for p in paths]
    test_path = folder / CIFAR10_TEST_FILE
    test = [batch_arrays(read_cifar_batch(test_path), test_path, "labels", num_classes)]
    classes = _label_names(folder / CIFAR10_META_FILE, "label_names", num_classes) or list(CIFAR10_CLASSES)
    train_x, train_y = _stack(train)
    test_x, test_y = _stack(test)
    return make_bundle(
        "cifar10",
        train_x,
        train_y,
        test_x,
        test_y,
        num_classes=num_classes,
        classes=classes,
        source=f"{folder} ({', '.join(CIFAR10_TRAIN_FILES)}, {CIFAR10_TEST_FILE})",
    )


def load_cifar100_bundle(data_dir: str | os.PathLike[str] | None, label_mode: str = "fine") -> DatasetBundle:
    """CIFAR-100 from ``cifar-100-python`` or its parent, with 100 ``fine`` or 20 ``coarse`` labels."""
    if label_mode not in CIFAR100_LABEL_MODES:
        raise DataError(
            f"cifar100: unknown label_mode {label_mode!r}", hint=f"use one of {sorted(CIFAR100_LABEL_MODES)}"
        )
    label_key, names_key, num_classes = CIFAR100_LABEL_MODES[label_mode]
    folder = _resolve_dir(data_dir, "cifar100", CIFAR100_DIRNAME, CIFAR100_TRAIN_FILE)
    train_path, test_path = folder / CIFAR100_TRAIN_FILE, folder / CIFAR100_TEST_FILE
    train = batch_arrays(read_cifar_batch(train_path), train_path, label_key, num_classes)
    test = batch_arrays(read_cifar_batch(test_path), test_path, label_key, num_classes)
    train_x, train_y = _stack([train])
    test_x, test_y = _stack([test])
    return make_bundle(
        "cifar100",
        train_x,
        train_y,
        test_x,
        test_y,
        num_classes=num_classes,
        classes=_label_names(folder / CIFAR100_META_FILE, names_key, num_classes),
        source=f"{folder} ({CIFAR100_TRAIN_FILE}, {CIFAR100_TEST_FILE}; label_mode={label_mode})",
    )


def write_cifar_batch(
    path: str | os.PathLike[str],
    data: np.ndarray,
    labels: Sequence[int],
    label_key: str = "labels",
    *,
    extra_labels: Mapping[str, Sequence[int]] | None = None,
    batch_label: str = "edgelearn generated batch",
) -> None:
    """Write a batch like the official files (protocol 2, bytes keys, uint8 ``data``, plain-list labels).

    For CIFAR-100 pass ``label_key="fine_labels"`` and ``extra_labels={"coarse_labels": [...]}``.
    """
    arr = np.asarray(data)
    if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != CIFAR_ROW_BYTES:
        raise DataError(
            f"write_cifar_batch({path}): data must be uint8 rows of {CIFAR_ROW_BYTES}, got shape {arr.shape} "
            f"dtype {arr.dtype}"
        )
    batch: dict[bytes, Any] = {
        b"batch_label": batch_label.encode("latin1"),
        b"data": np.ascontiguousarray(arr),
        label_key.encode("latin1"): [int(v) for v in labels],
    }
    for key, values in (extra_labels or {}).items():
        batch[key.encode("latin1")] = [int(v) for v in values]
    _dump(path, batch)


def write_cifar_meta(path: str | os.PathLike[str], names: Mapping[str, Sequence[str]]) -> None:
    """Write a meta file like ``batches.meta`` / ``meta``: e.g. ``{"label_names": [...]}`` as bytes lists."""
    _dump(path, {k.encode("latin1"): [n.encode("latin1") for n in v] for k, v in names.items()})


def _dump(path: str | os.PathLike[str], obj: object) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("wb") as fh:
        pickle.dump(obj, fh, protocol=CIFAR_PICKLE_PROTOCOL)
