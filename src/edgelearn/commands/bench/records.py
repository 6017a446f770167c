"""The benchmark's JSON records (one per measurement, or a failure record saying why there is none), the
ratios between them and the Done-when summary."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from edgelearn.commands.bench.plan import PAIRED_PREFIX, THREADS_PREFIX
from edgelearn.commands.bench.rss import KB_PER_MB

NUMERIC_KEYS = ("wall_s", "loop_s", "samples_per_s", "updates_per_s", "peak_rss_mb", "final_accuracy")
RECORD_KEYS = ("workload", "executor", *NUMERIC_KEYS)
MIN_DURATION_S = 1e-12
"""Floor of a timed duration in rate computations (a clock may report 0 for a sub-tick region)."""
HALF = 0.5
"""Issue 5: half of the best centralized throughput at any batch size is this CPU's practical ceiling."""
NAIVE_SPEEDUP_TARGET = 10.0
"""Done-when: the fastest executor's loop at least 10x faster than the naive per-device-copy loop."""
STEADY_SPEEDUP_TARGET = 6.0
"""Done-when of issue 17: W's steady round at least 6x the naive loop's, one thread each, in one run (the
ratio a bare ``torch.func`` prototype of the round reached)."""


def record(
    workload: str,
    executor: str,
    *,
    wall_s: float,
    loop_s: float,
    samples: int,
    updates: int | None,
    peak_rss_mb: float | None,
    final_accuracy: float | None,
    **extra: Any,
) -> dict[str, Any]:
    """One JSON record: the issue's keys (rates per second of ``loop_s``) plus extras and ``status: ok``.

    ``updates`` counts device-updates (devices x rounds); it is None for centralized training, whose
    ``updates_per_s`` is then None.
    """
    loop = max(float(loop_s), MIN_DURATION_S)
    return {
        "workload": workload,
        "executor": executor,
        "status": "ok",
        "wall_s": float(wall_s),
        "loop_s": float(loop_s),
        "samples_per_s": float(samples) / loop,
        "updates_per_s": None if updates is None else float(updates) / loop,
        "peak_rss_mb": peak_rss_mb,
        "final_accuracy": final_accuracy,
        "samples": int(samples),
        "updates": updates,
        **extra,
    }


def failed_record(workload: str, executor: str, status: str, note: str, **extra: Any) -> dict[str, Any]:
    """A record for a measurement that did not run or did not finish (numbers None, ``status`` says why)."""
    return {
        "workload": workload,
        "executor": executor,
        "status": status,
        **{k: None for k in NUMERIC_KEYS},
        "note": note,
        **extra,
    }


def _ok(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("status") == "ok"]


def best_centralized(records: Iterable[dict[str, Any]], workload: str) -> dict[str, Any] | None:
    """The sweep record with the highest samples/s for ``workload``'s centralized sweep, or None."""
    sweep = [r for r in _ok(records) if r["workload"] == f"centralized-sweep-{workload}"]
    return max(sweep, key=lambda r: r["samples_per_s"]) if sweep else None


def add_ratios(records: list[dict[str, Any]], families: Mapping[str, str]) -> None:
    """Add to each FL record: ``x_centralized`` (samples/s over centralized at the same batch size),
    ``x_half_best_centralized`` (over half the best sweep throughput of the same model family) and, where the
    workload has the naive loop, ``speedup_vs_naive`` (its loop_s over this loop_s; median-round too).
    """
    ok = _ok(records)
    for r in ok:
        if r["executor"] in ("centralized", "naive-loop") or r["workload"].startswith(
            ("centralized-", "scaling-", PAIRED_PREFIX, THREADS_PREFIX)
        ):
            continue
        central = next(
            (c for c in ok if c["workload"] == r["workload"] and c["executor"] == "centralized"), None
        )
        if central is not None:
            r["x_centralized"] = r["samples_per_s"] / central["samples_per_s"]
        family = families.get(r["workload"])
        best = None
        for name, fam in families.items():
            if fam == family:
                cand = best_centralized(ok, name)
                if cand is not None and (best is None or cand["samples_per_s"] > best["samples_per_s"]):
                    best = cand
        if best is not None:
            r["x_half_best_centralized"] = r["samples_per_s"] / (HALF * best["samples_per_s"])
        naive = next(
            (c for c in ok if c["workload"] == r["workload"] and c["executor"] == "naive-loop"), None
        )
        if naive is not None:
            r["speedup_vs_naive"] = naive["loop_s"] / r["loop_s"]
            r["speedup_vs_naive_median_round"] = naive["round_s_median"] / r["round_s_median"]


