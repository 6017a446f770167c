"""Experiment suites: grids of runs over config overrides and seeds, aggregated and plotted in one command.

A suite file (YAML) lists experiments; each names a base config, the seeds, common ``--set`` overrides and
``axes`` (config keys -> values; runs cover their Cartesian product). ``edgelearn sweep SUITE`` runs every
cell and seed into ``OUT/<experiment>/<cell>-s<seed>/`` (a finished run, one with summary.json, is skipped
and a killed one resumed, so re-running the command continues a sweep), then writes ``results.json`` (one
row per run plus mean / sd / n per cell), ``results.md`` and the plots the experiment asks for.

``kind: landscape`` experiments solve the two-stage planning problem over an (M, N) grid instead of
training (E6). ``quick:`` holds replacements (base, seeds, set, axes) used with ``--quick``.

``jobs > 1`` runs that many runs at once on as many long-lived worker processes (started once per experiment,
so each pays the interpreter, torch and edgelearn imports once, not once per run), each pinned to its own
share of the cores (torch threads = cores / jobs), seed-major (every cell of the first seed before the second
seed), so an interrupted sweep leaves whole seeds. Results do not depend on ``jobs``: every run is seeded by
its own config, and a worker restores its process state before each run.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import re
import signal
import statistics
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgelearn.errors import ConfigError, DivergenceError, EdgelearnError, Interrupted
from edgelearn.memory import check_memory
from edgelearn.report.io import (
    SUMMARY_FILE,
    ensure_writable_dir,
    read_metrics,
    read_summary,
    rounds_to,
    write_json_atomic,
)
from edgelearn.yamlsafe import load_yaml

RESULTS_FILE = "results.json"
RESULTS_TABLE = "results.md"
CASE_AXIS = "case"
"""Name of the axis that ``cases`` adds."""
SLUG_MAX = 80
"""Longest run-directory name built from a cell's axis values (longer ones are truncated)."""
DIVERGED_FILE = "diverged.json"
"""Left in a run's folder when its training diverged: the sweep keeps it as a result with missing metrics
(``results.md`` shows how many seeds a cell kept); delete it to retry the run."""
RUN_ERROR_FILE = "sweep_error.json"
"""What a run that failed in a ``jobs > 1`` worker process left in its folder (message, hint, traceback)."""
POLL_S = 0.2
"""Longest wait of the parent of ``jobs > 1`` workers between checks (it wakes at once when a run ends)."""


def _check_metrics(metrics: list[str] | None) -> list[str] | None:
    """Metric names as given; a ValueError naming a ``rounds_to:`` metric whose target does not parse."""
    for name in metrics or []:
        if name.startswith(ROUNDS_TO):
            rounds_target(name)
    return metrics


