"""The body of ``edgelearn bench`` and ``benchmarks/bench.py``: run a plan, print its tables, write its JSON
(with the environment it was measured in)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgelearn.commands.bench.jobs import run_plan
from edgelearn.commands.bench.machine import machine_facts
from edgelearn.commands.bench.plan import BENCH_THREADS, SEED, BenchPlan, default_plan
from edgelearn.commands.bench.records import summarize
from edgelearn.commands.bench.tables import print_tables
from edgelearn.errors import ConfigError


def environment(plan: BenchPlan) -> dict[str, Any]:
    """Machine, library versions and settings the numbers were measured under."""
    return {
        **machine_facts(plan.device),
        "torch_threads": plan.threads,
        "isolated_processes": plan.isolate,
        "seed": SEED,
    }


def check_json_path(path: Path) -> Path:
    """The ``--json`` target as a Path, checked before any measuring: an OutputError (exit 2) if it is a
    folder or cannot be written (its folder is created)."""
    from edgelearn.report.io import ensure_writable_file

    return ensure_writable_file(path, "--json file")


def write_results(
    path: Path, plan: BenchPlan, records: Sequence[dict[str, Any]], summary: Mapping[str, Any]
) -> Path:
    """Write ``{"environment", "records", "summary"}`` as JSON (atomically; parent folders created)."""
    from edgelearn.report.io import write_json_atomic

    target = check_json_path(path)
    return write_json_atomic(
        target, {"environment": environment(plan), "records": list(records), "summary": summary}
    )


def main(
    quick: bool = False,
    json_path: Path | None = None,
    *,
    threads: int = BENCH_THREADS,
    plan: BenchPlan | None = None,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Run the benchmark (``quick``: the CI-sized subset) on ``device`` (cpu, cuda, auto), print tables,
    write JSON; return the records.

    ``plan`` replaces the default workloads (tests run a miniature one); ``threads`` and ``device`` are
    ignored then.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"--threads is {threads!r}; it must be a positive integer", hint="e.g. --threads 1")
    if json_path is not None:
        check_json_path(Path(json_path))
    from edgelearn.report.progress import get_console

    progress = get_console()
    plan = plan or default_plan(quick, threads, device)
    records = run_plan(plan, log=lambda msg: progress.print(msg, highlight=False))
    summary = summarize(records)
    print_tables(records, summary)
    if json_path is not None:
        write_results(Path(json_path), plan, records, summary)
    return records