def add_thread_ratios(records: list[dict[str, Any]]) -> None:
    """Add ``x_one_thread`` to each thread-study record: its steady round over the one-thread run's under the
    same condition (idle or busy); above 1 means slower than one thread."""
    ok = [r for r in _ok(records) if r["workload"].startswith(THREADS_PREFIX)]
    one = {r["workload"]: r["round_s_median"] for r in ok if r["torch_threads"] == "1"}
    for r in ok:
        if r["workload"] in one:
            r["x_one_thread"] = r["round_s_median"] / max(one[r["workload"]], MIN_DURATION_S)


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Done-when numbers: each FL workload's fastest executor and ratios; scaling growth per executor."""
    ok = _ok(records)
    out: dict[str, Any] = {"workloads": {}, "scaling": {}}
    workloads = sorted(
        {
            r["workload"]
            for r in ok
            if not r["workload"].startswith(("centralized-", "scaling-", PAIRED_PREFIX, THREADS_PREFIX))
        }
    )
    for name in workloads:
        fl = [r for r in ok if r["workload"] == name and r["executor"] not in ("centralized", "naive-loop")]
        if not fl:
            continue
        fastest = min(fl, key=lambda r: r["loop_s"])
        entry = {
            "fastest_executor": fastest["executor"],
            "loop_s": fastest["loop_s"],
            "samples_per_s": fastest["samples_per_s"],
        }
        for key in (
            "x_centralized",
            "x_half_best_centralized",
            "speedup_vs_naive",
            "speedup_vs_naive_median_round",
        ):
            if key in fastest:
                entry[key] = fastest[key]
        if "speedup_vs_naive" in fastest:
            entry["naive_target_met"] = fastest["speedup_vs_naive"] >= NAIVE_SPEEDUP_TARGET
        if "x_centralized" in fastest:
            entry["centralized_target_met"] = fastest["x_centralized"] >= 1.0
        entry.update(_paired_summary(ok, name))
        out["workloads"][name] = entry
    for study in sorted({r["workload"] for r in ok if r["workload"].startswith("scaling-")}):
        for label in sorted({r["executor"] for r in ok if r["workload"] == study}):
            rows = sorted(
                (r for r in ok if r["workload"] == study and r["executor"] == label),
                key=lambda r: r["devices"],
            )
            out["scaling"].setdefault(study, {})[label] = memory_growth(rows)
    threads = [r for r in ok if r["workload"].startswith(THREADS_PREFIX)]
    if threads:
        out["threads"] = {r["workload"]: {} for r in threads}
        for r in threads:
            out["threads"][r["workload"]][r["torch_threads"]] = {
                "round_s_median": r["round_s_median"],
                "threads_chosen": r["threads_chosen"],
                "x_one_thread": r.get("x_one_thread"),
            }
    return out


def _paired_summary(ok: Sequence[dict[str, Any]], workload: str) -> dict[str, Any]:
    """The paired (same-process) naive-loop ratio of the workload's fastest paired executor, if any."""
    paired = [r for r in ok if r["workload"] == f"{PAIRED_PREFIX}{workload}"]
    if not paired:
        return {}
    best = max(paired, key=lambda r: r["speedup_vs_naive"])
    return {
        "paired_executor": best["executor"],
        "speedup_vs_naive_paired": best["speedup_vs_naive"],
        "speedup_vs_naive_paired_median_round": best["speedup_vs_naive_median_round"],
        "naive_target_met_paired": best["speedup_vs_naive"] >= NAIVE_SPEEDUP_TARGET,
        "speedup_vs_naive_paired_steady": best["speedup_vs_naive_steady"],
        "speedup_vs_lean_paired_steady": best["speedup_vs_lean_steady"],
        "steady_target_met_paired": best["speedup_vs_naive_steady"] >= STEADY_SPEEDUP_TARGET,
    }


RSS_NOISE_MB = 8.0
"""RSS readings of identical runs differ by a few MiB here (allocator arenas, lazily touched pages: the
10-device runs of serial, vmap and auto peaked at 289-292 MiB); growth within this is not evidence."""


def memory_growth(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Round time and peak RSS by device count, and whether memory grows no faster than linearly.

    Growth is peak RSS minus the smallest run's (the fixed cost of Python, torch and the model). Memory is
    linear-or-better when growth at the largest size is at most the size ratio times the growth at the
    second-largest size plus :data:`RSS_NOISE_MB`; ``growth_exponent`` is log(growth ratio)/log(size ratio).
    """
    out: dict[str, Any] = {
        "devices": [r["devices"] for r in rows],
        "round_s": [r["loop_s"] for r in rows],
        "peak_rss_mb": [r["peak_rss_mb"] for r in rows],
    }
    if len(rows) >= 3:
        base, mid, top = rows[0], rows[-2], rows[-1]
        g_mid = mid["peak_rss_mb"] - base["peak_rss_mb"]
        g_top = top["peak_rss_mb"] - base["peak_rss_mb"]
        d_mid, d_top = mid["devices"] - base["devices"], top["devices"] - base["devices"]
        out["kb_per_device"] = {
            str(mid["devices"]): KB_PER_MB * g_mid / d_mid,
            str(top["devices"]): KB_PER_MB * g_top / d_top,
        }
        if g_mid > 0 and g_top > 0:
            out["growth_exponent"] = math.log(g_top / g_mid) / math.log(top["devices"] / mid["devices"])
        out["linear_or_better"] = bool(g_top <= d_top / d_mid * (max(g_mid, 0.0) + RSS_NOISE_MB))
    return out
