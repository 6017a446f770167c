"""Reading and writing a run directory's files: metrics.jsonl, summary.json, crash-safe writes.

A run directory is created by ``edgelearn run``; this module is the only place that knows its file names.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgelearn.errors import DataError, OutputError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: run directories are not locked
    fcntl = None  # type: ignore[assignment]

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"
LOCK_FILE = ".edgelearn.lock"
"""Held (``flock``) by the process writing a run directory; the kernel drops it when that process dies."""
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
"""Names of the temp files this project's atomic writes create (``tempfile.mkstemp`` with prefix
``.<target>.`` and suffix ``.tmp``: ``.<target>.<8 random characters>.tmp``); a process killed between the
write and the rename leaves one behind (see :func:`remove_stale_temps`)."""

# Keys of a metrics record that, when present, must hold a plain number (NaN allowed: a diverged loss).
NUMERIC_METRIC_KEYS = ("loss", "energy_j", "delay_s", "bytes_up", "bytes_down", "wall_s", "train_loss")
TIER_ACCURACY_KEY = "accuracy_by_tier"

_RUN_DIR_HINT = (
    "pass a run directory created by `edgelearn run` (it holds config.yaml, metrics.jsonl, summary.json)"
)

PathLike = str | os.PathLike[str]


def is_number(value: object) -> bool:
    """True for int/float values that JSON can carry, excluding bools (which are ints to Python)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _run_file(run_dir: PathLike, name: str) -> Path:
    """The path of ``name`` inside ``run_dir``, raising DataError if the directory or the file is missing."""
    directory = Path(run_dir)
    if not directory.is_dir():
        raise DataError(
            f"run directory {str(directory)!r} does not exist or is not a directory", hint=_RUN_DIR_HINT
        )
    path = directory / name
    if not path.is_file():
        raise DataError(f"{name} not found in run directory {str(directory)!r}", hint=_RUN_DIR_HINT)
    return path


def _validate_metrics_record(record: object, path: Path, lineno: int) -> dict[str, Any]:
    """Check one decoded metrics line: an object with an int ``round`` >= 1 and ``accuracy`` in [0, 1]."""
    where = f"{path}, line {lineno}"
    if not isinstance(record, dict):
        raise DataError(
            f"{where}: expected a JSON object per line, got {type(record).__name__}",
            hint='each line of metrics.jsonl must be one object like {"round": 1, "accuracy": 0.5, ...}',
        )
    for key in ("round", "accuracy"):
        if key not in record:
            raise DataError(f"{where}: required key {key!r} is missing", hint="fix or delete that line")
    rnd = record["round"]
    if not isinstance(rnd, int) or isinstance(rnd, bool) or rnd < 1:
        raise DataError(
            f"{where}: 'round' must be an integer >= 1, got {rnd!r}", hint="fix or delete that line"
        )
    acc = record["accuracy"]
    if not is_number(acc) or not math.isfinite(acc) or not 0.0 <= acc <= 1.0:
        raise DataError(
            f"{where}: 'accuracy' must be a number in [0, 1], got {acc!r}",
            hint="accuracy is a fraction, not a percentage; fix or delete that line",
        )
    for key in NUMERIC_METRIC_KEYS:
        if key in record and record[key] is not None and not is_number(record[key]):
            raise DataError(
                f"{where}: {key!r} must be a number, got {record[key]!r}", hint="fix or delete that line"
            )
    by_tier = record.get(TIER_ACCURACY_KEY)
    if by_tier is not None:
        if not isinstance(by_tier, dict) or not all(v is None or is_number(v) for v in by_tier.values()):
            raise DataError(
                f"{where}: {TIER_ACCURACY_KEY!r} must map tier names to numbers (or null), got {by_tier!r}",
                hint="fix or delete that line",
            )
    return record


def read_metrics(run_dir: PathLike) -> list[dict[str, Any]]:
    """All per-round records of ``run_dir/metrics.jsonl`` in file order; blank lines are skipped.

    Extra keys are kept; malformed JSON or a missing/invalid ``round``/``accuracy`` raises DataError with
    the file and 1-based line number.
    """
    path = _run_file(run_dir, METRICS_FILE)
    records: list[dict[str, Any]] = []
    with path.open("r", encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}, line {lineno}: malformed JSON ({exc.msg} at column {exc.colno})",
                    hint="the line may be truncated by an interrupted run; fix or delete that line",
                ) from None
            records.append(_validate_metrics_record(record, path, lineno))
    return records


def target_key(target: float) -> str:
    """The label of an accuracy target in summaries and tables: 0.7 -> "70%", 0.725 -> "72.5%"."""
    return f"{100 * target:g}%"


def rounds_to(records: Sequence[Mapping[str, Any]], target: float, key: str = "accuracy") -> int | None:
    """The first round whose ``key`` (the delivered model's test accuracy) is at least ``target``, or None
    if no record reaches it. Rounds count from 1 (the paper's Table IV counts from 0: ours minus one), and
    only evaluated rounds count (``eval.every``)."""
    for record in records:
        value = record.get(key)
        if is_number(value) and value >= target:
            return int(record["round"])
    return None


