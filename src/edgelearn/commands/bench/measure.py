"""Timing FedAvg on the executors: a run built by the real code path (``build_config`` ->
``build_context`` -> FedAvg -> ``executor.train``), warmed up, then timed round by round; one workload on
each executor, and one round over growing device counts (scaling). Runs inside a measurement process
(:mod:`edgelearn.commands.bench.jobs`)."""

from __future__ import annotations

import dataclasses
import gc
import os
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgelearn.commands.bench.plan import IN_PROCESS, RAY_LABELS, merge_config, scaling_config, too_slow
from edgelearn.commands.bench.records import failed_record, record
from edgelearn.commands.bench.rss import (
    current_rss_mb,
    descendant_pids,
    peak_rss_mb,
    reset_peak_rss,
    sum_peaks,
)
from edgelearn.engine.device import timed
from edgelearn.errors import ConfigError

WARMUP_CLIENTS = 32
"""Clients of the warm-up call; >= the auto executor's 16-client threshold so it warms the vmap path too."""
WARMUP_STEPS = 2


class CountingExecutor:
    """Forwards ``train`` (counting the samples, SGD steps and device-updates it reports) and ``infer``
    (uncounted) to the real executor."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.device = inner.device
        self.samples = 0
        self.steps = 0
        self.updates = 0

    def train(self, cohort: Any, spec: Any) -> Any:
        """Train through the wrapped executor; add the cohort's trained samples, steps and updated devices."""
        result = self.inner.train(cohort, spec)
        self.samples += int(np.sum(result.samples))
        self.steps += int(np.sum(result.steps))
        self.updates += int(np.count_nonzero(result.steps))
        return result

    def infer(self, cohort: Any, spec: Any) -> Any:
        """Infer through the wrapped executor (evaluation and teachers: not training work, not counted)."""
        return self.inner.infer(cohort, spec)


def executor_overrides(label: str) -> dict[str, Any]:
    """Config entries selecting an executor label (``ray-vmap`` = Ray workers running vmap)."""
    if label in IN_PROCESS:
        return {"executor": label}
    if label in RAY_LABELS:
        return {"executor": "ray", "engine": {"ray_inner": label.split("-", 1)[1]}}
    raise ConfigError(
        f"benchmark executor {label!r} is unknown", hint=f"use one of: {', '.join(IN_PROCESS + RAY_LABELS)}"
    )


def build_fedavg(
    config: Mapping[str, Any], label: str, threads: int | str
) -> tuple[Any, Any, CountingExecutor]:
    """Config -> run context -> FedAvg (initialised), with the executor wrapped in a counter."""
    from edgelearn.algorithms.registry import make_algorithm
    from edgelearn.run_config import build_config
    from edgelearn.runner import build_context

    cfg = build_config(
        merge_config(merge_config(config, executor_overrides(label)), {"engine": {"torch_threads": threads}})
    )
    ctx = build_context(cfg)
    counter = CountingExecutor(ctx.executor)
    ctx.executor = counter
    algo = make_algorithm(ctx)
    algo.init()
    return ctx, algo, counter


def warm_up(ctx: Any, algo: Any, executor: Any) -> float:
    """A few untimed steps of the first clients through ``executor`` (results discarded); seconds taken."""
    from edgelearn.algorithms.base import local_spec

    started = time.perf_counter()
    nodes = np.asarray(algo.eligible[:WARMUP_CLIENTS])
    zeros = np.zeros(len(nodes), dtype=np.int64)
    cohort = ctx.cohort(nodes, [algo.global_state], zeros, zeros, 1, 0)
    spec = dataclasses.replace(local_spec(ctx.cfg.algorithm.local), epochs=None, steps=WARMUP_STEPS)
    executor.train(cohort, spec)
    return time.perf_counter() - started


def _executor_extras(executor: Any) -> dict[str, Any]:
    """What the executor decided (auto's picks, Ray's worker count)."""
    extras: dict[str, Any] = {}
    choices = getattr(executor, "choices", None)
    if choices:
        extras["auto_picks"] = sorted({str(c["executor"]) for c in choices.values()})
    return extras


def _worker_memory(executor: Any, started_pids: Sequence[int]) -> dict[str, Any]:
    """Summed peak RSS of the Ray executor's current workers and how many restarted since ``started_pids``.

    Ray restarts an actor killed by its memory monitor (e.g. when another program fills the machine) or by a
    crash and re-runs its call: results stay exact, but the timing then includes the restart.
    """
    pids = executor.worker_pids()
    restarted = len(set(started_pids) - set(pids))
    out: dict[str, Any] = {"workers_peak_rss_mb": sum_peaks(pids), "workers_restarted": restarted}
    if restarted:
        out["warning"] = f"Ray restarted {restarted} worker(s) during this run: its timings include restarts"
    return out


def _package_root() -> Path:
    """The folder holding the ``edgelearn`` package (``src`` in a checkout), for Ray workers' PYTHONPATH."""
    import edgelearn

    return Path(edgelearn.__file__).resolve().parent.parent