class PlotSpec(BaseModel):
    """One figure of an experiment.

    ``curves``: metric ``y`` of metrics.jsonl against ``x`` (round, energy_j, delay_s), one colour per
    value of ``group`` (every seed drawn). ``sweep``: a run metric ``y`` (mean ± sd over seeds) against axis
    ``x``, one line per ``group``. ``scatter``: run metric ``y`` against run metric ``x`` over all runs,
    with Spearman's rank correlation in the title. ``landscape``: the bound heat-map (landscape kind).
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["curves", "sweep", "scatter", "landscape"]
    x: str = "round"
    y: str = "accuracy"
    group: str | None = None
    file: str | None = Field(None, description="PNG name (default: <kind>-<y>-vs-<x>.png)")
    title: str | None = None
    logx: bool = False
    logy: bool = False


class GridSpec(BaseModel):
    """Log-spaced points on the M and N axes of a landscape experiment."""

    model_config = ConfigDict(extra="forbid")
    M: int = Field(24, ge=2)
    N: int = Field(20, ge=2)


class QuickSpec(BaseModel):
    """Replacements used with ``--quick`` (a few-minute version of the experiment)."""

    model_config = ConfigDict(extra="forbid")
    base: str | None = None
    seeds: list[int] | None = None
    set: list[str] | None = None
    axes: dict[str, list[Any]] | None = None
    cases: dict[str, dict[str, Any]] | None = None
    metrics: list[str] | None = Field(None, description="e.g. accuracy targets that suit the quick dataset")

    _metrics_parse = field_validator("metrics")(classmethod(lambda cls, v: _check_metrics(v)))


class ExperimentSpec(BaseModel):
    """A grid of runs (or of planning solves, for ``kind: landscape``) and its plots."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    kind: Literal["runs", "landscape"] = "runs"
    base: str = Field(description="config file, relative to the suite file")
    seeds: list[int] = [0]
    set: list[str] = Field([], description="overrides applied to every run (key=value)")
    axes: dict[str, list[Any]] = Field({}, description="config key -> values; runs cover the product")
    cases: dict[str, dict[str, Any]] = Field(
        {},
        description="named bundles of overrides (label -> {key: value}), an extra first axis `case`: for "
        "settings that change together, e.g. a method and the model the paper pairs it with",
    )
    metrics: list[str] = Field(
        ["final_accuracy"],
        description="run metrics aggregated per cell (RUN_METRICS, rounds_to:TARGET, or dotted keys)",
    )
    plots: list[PlotSpec] = []

    _metrics_parse = field_validator("metrics")(classmethod(lambda cls, v: _check_metrics(v)))
    grid: GridSpec = Field(GridSpec(), description="landscape kind: points on the M and N axes")
    quick: QuickSpec = QuickSpec()

    def run_cells(self) -> list[dict[str, Any]]:
        """Every cell: the case label (when ``cases`` is set) and the axes' values."""
        axes = {CASE_AXIS: list(self.cases), **self.axes} if self.cases else self.axes
        return cells(axes)

    def overrides(self, cell: Mapping[str, Any]) -> list[str]:
        """``--set`` strings of a cell: the common ones, the case's bundle, then the axes' values."""
        out = list(self.set)
        for key, value in cell.items():
            if key == CASE_AXIS and self.cases:
                out += [_override(k, v) for k, v in self.cases[value].items()]
            else:
                out.append(_override(key, value))
        return out

    def run_overrides(self, cell: Mapping[str, Any], seed: int, extra: Sequence[str] = ()) -> list[str]:
        """Every ``--set`` of one run: the cell's (:meth:`overrides`), then ``extra``, then its seed."""
        return [*self.overrides(cell), *extra, f"seed={seed}"]

    def base_path(self, suite_dir: Path) -> Path:
        """The base config, resolved against the suite file's folder; a ConfigError if it is missing."""
        base = (suite_dir / self.base).resolve()
        if not base.is_file():
            raise ConfigError(
                f"experiment {self.name}: base config {base} does not exist", hint="fix `base:`"
            )
        return base

    def resolved(self, quick: bool) -> ExperimentSpec:
        """This experiment, with the ``quick`` replacements applied when asked."""
        if not quick:
            return self
        changes = {k: v for k, v in self.quick.model_dump().items() if v is not None}
        return self.model_copy(update=changes)

    def narrowed(self, cases: Sequence[str] = (), seeds: Sequence[int] = ()) -> ExperimentSpec | None:
        """This experiment cut to the named ``cases`` (None when it has none of them) and run with ``seeds``
        instead of its own: re-running or extending part of a sweep without editing the suite file."""
        changes: dict[str, Any] = {}
        if cases:
            kept = {k: v for k, v in self.cases.items() if k in cases}
            if not kept:
                return None
            changes["cases"] = kept
        if seeds:
            changes["seeds"] = list(dict.fromkeys(seeds))
        return self.model_copy(update=changes) if changes else self


class SuiteSpec(BaseModel):
    """A suite file: named experiments sharing an output folder."""

    model_config = ConfigDict(extra="forbid")
    suite: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    experiments: list[ExperimentSpec]


def load_suite(path: str | Path) -> SuiteSpec:
    """Parse and validate a suite file; errors name the file and the offending key."""
    file = Path(path)
    try:
        data = load_yaml(file.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read suite file {file}: {exc}", hint="check the path") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file} is not valid YAML: {exc}") from None
    try:
        suite = SuiteSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"{file}: {where}: {first['msg']}", hint="see src/edgelearn/sweep.py for the suite format"
        ) from None
    names = [e.name for e in suite.experiments]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{file}: experiment names {dupes} appear more than once")
    return suite