def read_summary(run_dir: PathLike) -> dict[str, Any]:
    """The decoded ``run_dir/summary.json`` object; DataError if missing, malformed or not an object."""
    path = _run_file(run_dir, SUMMARY_FILE)
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: malformed JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})",
            hint="summary.json is rewritten at the end of a run; re-run or resume the run to regenerate it",
        ) from None
    if not isinstance(summary, dict):
        raise DataError(
            f"{path}: expected a JSON object, got {type(summary).__name__}",
            hint="summary.json is rewritten at the end of a run; re-run or resume the run to regenerate it",
        )
    return summary


def _json_default(obj: object) -> Any:
    """Serialize numpy scalars/arrays and paths, which runners naturally produce, without importing numpy."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def plain_json(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays nested in dicts and lists turned into plain JSON types (keys
    into strings), without importing numpy."""
    if isinstance(obj, dict):
        return {str(k): plain_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_json(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, str):  # numpy arrays and scalars
        return obj.tolist()
    return obj


def fsync_dir(folder: Path) -> None:
    """fsync a folder, so a rename inside it survives a crash (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: PathLike, data: bytes, *, sync_dir: bool = False) -> Path:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a torn one: a temp file
    named as :data:`TEMP_NAME` in the same folder (created if needed), flushed, fsynced and ``os.replace``d
    over ``path``; with ``sync_dir`` the folder is fsynced too (the rename itself survives a crash)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(target.parent)
    return target


def write_json_atomic(path: PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as JSON so readers see the old file or the new one, never a torn one.

    Writes a temp file in the same directory, flushes and fsyncs it, then ``os.replace``s it over ``path``.
    """
    text = json.dumps(obj, indent=indent, default=_json_default) + "\n"
    return write_bytes_atomic(path, text.encode("utf-8"))


def append_jsonl(path: PathLike, record: Mapping[str, Any], *, fsync: bool = True) -> None:
    """Append ``record`` as one compact JSON line, flushed and (by default) fsynced to survive a crash."""
    line = json.dumps(dict(record), separators=(",", ":"), default=_json_default)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        if fsync:
            os.fsync(handle.fileno())


def _blocking_file(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` (itself included) when it is not a folder, else None."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def ensure_writable_dir(path: PathLike, what: str) -> Path:
    """Create folder ``path`` (with its parents) and prove a file can be written in it, before any work.

    ``what`` names the option in errors (e.g. ``"run directory (--out)"``). A write probe, not ``os.access``:
    it also catches read-only file systems and ``/proc``, and is honest when running as root. Raises
    OutputError (exit 2) naming the path and the reason.
    """
    folder = Path(path)
    hint = "choose another path, or fix this one (it must be a folder you can write to)"
    blocking = _blocking_file(folder)
    if blocking is not None:
        where = "is a file" if blocking == folder else f"is under {blocking}, which is a file"
        raise OutputError(f"{what} {folder} {where}, not a folder", hint=hint)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".edgelearn-write-test.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write {what} {folder}: {exc.strerror or exc}", hint=hint) from None
    return folder


def ensure_writable_file(path: PathLike, what: str) -> Path:
    """Check that file ``path`` can be written (its folder created and writable; not a folder itself) before
    any work, so a long job never fails at its last step. Raises OutputError (exit 2) naming the path."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{what} {target} is a folder, not a file", hint="pass the path of a file to write")
    try:
        ensure_writable_dir(target.parent, "its folder")
    except OutputError as exc:
        raise OutputError(f"cannot write {what} {target}: {exc.message}", hint=exc.hint) from None
    if target.exists() and not os.access(target, os.W_OK):
        raise OutputError(
            f"{what} {target} is not writable", hint="fix its permissions or choose another path"
        )
    return target


@contextlib.contextmanager
def locked_dir(folder: PathLike, what: str = "run directory") -> Iterator[Path]:
    """Hold an exclusive, non-blocking ``flock`` on ``folder/LOCK_FILE`` for the ``with`` block.

    Two processes writing one run directory would interleave its metrics; the second fails at once with an
    OutputError naming the folder (and the holder's pid). The kernel releases the lock when the holder
    exits, even by ``kill -9``, so a lock is never stale. The lock file itself stays (deleting it would let a
    third process lock a new file while the second still holds the old one).
    """
    directory = Path(folder)
    path = directory / LOCK_FILE
    if fcntl is None:  # pragma: no cover - not POSIX
        yield directory
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise OutputError(
            f"cannot create the lock file {path} of {what} {directory}: {exc.strerror or exc}",
            hint="choose a folder you can write to",
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            who = f"another process (pid {holder})" if holder.isdigit() else "another process"
            raise OutputError(
                f"{what} {directory} is in use: {who} holds its lock {path}",
                hint="wait for that process to finish (or stop it), or choose another folder",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield directory
    finally:
        os.close(fd)  # releases the lock


def remove_stale_temps(folder: PathLike) -> list[Path]:
    """Delete the temp files (:data:`TEMP_NAME`) that killed atomic writes left in ``folder``; return them.

    Call it only while holding :func:`locked_dir` on the run directory: then no live process of this project
    is writing there, and every such file is a leftover. Other files are never touched.
    """
    directory = Path(folder)
    if not directory.is_dir():
        return []
    removed = []
    for entry in directory.iterdir():
        if TEMP_NAME.match(entry.name) and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
