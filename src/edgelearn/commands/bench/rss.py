"""Memory readings of the benchmark: this process's peak RSS (resettable on Linux) and other processes'
(Ray workers), from ``getrusage`` and /proc."""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Iterable
from pathlib import Path

BYTES_PER_MB = 2**20
KB_PER_MB = 1024


def _proc_status_kb(pid: int | str, key: str) -> float | None:
    """A ``kB`` field (VmHWM, VmRSS) of /proc/<pid>/status, or None off Linux or for a vanished process."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (``getrusage``; KiB on Linux, bytes on macOS)."""
    peak = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak / BYTES_PER_MB if sys.platform == "darwin" else peak / KB_PER_MB


def current_rss_mb(pid: int | str = "self") -> float | None:
    """Current resident set size of a process in MiB (Linux), or None where /proc is unavailable."""
    kb = _proc_status_kb(pid, "VmRSS")
    return None if kb is None else kb / KB_PER_MB


def process_peak_rss_mb(pid: int | str) -> float | None:
    """Peak resident set size (VmHWM) of any process in MiB (Linux), or None."""
    kb = _proc_status_kb(pid, "VmHWM")
    return None if kb is None else kb / KB_PER_MB


def reset_peak_rss(pid: int | str = "self") -> bool:
    """Reset a process's peak-RSS mark to its current RSS (Linux ``clear_refs`` 5); False if not possible."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def descendant_pids(root: int | None = None) -> list[int]:
    """Process ids below ``root`` (default: this process) in the process tree, from /proc (Linux)."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = entry.read_text(encoding="ascii", errors="replace")
            ppid = int(text[text.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.parent.name))
    out: list[int] = []
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return sorted(out)


def sum_peaks(pids: Iterable[int]) -> float | None:
    peaks = [p for p in (process_peak_rss_mb(pid) for pid in pids) if p is not None]
    return float(sum(peaks)) if peaks else None