def _start_ray(threads: int) -> float:
    """Start a local Ray cluster (all CPUs, no dashboard) unless one is running; seconds it took."""
    import logging

    import ray

    started = time.perf_counter()
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(_package_root()) not in paths:  # workers import edgelearn from where this process does
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(_package_root()), *paths) if p)
    if not ray.is_initialized():
        ray.init(
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
    return time.perf_counter() - started


def measure_fl(
    workload: str, config: Mapping[str, Any], labels: Sequence[str], threads: int
) -> Iterator[dict[str, Any]]:
    """Time FedAvg's round loop on each executor label in turn (one Ray cluster for all Ray labels)."""
    ray_startup_s = _start_ray(threads) if any(label in RAY_LABELS for label in labels) else None
    for label in labels:
        yield _measure_fl_one(workload, config, label, threads, ray_startup_s)
        gc.collect()
    if ray_startup_s is not None:
        import ray

        ray.shutdown()


def _measure_fl_one(
    workload: str, config: Mapping[str, Any], label: str, threads: int, ray_startup_s: float | None
) -> dict[str, Any]:
    reset_ok = reset_peak_rss()  # a shared Ray process measures each label from its own start
    started = time.perf_counter()
    ctx, algo, counter = build_fedavg(config, label, threads)
    extras: dict[str, Any] = {}
    if ray_startup_s is not None:
        pool_started = time.perf_counter()
        pids = counter.inner.worker_pids()
        extras.update(
            ray_startup_s=ray_startup_s,
            pool_start_s=time.perf_counter() - pool_started,
            ray_workers=len(pids),
        )
    setup_s = time.perf_counter() - started
    warmup_s = warm_up(ctx, algo, counter.inner)
    round_s = [timed(algo.run_round, r, device=ctx.device) for r in range(1, algo.rounds + 1)]
    ev = algo.evaluate()
    wall_s = time.perf_counter() - started
    if ray_startup_s is not None:
        extras.update(_worker_memory(counter.inner, pids))
        extras["cluster_peak_rss_mb"] = sum_peaks(descendant_pids())
        extras["rss_note"] = (
            "peak_rss_mb is the driver; workers_peak_rss_mb sums the worker actors' peaks; "
            "cluster_peak_rss_mb sums every process under the driver (raylet, GCS, workers; shared pages "
            "counted once per process, an upper bound, spanning all Ray runs of this process)"
        )
        counter.inner.shutdown()
    return record(
        workload,
        label,
        wall_s=wall_s,
        loop_s=sum(round_s),
        samples=counter.samples,
        updates=counter.updates,
        peak_rss_mb=peak_rss_mb(),
        final_accuracy=float(ev["accuracy"]),
        rounds=algo.rounds,
        devices=int(ctx.topology.num_devices),
        train_samples=int(len(ctx.bundle.train.y)),
        setup_s=setup_s,
        warmup_s=warmup_s,
        first_round_s=round_s[0],
        round_s_median=statistics.median(round_s),
        threads=threads,
        peak_rss_scope="this run" if reset_ok or ray_startup_s is None else "process lifetime",
        **extras,
        **_executor_extras(counter.inner),
    )


def measure_scaling(
    study: str,
    base: Mapping[str, Any],
    label: str,
    devices: Sequence[int],
    samples_per_device: int,
    threads: int,
    max_round_s: float,
) -> Iterator[dict[str, Any]]:
    """FedAvg rounds at each device count in turn (ascending); a size projected too slow is skipped."""
    is_ray = label in RAY_LABELS
    ray_startup_s = _start_ray(threads) if is_ray else None
    last: tuple[int, float] | None = None
    executor: Any = None
    for n in devices:
        note = too_slow(last, n, max_round_s)
        if note is not None:
            yield failed_record(study, label, "skipped", note, devices=n)
            continue
        rec, executor = _measure_scaling_one(study, base, label, n, samples_per_device, threads)
        if ray_startup_s is not None:
            rec["ray_startup_s"] = ray_startup_s
        last = (n, float(rec["first_round_s"]))
        yield rec
        gc.collect()
    if executor is not None and is_ray:
        executor.shutdown()
        import ray

        ray.shutdown()


def _measure_scaling_one(
    study: str, base: Mapping[str, Any], label: str, n: int, samples_per_device: int, threads: int
) -> tuple[dict[str, Any], Any]:
    started = time.perf_counter()
    ctx, algo, counter = build_fedavg(scaling_config(base, n, samples_per_device), label, threads)
    pids = counter.inner.worker_pids() if label in RAY_LABELS else []
    warmup_s = warm_up(ctx, algo, counter.inner)
    setup_s = time.perf_counter() - started
    setup_peak = peak_rss_mb()
    reset_ok = reset_peak_rss()
    rss_before = current_rss_mb()
    workers_reset = all(reset_peak_rss(pid) for pid in pids)
    round_s = [timed(algo.run_round, r, device=ctx.device) for r in range(1, algo.rounds + 1)]
    round_peak = peak_rss_mb()
    steady = round_s[-1]
    ev = algo.evaluate()
    extras: dict[str, Any] = {}
    if pids:
        extras.update(_worker_memory(counter.inner, pids))
        extras["workers_peak_scope"] = "these rounds" if workers_reset else "worker lifetime"
    rec = record(
        study,
        label,
        wall_s=time.perf_counter() - started,
        loop_s=steady,
        samples=counter.samples // algo.rounds,
        updates=counter.updates // algo.rounds,
        peak_rss_mb=max(setup_peak, round_peak),
        final_accuracy=float(ev["accuracy"]),
        devices=n,
        train_samples=int(len(ctx.bundle.train.y)),
        setup_s=setup_s,
        warmup_s=warmup_s,
        first_round_s=round_s[0],
        rss_before_round_mb=rss_before,
        round_peak_rss_mb=round_peak if reset_ok else None,
        round_rss_growth_mb=max(0.0, round_peak - rss_before)
        if reset_ok and rss_before is not None
        else None,
        threads=threads,
        note="loop_s, samples and updates are of one steady round (the last of "
        f"{algo.rounds}); first_round_s includes one-time costs",
        **extras,
        **_executor_extras(counter.inner),
    )
    executor = counter.inner
    del ctx, algo, counter
    return rec, executor
