"""The benchmark's rich tables: executors per workload (with ratios), the centralized sweep, scaling, the
paired and thread studies, failures and the Done-when lines."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from edgelearn.commands.bench.plan import PAIRED_PREFIX, THREAD_STEADY_FROM, THREADS_PREFIX

TABLE_WIDTH = 160
"""Console width when stdout is not a terminal: the executor table's 12 columns fit without wrapping."""


def _fmt(value: Any, digits: int = 3) -> str:
    """A table cell: "—" for None, whole numbers from 100 up (with thousands commas), else ``digits``
    significant digits."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.0f}" if abs(value) >= 10 ** (digits - 1) else f"{value:.{digits}g}"
    return str(value)


def _table(title: str, columns: Sequence[str], left: int = 1) -> Any:
    """A rich table whose first ``left`` columns are left-aligned text that never wraps, the rest numbers."""
    from rich.table import Table

    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i < left else "right", no_wrap=i < left)
    return table


def print_tables(records: Sequence[dict[str, Any]], summary: Mapping[str, Any], console: Any = None) -> None:
    """Rich tables: executors per workload (with ratios), the centralized sweep, scaling, and Done-when."""
    from rich.console import Console

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=TABLE_WIDTH)
    sections = ("centralized-sweep-", "scaling-", PAIRED_PREFIX, THREADS_PREFIX)
    table = _table(
        "Executors on FedAvg workloads (rates per second of the round loop; x = ratio of samples/s)",
        (
            "workload",
            "executor",
            "wall s",
            "loop s",
            "updates/s",
            "samples/s",
            "peak RSS MB",
            "workers MB",
            "acc",
            "x central",
            "x ½best",
            "x naive",
        ),
        left=2,
    )
    for r in records:
        if r["workload"].startswith(sections) or r["status"] != "ok":
            continue
        table.add_row(
            r["workload"],
            r["executor"],
            *(_fmt(r[k]) for k in ("wall_s", "loop_s", "updates_per_s", "samples_per_s", "peak_rss_mb")),
            _fmt(r.get("workers_peak_rss_mb")),
            _fmt(r["final_accuracy"]),
            _fmt(r.get("x_centralized")),
            _fmt(r.get("x_half_best_centralized")),
            _fmt(r.get("speedup_vs_naive")),
        )
    if table.row_count:
        console.print(table)
    sweep = [r for r in records if r["workload"].startswith(sections[0]) and r["status"] == "ok"]
    if sweep:
        st = _table(
            "Centralized samples/s by batch size (best of repeats)", ("workload", "batch", "samples/s")
        )
        for r in sweep:
            st.add_row(
                r["workload"].removeprefix(sections[0]), str(r["batch_size"]), _fmt(r["samples_per_s"])
            )
        console.print(st)
    scaling = sorted(
        (r for r in records if r["workload"].startswith(sections[1]) and r["status"] == "ok"),
        key=lambda r: (r["executor"], r["devices"]),
    )
    if scaling:
        sc = _table(
            "Scaling: one steady FedAvg round by devices (a fresh process per run)",
            (
                "executor",
                "devices",
                "round s",
                "first round s",
                "updates/s",
                "peak RSS MB",
                "round growth MB",
                "workers MB",
                "setup s",
            ),
        )
        for r in scaling:
            sc.add_row(
                r["executor"],
                str(r["devices"]),
                *(_fmt(r.get(k)) for k in ("loop_s", "first_round_s", "updates_per_s", "peak_rss_mb")),
                *(_fmt(r.get(k)) for k in ("round_rss_growth_mb", "workers_peak_rss_mb", "setup_s")),
            )
        console.print(sc)
    paired = [r for r in records if r["workload"].startswith(sections[2]) and r["status"] == "ok"]
    if paired:
        pt = _table(
            "Paired with the naive and lean loops: rounds alternated in one process (same machine load)",
            (
                "workload",
                "executor",
                "rounds",
                "naive loop s",
                "lean loop s",
                "loop s",
                "x naive",
                "x naive steady round",
                "x lean",
                "x lean steady round",
            ),
            left=2,
        )
        for r in paired:
            pt.add_row(
                r["workload"].removeprefix(sections[2]),
                r["executor"],
                str(r["rounds"]),
                *(_fmt(r[k]) for k in ("naive_loop_s", "lean_loop_s", "loop_s")),
                *(_fmt(r[k]) for k in ("speedup_vs_naive", "speedup_vs_naive_steady")),
                *(_fmt(r[k]) for k in ("speedup_vs_lean", "speedup_vs_lean_steady")),
            )
        console.print(pt)
    threads = [r for r in records if r["workload"].startswith(sections[3]) and r["status"] == "ok"]
    if threads:
        tt = _table(
            "Threads: W's steady round by engine.torch_threads (median from round "
            f"{THREAD_STEADY_FROM}; x 1 thread = over the one-thread round, same condition)",
            ("workload", "executor", "busy", "threads", "round s", "x 1 thread", "CPU", "load 1 min"),
            left=3,
        )
        for r in threads:
            load = r.get("load_average")
            tt.add_row(
                r["workload"].removeprefix(sections[3]),
                r["executor"],
                "yes" if r["busy"] else "no",
                str(r["threads_chosen"]),
                _fmt(r["round_s_median"]),
                _fmt(r.get("x_one_thread")),
                str(r["cpu_capability"]),
                _fmt(load[0] if load else None),
            )
        console.print(tt)
    for r in records:
        if r["status"] != "ok" or r.get("warning"):
            where = r["workload"] + (f" {r['executor']}" if r["executor"] != "-" else "")
            where += f" ({r['devices']} devices)" if r.get("devices") else ""
            what = r["status"] if r["status"] != "ok" else "warning"
            console.print(
                f"[yellow]{what}[/] {where}: {r.get('warning') or r.get('note', '')}", highlight=False
            )
    for name, entry in summary.get("workloads", {}).items():
        parts = [f"fastest {entry['fastest_executor']} ({_fmt(entry['samples_per_s'])} samples/s)"]
        labels = {
            "x_centralized": "x centralized at the same batch",
            "x_half_best_centralized": "x half the best centralized",
            "speedup_vs_naive": "x naive loop",
            "speedup_vs_naive_paired": "x naive loop (paired, same process)",
            "speedup_vs_naive_paired_steady": "steady round x naive loop (paired)",
            "speedup_vs_lean_paired_steady": "steady round x lean loop (paired)",
        }
        parts += [f"{label} {_fmt(entry[key])}" for key, label in labels.items() if key in entry]
        console.print(f"[bold]{name}[/]: " + ", ".join(parts), highlight=False)
    for study, by_label in summary.get("scaling", {}).items():
        for label, growth in by_label.items():
            rounds = [_fmt(v) for v in growth["round_s"]]
            peaks = [_fmt(v) for v in growth["peak_rss_mb"]]
            line = f"[bold]{study}[/] {label}: devices {growth['devices']}, round s {rounds}, peak MB {peaks}"
            if "linear_or_better" in growth:
                line += f", memory linear or better: {growth['linear_or_better']}"
            console.print(line, highlight=False)