# ---------------------------------------------------------------------------------------------------------
def cells(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, in the order the file lists them."""
    keys = list(axes)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(axes[k] for k in keys))]


def cell_slug(cell: Mapping[str, Any]) -> str:
    """A file-name-safe name of a cell: the last part of each key and its value, joined."""
    if not cell:
        return "base"
    parts = [f"{key.rsplit('.', 1)[-1]}={value}" for key, value in cell.items()]
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", "_".join(parts))
    return slug[:SLUG_MAX]


def _override(key: str, value: Any) -> str:
    return f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def _dig(obj: Any, dotted: str) -> Any:
    """The value at dotted path ``dotted``; a key may itself hold dots ("rounds_to_target.72.5%"): the
    longest matching key wins at each level."""
    parts = dotted.split(".")
    while parts:
        if not isinstance(obj, Mapping):
            return None
        for i in range(len(parts), 0, -1):
            key = ".".join(parts[:i])
            if key in obj:
                obj, parts = obj[key], parts[i:]
                break
        else:
            return None
    return obj


def _mean_metric(key: str) -> Callable[[dict[str, Any], list[dict[str, Any]]], float | None]:
    def value(summary: dict[str, Any], records: list[dict[str, Any]]) -> float | None:
        values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
        return float(statistics.fmean(values)) if values else None

    return value


def _pretrain_share(summary: dict[str, Any], records: list[dict[str, Any]]) -> float | None:
    M, N = _dig(summary, "plan.M"), _dig(summary, "plan.N")
    return M / (M + N) if isinstance(M, int) and isinstance(N, int) and M + N else None


RUN_METRICS: dict[str, Callable[[dict[str, Any], list[dict[str, Any]]], float | None]] = {
    "mean_grad_norm_sq": _mean_metric("grad_norm_sq"),
    "pretrain_share": _pretrain_share,
}
"""Derived run metrics; any other name is a dotted key into summary.json (e.g. ``plan.M``)."""


ROUNDS_TO = "rounds_to:"
"""Metric prefix: ``rounds_to:0.7`` is the first round whose test accuracy reaches 0.7 (None if none does)."""


def rounds_target(name: str) -> float:
    """The target of a ``rounds_to:TARGET`` metric name; ValueError unless TARGET is in (0, 1]."""
    text = name.removeprefix(ROUNDS_TO)
    try:
        target = float(text)
    except ValueError:
        target = math.nan
    if not 0 < target <= 1:
        raise ValueError(f"metric {name!r}: the target must be an accuracy in (0, 1], e.g. rounds_to:0.7")
    return target


def run_metric(name: str, summary: dict[str, Any], records: list[dict[str, Any]]) -> float | None:
    """A derived metric from :data:`RUN_METRICS`, ``rounds_to:TARGET`` from the records, or the number at
    dotted key ``name`` of the summary."""
    if name in RUN_METRICS:
        return RUN_METRICS[name](summary, records)
    if name.startswith(ROUNDS_TO):
        reached = rounds_to(records, rounds_target(name))
        return None if reached is None else float(reached)
    value = _dig(summary, name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def aggregate(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Mean, sample sd and count over seeds of every metric, per cell (in first-seen order)."""
    by_cell: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_cell.setdefault(row["slug"], []).append(row)
    out = []
    for group in by_cell.values():
        entry: dict[str, Any] = {
            "cell": group[0]["cell"],
            "slug": group[0]["slug"],
            "seeds": [r["seed"] for r in group],
        }
        for metric in metrics:
            values = [r["metrics"][metric] for r in group if r["metrics"].get(metric) is not None]
            entry[metric] = {
                "mean": statistics.fmean(values) if values else None,
                "sd": statistics.stdev(values) if len(values) > 1 else 0.0 if values else None,
                "n": len(values),
                "values": values,
            }
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------------------
def _load_checked(base: Path, overrides: Sequence[str], where: str) -> Any:
    """The run config of ``base`` with ``overrides``; a ConfigError that names ``where`` in the suite."""
    from edgelearn.config import load_config

    try:
        return load_config(base, list(overrides))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _finished(out: Path) -> bool:
    """Whether the run in ``out`` has ended: with a summary, or diverged (a result too, kept as such)."""
    return (out / SUMMARY_FILE).is_file() or (out / DIVERGED_FILE).is_file()


def _run_one(base: Path, overrides: list[str], out: Path, progress: bool) -> None:
    """One run into ``out``: skipped when finished, resumed when a checkpoint is there, else started. A run
    that diverges is recorded in ``DIVERGED_FILE`` (its metrics count as missing), not raised: one unstable
    cell must not stop a sweep."""
    from edgelearn.config import load_config
    from edgelearn.runner import run

    if _finished(out):
        return
    cfg = load_config(base, overrides)
    resume = out.is_dir() and any(out.glob("checkpoints/*"))
    try:  # the folder is the sweep's own: what is there without a checkpoint is a killed start, replaced
        run(cfg, out, progress=progress, resume=resume, overwrite=not resume)
    except DivergenceError as exc:
        write_json_atomic(out / DIVERGED_FILE, {"message": exc.message, "hint": exc.hint})


def core_slots(jobs: int) -> list[list[int]]:
    """The usable cores split into ``jobs`` disjoint, near-equal slots (one per concurrent run)."""
    from edgelearn.engine.threads import usable_core_ids

    cores = usable_core_ids()
    if jobs > len(cores):
        raise ConfigError(
            f"--jobs {jobs} is more than the {len(cores)} usable cores",
            hint=f"use --jobs {len(cores)} or fewer",
        )
    return [cores[i::jobs] for i in range(jobs)]


_IDLE = True
"""In a worker process: whether it is between runs (a SIGINT then ends it at once; see :func:`_on_sigint`)."""
_STOPPING = False
"""In a worker process: whether a SIGINT came; the worker then takes no new run."""


def _on_sigint(signum: int, frame: Any) -> None:
    """A worker's SIGINT handler. Ctrl-C reaches the whole process group and the parent forwards it too: a
    worker between runs (or still starting) exits with 130 at once; one in a run asks it to stop after its
    current round, with a checkpoint (:func:`edgelearn.runner.request_stop`), and exits with 130 after it.
    However often it comes, it never interrupts a round: the parent decides whether to stop the worker at once
    (a second Ctrl-C there terminates the workers)."""
    global _STOPPING
    _STOPPING = True
    if _IDLE:
        raise SystemExit(130)
    from edgelearn.runner import request_stop  # imported by now: a run is in progress

    request_stop()


def _serve(conn: Any, cores: list[int]) -> None:
    """Entry of a ``jobs > 1`` worker process: pin to ``cores``, then do the runs the parent sends over
    ``conn`` (``(base, overrides, out)``; None ends the worker), answering each with :func:`_attempt`'s
    ``(out, exitcode)``.

    The worker lives for the whole sweep, so the interpreter, torch and edgelearn are imported once per
    worker, not once per run. Every run starts from the process state a fresh worker had
    (:func:`_fresh_state`), so a worker's earlier runs cannot change a later run's results.
    """
    global _IDLE
    signal.signal(signal.SIGINT, _on_sigint)  # first: a Ctrl-C while importing ends the worker quietly
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    import edgelearn.runner  # noqa: F401  (the import every run needs, paid once)

    restore = _fresh_state(cores)
    while not _STOPPING:
        try:
            task = conn.recv()
        except EOFError:  # the parent is gone (killed): nothing more will come
            return
        if task is None:
            return
        _IDLE = False
        base, overrides, out = task
        restore()
        conn.send(_attempt(base, overrides, out))
        _IDLE = True
    raise SystemExit(130)


def _fresh_state(cores: list[int]) -> Callable[[], None]:
    """A function that puts back this process's run-relevant global state as it is now, in a fresh worker.

    A run sets process-wide state: torch's thread count (``engine.torch_threads``), the precision policy
    (``engine.precision``), the global torch / NumPy / Python RNGs (model initialization seeds torch's, but
    nothing may depend on what an earlier run drew), the stop flag and the root logger's handlers. Restoring
    all of them before each run makes a run's results the same as in a process of its own.
    """
    import random

    import numpy as np
    import torch

    from edgelearn import runner
    from edgelearn.engine.precision import current_precision, set_precision

    torch_rng, numpy_rng, python_rng = torch.get_rng_state(), np.random.get_state(), random.getstate()
    precision = current_precision()
    handlers, level = list(logging.root.handlers), logging.root.level

    def restore() -> None:
        torch.set_num_threads(len(cores))  # run() then applies engine.torch_threads: auto stays in `cores`
        set_precision(precision)
        torch.set_rng_state(torch_rng)
        np.random.set_state(numpy_rng)
        random.setstate(python_rng)
        runner._STOP.requested = _STOPPING  # a Ctrl-C that came as this run was handed over still counts
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)

    return restore


