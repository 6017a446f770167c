"""Running a plan: each measurement in its own process (forked from a server that imported torch and
edgelearn once; its own peak RSS; killed with its children at the time limit), its records streamed back;
a failure record for every result a job did not produce."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgelearn.commands.bench.measure import measure_fl, measure_scaling
from edgelearn.commands.bench.plan import (
    IN_PROCESS,
    PAIRED_PREFIX,
    RAY_LABELS,
    BenchPlan,
    FLWorkload,
    ScalingStudy,
    ThreadStudy,
    too_slow,
)
from edgelearn.commands.bench.records import add_ratios, add_thread_ratios, failed_record
from edgelearn.commands.bench.references import measure_centralized, measure_naive, measure_paired
from edgelearn.commands.bench.rss import descendant_pids, reset_peak_rss
from edgelearn.commands.bench.threads import measure_threads, thread_label, thread_workload
from edgelearn.errors import ConfigError

STDERR_TAIL_CHARS = 800
"""Characters of a failed measurement process's output kept in its record's note."""


def _execute(job: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Run one job description (see ``_jobs_for_workload``) here, yielding its records as they finish."""
    kind, threads = job["kind"], int(job["threads"])
    torch.set_num_threads(threads)
    if kind == "fl":
        return measure_fl(job["workload"], job["config"], job["executors"], threads)
    if kind == "centralized":
        return measure_centralized(
            job["workload"], job["config"], threads, job["sweep"], job["sweep_samples"], job["sweep_repeats"]
        )
    if kind == "naive":
        return measure_naive(job["workload"], job["config"], threads)
    if kind == "paired":
        return measure_paired(job["workload"], job["config"], job["executors"], threads)
    if kind == "threads":
        return measure_threads(
            job["workload"], job["config"], job["executor"], job["settings"], job["busy"], job["max_s"]
        )
    if kind == "scaling":
        return measure_scaling(
            job["workload"],
            job["config"],
            job["executor"],
            job["devices"],
            job["samples_per_device"],
            threads,
            job["max_round_s"],
        )
    raise ConfigError(
        f"benchmark job kind {kind!r} is unknown",
        hint="use fl, centralized, naive, paired, scaling or threads",
    )


PRELOAD = (
    "torch",
    "torch._dynamo",
    "edgelearn.runner",
    "edgelearn.engine.vmap",
    "edgelearn.commands.bench.jobs",
)
"""Modules the fork server imports once, so each measurement process starts in milliseconds, not seconds
(``torch._dynamo``, with sympy, is imported lazily by the first model build: ~2.5 s here). This module
imports every measurement module."""


