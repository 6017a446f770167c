"""Doing a sweep's runs: one at a time in this process (:func:`run_one`: a finished run is skipped, a
killed one resumed, a diverged one recorded), or ``jobs > 1`` at once (:func:`run_parallel`).

``jobs > 1`` runs that many runs at once on as many long-lived worker processes (started once per experiment,
so each pays the interpreter, torch and edgelearn imports once, not once per run), each pinned to its own
share of the cores (torch threads = cores / jobs). Results do not depend on ``jobs``: every run is seeded by
its own config, and a worker restores its process state before each run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgelearn.errors import ConfigError, DivergenceError, EdgelearnError, Interrupted
from edgelearn.report.io import SUMMARY_FILE, write_json_atomic

DIVERGED_FILE = "diverged.json"
"""Left in a run's folder when its training diverged: the sweep keeps it as a result with missing metrics
(``results.md`` shows how many seeds a cell kept); delete it to retry the run."""
RUN_ERROR_FILE = "sweep_error.json"
"""What a run that failed in a ``jobs > 1`` worker process left in its folder (message, hint, traceback)."""
POLL_S = 0.2
"""Longest wait of the parent of ``jobs > 1`` workers between checks (it wakes at once when a run ends)."""


def run_finished(out: Path) -> bool:
    """Whether the run in ``out`` has ended: with a summary, or diverged (a result too, kept as such)."""
    return (out / SUMMARY_FILE).is_file() or (out / DIVERGED_FILE).is_file()


def run_one(base: Path, overrides: list[str], out: Path, progress: bool) -> None:
    """One run into ``out``: skipped when finished, resumed when a checkpoint is there, else started. A run
    that diverges is recorded in ``DIVERGED_FILE`` (its metrics count as missing), not raised: one unstable
    cell must not stop a sweep."""
    from edgelearn.run_config import load_config
    from edgelearn.runner import run

    if run_finished(out):
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
    """One run of a worker: ``(out, 0)`` when it finished or diverged (:func:`run_one` keeps a diverged run
    as a result), else ``(out, 2)`` for the user's error or ``(out, 1)`` for a bug, with the details left in
    ``out``'s :data:`RUN_ERROR_FILE` for :func:`_run_failure`. Either way the worker goes on to its next run.
    A run stopped by Ctrl-C (KeyboardInterrupt, after its round) ends the worker with 130."""
    (out / RUN_ERROR_FILE).unlink(missing_ok=True)  # a report left by an earlier, interrupted sweep
    try:
        run_one(base, overrides, out, progress=False)
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


def run_parallel(runs: Sequence[tuple[Path, list[str], Path]], jobs: int, log: Callable[[str], None]) -> None:
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
    """The parent loop of :func:`run_parallel`: hand runs, in order, to idle workers until all have ended.

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