def _attempt(base: Path, overrides: list[str], out: Path) -> tuple[Path, int]:
    """One run of a worker: ``(out, 0)`` when it finished or diverged (:func:`_run_one` keeps a diverged run
    as a result), else ``(out, 2)`` for the user's error or ``(out, 1)`` for a bug, with the details left in
    ``out``'s :data:`RUN_ERROR_FILE` for :func:`_run_failure`. Either way the worker goes on to its next run.
    A run stopped by Ctrl-C (KeyboardInterrupt, after its round) ends the worker with 130."""
    (out / RUN_ERROR_FILE).unlink(missing_ok=True)  # a report left by an earlier, interrupted sweep
    try:
        _run_one(base, overrides, out, progress=False)
    except KeyboardInterrupt:  # stopped after a round, with a checkpoint: the parent reports it
        raise SystemExit(130) from None
    except Exception as exc:  # reported to the parent through the file and the code
        out.mkdir(parents=True, exist_ok=True)
        user = isinstance(exc, EdgelearnError)
        info = {
            "user_error": user,
            "message": exc.message if user else f"{type(exc).__name__}: {exc}",
            "hint": exc.hint if user else None,
            "traceback": traceback.format_exc(),
        }
        write_json_atomic(out / RUN_ERROR_FILE, info)
        return out, 2 if user else 1
    return out, 0