def _mp_context() -> Any:
    """A ``forkserver`` multiprocessing context preloading :data:`PRELOAD` (``spawn`` where unavailable).

    Children are forked from a server that has only imported modules (never run torch ops or threads), so
    each starts with the same baseline memory as a fresh interpreter and its own peak RSS.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(PRELOAD))
        return ctx
    return multiprocessing.get_context("spawn")


def _child_entry(job: dict[str, Any], out_path: str, log_path: str) -> None:
    """Body of a measurement process: output to a log file, records streamed to ``out_path`` (JSON lines)."""
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    reset_peak_rss()
    try:
        with open(out_path, "a", encoding="utf-8") as out:
            for rec in _execute(job):
                out.write(json.dumps(rec) + "\n")
                out.flush()
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)  # skip atexit handlers of half-started libraries (e.g. Ray)
    sys.stdout.flush()
    sys.stderr.flush()


def _kill_tree(pid: int) -> None:
    """SIGKILL a measurement process and every process it started (Ray daemons and workers), by id."""
    for child in [*descendant_pids(pid), pid]:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_isolated(job: Mapping[str, Any], timeout_s: float) -> tuple[list[dict[str, Any]], str | None]:
    """Run a job in its own process; its finished records and, if it failed or timed out, why.

    Records are streamed to a JSON-lines file, so the records of a job killed at its time limit survive.
    """
    with tempfile.TemporaryDirectory(prefix="edgelearn-bench-") as tmp:
        out_path, log_path = Path(tmp) / "records.jsonl", Path(tmp) / "output.log"
        proc = _mp_context().Process(target=_child_entry, args=(dict(job), str(out_path), str(log_path)))
        proc.start()
        proc.join(timeout_s)
        failure: str | None = None
        if proc.is_alive():
            _kill_tree(int(proc.pid))
            proc.join()
            failure = f"timeout: still running after {timeout_s:.0f} s"
        elif proc.exitcode != 0:
            text = log_path.read_text(encoding="utf-8", errors="replace") if log_path.exists() else ""
            tail = text[-STDERR_TAIL_CHARS:].strip() or "no output"
            failure = f"exit code {proc.exitcode}: {tail}"
        records = []
        if out_path.exists():
            for line in out_path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    records.append(json.loads(line))
    return records, failure


@dataclass(frozen=True)
class _Job:
    """A job description plus the (workload, executor, devices) records it should produce."""

    spec: dict[str, Any]
    expect: tuple[tuple[str, str, int | None], ...]
    timeout_s: float


def _jobs_for_workload(w: FLWorkload, plan: BenchPlan) -> Iterator[_Job]:
    base = {"threads": plan.threads, "workload": w.name, "config": dict(w.config)}
    if w.centralized:
        sweep_expect = tuple((f"centralized-sweep-{w.name}", f"centralized-b{b}", None) for b in w.sweep)
        yield _Job(
            {
                **base,
                "kind": "centralized",
                "sweep": list(w.sweep),
                "sweep_samples": w.sweep_samples,
                "sweep_repeats": w.sweep_repeats,
            },
            ((w.name, "centralized", None), *sweep_expect),
            plan.job_timeout_s,
        )
    if w.naive:
        yield _Job({**base, "kind": "naive"}, ((w.name, "naive-loop", None),), plan.job_timeout_s)
    if w.naive and w.paired:
        yield _Job(
            {**base, "kind": "paired", "executors": list(w.paired)},
            tuple((f"{PAIRED_PREFIX}{w.name}", label, None) for label in w.paired),
            plan.job_timeout_s,
        )
    for label in (e for e in w.executors if e in IN_PROCESS):
        yield _Job({**base, "kind": "fl", "executors": [label]}, ((w.name, label, None),), plan.job_timeout_s)
    ray_labels = [e for e in w.executors if e in RAY_LABELS]
    if ray_labels:
        yield _Job(
            {**base, "kind": "fl", "executors": ray_labels},
            tuple((w.name, label, None) for label in ray_labels),
            plan.job_timeout_s * len(ray_labels),
        )


def _thread_jobs(study: ThreadStudy, plan: BenchPlan) -> Iterator[_Job]:
    """One job per condition (idle, busy), timing every setting paired in one process."""
    for busy in study.busy:
        workload = thread_workload(study.name, busy)
        yield _Job(
            {
                "kind": "threads",
                "threads": plan.threads,
                "workload": study.name,
                "config": dict(study.config),
                "executor": study.executor,
                "settings": list(study.settings),
                "busy": busy,
                "max_s": plan.job_timeout_s,
            },
            tuple((workload, thread_label(study.executor, s), None) for s in study.settings),
            plan.job_timeout_s,
        )


def _scaling_job(study: ScalingStudy, label: str, sizes: Sequence[int], plan: BenchPlan) -> _Job:
    return _Job(
        {
            "kind": "scaling",
            "threads": plan.threads,
            "workload": study.name,
            "config": dict(study.config),
            "executor": label,
            "devices": list(sizes),
            "samples_per_device": study.samples_per_device,
            "max_round_s": study.max_round_s,
        },
        tuple((study.name, label, n) for n in sizes),
        plan.job_timeout_s * len(sizes),
    )


def _run_job(job: _Job, plan: BenchPlan) -> list[dict[str, Any]]:
    """Run a job (isolated or in this process) and fill in a failure record for each missing result."""
    if plan.isolate:
        records, failure = run_isolated(job.spec, job.timeout_s)
    else:
        records, failure = list(_execute(job.spec)), None
    for workload, executor, devices in job.expect:
        found = any(
            r["workload"] == workload and r["executor"] == executor and devices in (None, r.get("devices"))
            for r in records
        )
        if not found:
            status = "timeout" if failure and failure.startswith("timeout") else "error"
            extra = {} if devices is None else {"devices": devices}
            records.append(failed_record(workload, executor, status, failure or "no result", **extra))
    return records


def run_plan(plan: BenchPlan, log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Run every measurement of ``plan`` and return its records, with the ratios between them added."""
    say = log or (lambda _msg: None)
    records: list[dict[str, Any]] = [
        failed_record(n["section"], "-", "skipped", n["note"]) for n in plan.notes
    ]
    for w in plan.workloads:
        for job in _jobs_for_workload(w, plan):
            say(f"{w.name}: {job.spec['kind']} {job.spec.get('executors', '')}")
            t = time.perf_counter()
            records.extend(_run_job(job, plan))
            say(f"  done in {time.perf_counter() - t:.1f} s")
    for study in plan.scaling:
        for label in study.executors:
            sizes = [n for n in study.devices if n <= study.max_devices.get(label, max(study.devices))]
            skipped = [n for n in study.devices if n not in sizes]
            records.extend(
                failed_record(study.name, label, "skipped", "above this mode's device cap", devices=n)
                for n in skipped
            )
            if label in RAY_LABELS:
                say(f"{study.name}: {label} {sizes}")
                records.extend(_run_job(_scaling_job(study, label, sizes, plan), plan))
                continue
            last: tuple[int, float] | None = None
            for n in sizes:
                note = too_slow(last, n, study.max_round_s)
                if note is not None:
                    records.append(failed_record(study.name, label, "skipped", note, devices=n))
                    continue
                say(f"{study.name}: {label} {n} devices")
                out = _run_job(_scaling_job(study, label, [n], plan), plan)
                records.extend(out)
                ok = [r for r in out if r["status"] == "ok"]
                last = (n, float(ok[0]["first_round_s"])) if ok else last
    if plan.thread_study is not None:
        for job in _thread_jobs(plan.thread_study, plan):
            say(f"{job.expect[0][0]}: {job.spec['executor']} threads {job.spec['settings']}")
            records.extend(_run_job(job, plan))
        add_thread_ratios(records)
    families = {w.name: w.family for w in plan.workloads}
    for r in records:
        if r["workload"] in families:
            r["family"] = families[r["workload"]]
    add_ratios(records, families)
    return records
