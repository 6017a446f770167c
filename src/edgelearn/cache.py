"""A per-user cache of derived arrays, so later runs skip the libraries that built them.

Where: ``$EDGELEARN_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/edgelearn``, else ``~/.cache/edgelearn``.
Entries live under a subfolder named by the package version, so an upgrade never reads an older layout.

An entry is one ``.npz`` file (numpy's zip of ``.npy`` arrays, read with ``allow_pickle=False``: loading
never runs code) holding the arrays plus a ``sha256`` member over their names, dtypes, shapes and bytes.
It is written to a temporary file in the same folder and renamed into place, so a reader sees a whole entry
or none. A file that is missing, unreadable or whose digest does not match is rebuilt; a cache folder that
cannot be written only costs the rebuild next time (a warning, never a failed run).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from edgelearn import __version__
from edgelearn.report.io import write_bytes_atomic

log = logging.getLogger(__name__)

CACHE_ENV = "EDGELEARN_CACHE_DIR"
"""Environment variable naming the cache folder (overrides the XDG default)."""
DIGEST_KEY = "sha256"
"""Name of the member holding the hex digest of the other arrays."""
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def cache_dir() -> Path:
    """The cache root for this package version (not created here)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        root = Path(override).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "edgelearn"
    return root / __version__


def arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over each array's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def _read(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or None if it is missing or damaged (bad zip, pickle, wrong digest)."""
    if not path.is_file():
        return None
    try:
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        stored = arrays.pop(DIGEST_KEY, None)
        if stored is None or str(stored) != arrays_digest(arrays):
            raise ValueError("checksum mismatch")
    except Exception as exc:  # noqa: BLE001 - any unreadable entry is rebuilt, whatever broke it
        log.warning("cache file %s is damaged (%s): rebuilding it", path, exc)
        return None
    return arrays


def _write(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` and their digest to ``path`` atomically (temp file, fsync, rename)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{DIGEST_KEY: np.asarray(arrays_digest(arrays))})
    write_bytes_atomic(path, buffer.getvalue())


def cached_arrays(name: str, build: Callable[[], Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays cached under ``name``, calling ``build`` (and caching its result) when none are usable.

    ``build`` must be deterministic: the cached arrays stand in for its result bit for bit (same bytes, same
    dtypes). Array names must not be ``sha256``; no object arrays (they would need pickle).
    """
    if not _NAME.match(name):
        raise ValueError(f"cache entry name {name!r} must be letters, digits, '_', '.' or '-'")
    path = cache_dir() / f"{name}.npz"
    found = _read(path)
    if found is not None:
        return found
    arrays = {key: np.asarray(value) for key, value in build().items()}
    if DIGEST_KEY in arrays or any(a.dtype.hasobject for a in arrays.values()):
        raise ValueError(f"cache entry {name!r}: no array may be named {DIGEST_KEY!r} or hold objects")
    try:
        _write(path, arrays)
    except OSError as exc:
        log.warning(
            "could not write cache file %s (%s); set %s to a writable folder to cache it",
            path,
            exc,
            CACHE_ENV,
        )
    return arrays