def _run_failure(out: Path, exitcode: int | None) -> Exception:
    """What to raise for a run that ended with ``exitcode`` (its worker's report, or the worker process's
    own exit code when it died): the user's error as such, else a crash."""
    file = out / RUN_ERROR_FILE
    if file.is_file():
        info = json.loads(file.read_text())
        file.unlink()  # a re-run starts clean
        if info["user_error"]:
            return EdgelearnError(f"run {out.name}: {info['message']}", hint=info["hint"])
        return RuntimeError(f"run {out.name} failed: {info['message']}\n{info['traceback']}")
    return RuntimeError(
        f"run {out.name}: its worker process ended ({_how(exitcode)}) without a report; signal 9 is often "
        "the kernel's out-of-memory killer (try fewer --jobs). Re-running the sweep resumes it from its last "
        "checkpoint"
    )


def _how(exitcode: int | None) -> str:
    """``signal N`` or ``exit code N`` for a process's exit code."""
    return f"signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit code {exitcode}"


class _Worker:
    """The parent's handle on one long-lived worker process: its core slot, its end of the pipe and the run
    it is doing (None when idle)."""

    def __init__(self, ctx: Any, cores: list[int]) -> None:
        self.cores = cores
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, cores), name=f"sweep-worker:{cores}")
        self.proc.start()
        child.close()  # the worker's end lives in the worker: its death then reads as EOF here
        self.run: Path | None = None

    def give(self, task: tuple[Path, list[str], Path]) -> None:
        """Hand the worker its next run."""
        self.conn.send(task)
        self.run = task[2]

    def close(self) -> None:
        """Tell an idle worker to end (it may have ended already) and wait for it."""
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.proc.join()
        self.conn.close()


def _run_parallel(
    runs: Sequence[tuple[Path, list[str], Path]], jobs: int, log: Callable[[str], None]
) -> None:
    """Run ``(base, overrides, out)`` triples on ``jobs`` long-lived worker processes, each pinned to its own
    core slot and handed the next run as it ends one. A failed run does not stop the others; the first
    failure is raised once every run has ended."""
    ctx = multiprocessing.get_context("spawn")  # no fork: torch's thread pools do not survive it
    slots = core_slots(jobs)[: len(runs)]
    workers: list[_Worker] = []
    try:
        for cores in slots:  # all at once: they import in parallel
            workers.append(_Worker(ctx, cores))
        _schedule(ctx, list(runs), workers, log)
    except KeyboardInterrupt:  # Ctrl-C: every running run stops after its current round, with a checkpoint
        raise _stop_workers(workers, log) from None
    except BaseException:  # a crash here: stop the workers; their runs resume on the next sweep
        for worker in workers:
            worker.proc.terminate()
        for worker in workers:
            worker.proc.join()
        raise
    for worker in workers:
        worker.close()


