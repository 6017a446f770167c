"""Atomic, checksummed checkpoints that load without executing code (``torch.load(weights_only=True)``).

A checkpoint is one ``ckpt-<round>.pt`` file plus a ``.sha256`` sidecar. Writing goes to a temporary file in
the same folder, is fsynced and renamed into place, so a killed process leaves either the old or the new file.
Loading walks from the newest checkpoint back, skipping (with a warning) any whose checksum or contents fail.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgelearn.errors import DataError
from edgelearn.report.io import write_bytes_atomic

log = logging.getLogger(__name__)

_NAME = re.compile(r"^ckpt-(\d+)\.pt$")
_ARRAY_TAG = "__ndarray__"


def encode(obj: Any) -> Any:
    """Numpy arrays -> tagged torch tensors (recursively), so the weights-only unpickler accepts them."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise TypeError(f"cannot checkpoint a numpy array of dtype {obj.dtype}")
        return {_ARRAY_TAG: torch.from_numpy(np.ascontiguousarray(obj)).clone()}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        return {(k if isinstance(k, (str, int)) else str(k)): encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    return obj


def decode(obj: Any) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(obj, dict):
        if set(obj) == {_ARRAY_TAG}:
            return obj[_ARRAY_TAG].numpy()
        return {k: decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    return obj


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file, fsync and rename, then fsync the folder
    (:func:`~edgelearn.report.io.write_bytes_atomic`; a run removes the temp files a killed process left)."""
    write_bytes_atomic(path, data, sync_dir=True)


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(round, path) of the checkpoints in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(folder: Path, round_: int, payload: Mapping[str, Any], *, keep: int = 2) -> Path:
    """Write round ``round_``'s checkpoint atomically with its checksum; keep the newest ``keep``."""
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(encode(payload), buf)
    data = buf.getvalue()
    path = folder / f"ckpt-{round_:06d}.pt"
    write_atomic(path, data)
    write_atomic(path.with_suffix(".pt.sha256"), hashlib.sha256(data).hexdigest().encode())
    remove_checkpoints(folder, keep=keep)
    return path


def remove_checkpoints(folder: Path, *, keep: int = 0) -> None:
    """Delete the checkpoints in ``folder`` (each with its checksum file) but the newest ``keep``."""
    saved = checkpoints(folder)
    for _, old in saved[: max(0, len(saved) - keep)]:  # fewer than `keep` saved: none deleted
        old.unlink(missing_ok=True)
        old.with_suffix(".pt.sha256").unlink(missing_ok=True)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Verify and load one checkpoint; any problem is a DataError naming the file."""
    try:
        data = path.read_bytes()
        expected = path.with_suffix(".pt.sha256").read_text().strip()
    except OSError as exc:
        raise DataError(f"checkpoint {path} cannot be read: {exc}") from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise DataError(f"checkpoint {path} is corrupt: its SHA-256 does not match {path.name}.sha256")
    try:
        payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # the weights-only unpickler refuses anything unexpected
        raise DataError(f"checkpoint {path} cannot be loaded safely: {exc}") from None
    if not isinstance(payload, dict):
        raise DataError(f"checkpoint {path} does not hold a mapping")
    return decode(payload)


def load_latest(folder: Path) -> tuple[int, dict[str, Any]] | None:
    """The newest readable checkpoint as (round, payload); corrupt ones are skipped with a warning."""
    for round_, path in reversed(checkpoints(folder)):
        try:
            return round_, read_checkpoint(path)
        except DataError as exc:
            log.warning("%s; falling back to the previous checkpoint", exc.message)
    return None