def _stop_workers(workers: Sequence[_Worker], log: Callable[[str], None]) -> Interrupted:
    """Ask every worker to stop (SIGINT; see :func:`_on_sigint`: an idle one ends, a busy one after its
    current round) and wait for them; a second Ctrl-C terminates them at once (their newest checkpoints stay).
    Returns what to raise."""
    live = [w for w in workers if w.proc.is_alive()]
    for worker in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.proc.pid, signal.SIGINT)
    busy = [w.run for w in live if w.run is not None]
    names = ", ".join(out.name for out in busy) or "none"
    if busy:
        log(f"interrupted: waiting for {len(busy)} run(s) to end their round (Ctrl-C again to stop at once)")
    how = "stopped after their current round, with a checkpoint"
    try:
        for worker in live:
            worker.proc.join()
    except KeyboardInterrupt:
        how = "stopped at once (their newest checkpoints stay)"
        for worker in live:
            worker.proc.terminate()
        for worker in live:
            worker.proc.join()
    return Interrupted(f"runs in progress ({names}) {how}")


def _schedule(
    ctx: Any, pending: list[tuple[Path, list[str], Path]], workers: list[_Worker], log: Callable[[str], None]
) -> None:
    """The parent loop of :func:`_run_parallel`: hand runs, in order, to idle workers until all have ended.

    A worker that dies (a signal: the kernel's OOM killer, a kill) fails the run it was doing, as
    :func:`_run_failure` says, and is replaced by a fresh one on the same cores while runs remain.
    ``workers`` is updated in place, so the caller stops the current ones.
    """
    from multiprocessing.connection import wait

    failures: list[Exception] = []
    while pending or any(w.run is not None for w in workers):
        for worker in workers:
            if worker.run is None and pending and worker.proc.is_alive():
                try:
                    worker.give(pending[0])
                except OSError:  # it died just now: replaced below, and the run goes to another worker
                    continue
                pending.pop(0)
                log(f"  started {worker.run.name} on cores {worker.cores} (worker {worker.proc.pid})")
        wait([w.conn for w in workers] + [w.proc.sentinel for w in workers], timeout=POLL_S)
        kept: list[_Worker] = []
        for worker in workers:
            reply: tuple[Path, int] | None = None
            if worker.conn.poll():
                with contextlib.suppress(EOFError, OSError):
                    reply = worker.conn.recv()
            if reply is not None or worker.proc.is_alive():
                kept.append(worker)
                if reply is not None:
                    worker.run = None
                    _report(*reply, failures, log)
                continue
            worker.proc.join()
            if worker.run is not None:
                failures.append(_run_failure(worker.run, worker.proc.exitcode))
                log(f"  FAILED {worker.run.name}: {str(failures[-1]).splitlines()[0]}")
            what = f"while running {worker.run.name}" if worker.run is not None else "between runs"
            then = "; starting a fresh one on the same cores" if pending else ""
            log(
                f"  worker {worker.proc.pid} on cores {worker.cores} died ({_how(worker.proc.exitcode)}) "
                f"{what}{then}"
            )
            worker.conn.close()
            if pending:
                kept.append(_Worker(ctx, worker.cores))
        workers[:] = kept
    if failures:
        if len(failures) > 1:
            log(f"  {len(failures)} runs failed; the first is reported")
        raise failures[0]


def _report(out: Path, code: int, failures: list[Exception], log: Callable[[str], None]) -> None:
    """Log a worker's answer for run ``out`` (see :func:`_attempt`); a failure also joins ``failures``."""
    if code == 0:
        log(f"  finished {out.name}")
        return
    failures.append(_run_failure(out, code))
    log(f"  FAILED {out.name}: {str(failures[-1]).splitlines()[0]}")


def run_experiment(
    exp: ExperimentSpec,
    suite_dir: Path,
    out: Path,
    *,
    progress: bool = False,
    log: Callable[[str], None],
    jobs: int = 1,
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    """Run (or continue) every cell x seed of ``exp`` into ``out``, ``jobs`` at a time, with ``extra``
    ``--set`` overrides after each cell's own; then write its results and plots."""
    base = exp.base_path(suite_dir)
    out.mkdir(parents=True, exist_ok=True)
    if exp.kind == "landscape":
        from edgelearn.commands.plan import landscape_report

        results: dict[str, Any] = {"experiment": exp.name, "kind": exp.kind, "cells": []}
        for cell in exp.run_cells():
            overrides = exp.run_overrides(cell, exp.seeds[0], extra)
            log(f"{exp.name}: landscape {cell_slug(cell)}")
            land = landscape_report(base, overrides, exp.grid.M, exp.grid.N)
            results["cells"].append({"cell": cell, "slug": cell_slug(cell), **land})
        write_json_atomic(out / RESULTS_FILE, results)
        _plots(exp, out, results)
        return results
    grid = exp.run_cells()
    plan = [
        (cell, seed, out / f"{cell_slug(cell)}-s{seed}", exp.run_overrides(cell, seed, extra))
        for cell in grid
        for seed in exp.seeds
    ]
    if jobs > 1:
        todo = [p for p in plan if not _finished(p[2])]
        todo.sort(key=lambda p: exp.seeds.index(p[1]))  # seed-major; sort is stable within a seed
        for _, _, run_dir, overrides in todo:  # a bad config fails here, before any worker starts
            _load_checked(base, overrides, f"experiment {exp.name}, run {run_dir.name}")
        log(f"{exp.name}: {len(todo)} of {len(plan)} runs to do, {jobs} at a time")
        _run_parallel([(base, o, d) for _, _, d, o in todo], jobs, log)
    rows: list[dict[str, Any]] = []
    for done, (cell, seed, run_dir, overrides) in enumerate(plan, start=1):
        if jobs == 1:
            log(f"{exp.name} [{done}/{len(plan)}] {run_dir.name}")
            _run_one(base, overrides, run_dir, progress)
        row: dict[str, Any] = {"cell": cell, "slug": cell_slug(cell), "seed": seed, "run_dir": run_dir.name}
        diverged = run_dir / DIVERGED_FILE
        if diverged.is_file():
            row["diverged"] = json.loads(diverged.read_text())["message"]
            row["metrics"] = dict.fromkeys(exp.metrics)
            log(f"{exp.name}: {run_dir.name} diverged ({row['diverged']}); its metrics count as missing")
        else:
            summary, records = read_summary(run_dir), read_metrics(run_dir)
            row["metrics"] = {m: run_metric(m, summary, records) for m in exp.metrics}
        rows.append(row)
    results = {
        "experiment": exp.name,
        "description": exp.description,
        "kind": exp.kind,
        "base": str(exp.base),
        "set": [*exp.set, *extra],
        "seeds": exp.seeds,
        "rows": rows,
        "cells": aggregate(rows, exp.metrics),
    }
    write_json_atomic(out / RESULTS_FILE, results)
    (out / RESULTS_TABLE).write_text(results_markdown(results, exp.metrics))
    _plots(exp, out, results)
    return results


def _plots(exp: ExperimentSpec, out: Path, results: dict[str, Any]) -> None:
    from edgelearn.report.sweep_plots import draw

    for spec in exp.plots:
        draw(spec, out, results)


def _fmt(metric: str, stat: Mapping[str, Any] | None) -> str:
    """mean ± sd: fractions (accuracy, shares) in percent, integers plain, others to 4 significant digits."""
    from edgelearn.report.sweep_plots import is_fraction

    if not stat or stat.get("mean") is None:
        return "-"
    mean, sd = stat["mean"], stat["sd"]
    if is_fraction(metric):
        return f"{100 * mean:.2f} ± {100 * sd:.2f} %" if sd else f"{100 * mean:.2f} %"
    if all(float(v).is_integer() for v in stat["values"]):
        return f"{mean:.1f} ± {sd:.1f}" if sd else f"{mean:.0f}"
    return f"{mean:.4g} ± {sd:.2g}" if sd else f"{mean:.4g}"


def results_markdown(results: Mapping[str, Any], metrics: Sequence[str]) -> str:
    """A Markdown table: one line per cell, mean ± sd over seeds (fractions in [0, 1] shown as %)."""
    cells_ = results["cells"]
    axes = list(cells_[0]["cell"]) if cells_ else []
    head = [*axes, "seeds", *metrics]
    lines = [
        f"### {results['experiment']}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for entry in cells_:
        seeds = ",".join(str(s) for s in entry["seeds"])
        values = [str(entry["cell"][a]) for a in axes] + [seeds]
        for m in metrics:
            stat = entry.get(m)
            text = _fmt(m, stat)
            if stat and 0 < stat["n"] < len(entry["seeds"]):  # e.g. a target only some seeds reached
                text += f" ({stat['n']} of {len(entry['seeds'])})"
            values.append(text)
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def selected_experiments(
    file: Path,
    *,
    only: Sequence[str] = (),
    quick: bool = False,
    cases: Sequence[str] = (),
    seeds: Sequence[int] = (),
) -> list[ExperimentSpec]:
    """The experiments of a suite file that ``only`` names (all when empty), quick-resolved, cut to ``cases``
    and run with ``seeds`` (:meth:`ExperimentSpec.narrowed`); a ConfigError names an unknown experiment or
    case and an experiment left without seeds."""
    suite = load_suite(file)
    names = [e.name for e in suite.experiments]
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise ConfigError(f"--only {unknown}: not experiments of {file}", hint=f"choose from {names}")
    chosen = [exp.resolved(quick) for exp in suite.experiments if not only or exp.name in only]
    known = {case for exp in chosen for case in exp.cases}
    unknown = sorted(set(cases) - known)
    if unknown:
        raise ConfigError(
            f"--case {unknown}: no chosen experiment of {file} has such a case",
            hint=f"choose from {sorted(known)}" if known else "these experiments define no `cases:`",
        )
    out = []
    for exp in chosen:
        narrowed = exp.narrowed(cases, seeds)
        if narrowed is None:
            continue
        if not narrowed.seeds:
            raise ConfigError(f"experiment {exp.name}: `seeds` is empty", hint="list at least one seed")
        out.append(narrowed)
    return out


def run_suite(
    path: str | Path,
    out: str | Path,
    *,
    only: Sequence[str] = (),
    quick: bool = False,
    progress: bool = False,
    log: Callable[[str], None] = print,
    jobs: int = 1,
    extra: Sequence[str] = (),
    cases: Sequence[str] = (),
    seeds: Sequence[int] = (),
) -> dict[str, dict[str, Any]]:
    """Run the experiments of a suite file (all, or those named in ``only``; cut to ``cases`` and ``seeds``
    when given) into ``out``, ``jobs`` runs at a time, with ``extra`` ``--set`` overrides on every run."""
    file = Path(path)
    results = {}
    chosen = selected_experiments(file, only=only, quick=quick, cases=cases, seeds=seeds)
    ensure_writable_dir(out, "sweep folder (--out)")
    try:
        for exp in chosen:
            results[exp.name] = run_experiment(
                exp, file.parent, Path(out) / exp.name, progress=progress, log=log, jobs=jobs, extra=extra
            )
    except KeyboardInterrupt as exc:
        where = f": {exc.message}" if isinstance(exc, Interrupted) else ""
        raise Interrupted(
            f"sweep {file} interrupted{where}",
            hint="run the same sweep command again to continue: finished runs are kept and interrupted ones "
            "resume from their checkpoints",
        ) from None
    return results


def check_suite(
    path: str | Path,
    *,
    quick: bool = False,
    extra: Sequence[str] = (),
    only: Sequence[str] = (),
    cases: Sequence[str] = (),
    seeds: Sequence[int] = (),
) -> int:
    """Validate every run config a suite would build (no training); returns how many runs it holds.

    Catches a typo in an axis key or value before hours of sweeping: each error names the experiment.
    """
    file = Path(path)
    total = 0
    for exp in selected_experiments(file, only=only, quick=quick, cases=cases, seeds=seeds):
        base = exp.base_path(file.parent)
        for cell in exp.run_cells():
            for seed in exp.seeds:  # the seed is part of a run's config too (e.g. --seed -1 is refused)
                where = f"{file}: experiment {exp.name}, cell {cell_slug(cell)}, seed {seed}"
                cfg = _load_checked(base, exp.run_overrides(cell, seed, extra), where)
                try:
                    check_memory(cfg)
                except ConfigError as exc:
                    raise ConfigError(f"{where}: {exc.message}", hint=exc.hint) from None
                total += 1
    return total
