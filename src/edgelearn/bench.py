"""Benchmarks of the executors (serial, vmap, auto, ray) against centralized training and a naive FL loop.

``edgelearn bench`` and ``benchmarks/bench.py`` call :func:`main`. Every measurement runs the real code
path (``build_config`` -> ``build_context`` -> FedAvg -> ``executor.train``) in its own process, so its
peak RSS belongs to that run alone. Workloads (issue 5):

* **W**: digits, MLP 64-128-10, 100 devices (Dirichlet 0.5), all devices every round, one local epoch of
  SGD (lr 0.05, batch 16), 20 rounds; per executor and against centralized training of the same samples.
* **W1000**: W scaled to 1,000 devices. Digits holds only 1,438 training samples, so W1000 trains the same
  MLP on synthetic 1x8x8 data with the same ~14 samples per device; it adds the naive baseline, a plain
  PyTorch loop that deep-copies the global model into one module per device. The vmap and auto executors
  are also *paired* with that loop: both run round by round, alternating, in one process
  (:func:`measure_paired`), so load from other programs on a shared machine hits both alike.
* **Scaling**: one FedAvg round over 10 ... 10,000 devices (synthetic, ~14 samples each), wall seconds and
  peak RSS per run.
* **CNN**: ``cnn_small`` on Fashion-MNIST (skipped with a note if the files are absent), fewer rounds.
* **Threads**: W on vmap with ``engine.torch_threads`` auto (the default), 1 and 2, each idle and beside a
  busy neighbour (a second process spinning one core, started and stopped here); the steady round (median
  from round ``THREAD_STEADY_FROM``) and its ratio to the one-thread round under the same condition. The
  settings alternate round by round in one process per condition (:func:`measure_threads`).

Timing: ``loop_s`` is the time inside the round loop only; ``wall_s`` is everything of a run (data loading,
partition, executor start, warm-up, loop, final evaluation) except interpreter start and module imports,
which a fork server does once (:data:`PRELOAD`). Before the loop each executor is warmed up on
``WARMUP_CLIENTS`` clients for ``WARMUP_STEPS`` steps (module construction, Ray actors), which does not
change the run's results. Peak RSS is the process's ``getrusage`` maximum (a forked process starts from the
server's imported modules, as a fresh interpreter would); Ray records add their workers' peaks.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import importlib.util
import itertools
import json
import math
import multiprocessing
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgelearn.errors import ConfigError

# ----------------------------------------------------------------------------------------------------------
# Settings (each one is part of the workload definitions of issue 5 or explained where it is set)

SEED = 0
"""Run seed of every workload: data split, initial model, batch orders."""
BENCH_THREADS = 1
"""torch intra-op threads per process. One, because on this shared 2-core machine two threads made a serial
MLP round ~10x slower (0.09 s -> 0.37 s at 100 devices, 1.3 s -> 14.7 s at 1,000; the threads spin against
other work), and Ray workers run one thread per CPU anyway. Override with ``--threads``."""
W_DEVICES = 100
W_ROUNDS = 20
W_LR = 0.05
W_BATCH = 16
W_ALPHA = 0.5
MLP_HIDDEN = (128,)
"""The MLP 64-128-10 of workload W (input 1x8x8 = 64 features, 10 classes)."""
SAMPLES_PER_DEVICE = 14
"""Training samples per device in the synthetic workloads: W has 1,438 digits samples over 100 devices."""
W1000_DEVICES = 1000
SYNTHETIC_TEST = 2000
"""Synthetic test samples (accuracy only; evaluation is outside ``loop_s``)."""
SYNTHETIC_SHAPE = (1, 8, 8)
"""Digits' image shape, so the synthetic workloads train the very same MLP as W."""
SCALING_DEVICES = (10, 100, 1000, 10_000)
SCALING_TIMED_ROUNDS = 2
"""Scaling runs time two rounds: the first (cold caches, e.g. Ray's object store) and a steady one."""
CNN_ROUNDS = 2
"""Fashion-MNIST rounds: one local epoch of 100 devices is the whole 60,000-image training set, ~15-20 s per
round on one core here, so two rounds keep the CNN section to a few minutes."""
CENTRAL_SWEEP_BATCHES = (16, 32, 64, 128, 256, 512, 1024)
"""Batch sizes of the best-centralized-throughput sweep (issue 5: 16 .. 1024)."""
SWEEP_SAMPLES = {"mlp": 32_768, "cnn_small": 4096}
"""Samples per timed sweep repeat: >= 0.1 s at the fastest batch size here, a few seconds at batch 16."""
SWEEP_REPEATS = 3
"""Timed repeats per sweep batch size; the fastest counts (a busy machine only slows runs down)."""
WARMUP_CLIENTS = 32
"""Clients of the warm-up call; >= the auto executor's 16-client threshold so it warms the vmap path too."""
WARMUP_STEPS = 2
CENTRAL_WARMUP_STEPS = 5
JOB_TIMEOUT_S = 480.0
"""Most seconds one measurement process may run (full benchmark); a run past it is reported as a timeout."""
MAX_ROUND_S = 120.0
"""Scaling: a size whose round is projected (linearly from the previous size) to exceed this is skipped."""
HALF = 0.5
"""Issue 5: half of the best centralized throughput at any batch size is this CPU's practical ceiling."""
NAIVE_SPEEDUP_TARGET = 10.0
"""Done-when: the fastest executor's loop at least 10x faster than the naive per-device-copy loop."""
PAIRED_PREFIX = "paired-"
"""Workload-name prefix of the paired records: executors timed round by round against the naive loop in one
process (see :func:`measure_paired`)."""
PAIRED_EXECUTORS = ("vmap", "auto")
"""Executors W1000 pairs with the naive loop: the in-process ones that can be fastest (serial is ~10x slower
than vmap here, and Ray executors run in other processes, so pairing them would not share the load)."""

THREADS_PREFIX = "threads-"
"""Workload-name prefix of the thread-study records (``threads-<workload>-idle`` / ``-busy``)."""
THREAD_SETTINGS: tuple[int | str, ...] = ("auto", 1, 2)
"""engine.torch_threads values compared on W: the default, and the two explicit counts of a 2-core machine."""
THREAD_STEADY_FROM = 3
"""First steady round: round 1 builds modules and plans, round 2 can still grow the allocator's pools."""
NEIGHBOUR_CODE = (
    "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"
)
"""The busy neighbour: a separate interpreter spinning one core until its deadline (or until it is killed)."""
NEIGHBOUR_SETTLE_S = 0.2
"""Seconds the neighbour runs before timing starts, so it is spinning (interpreter started) when it counts."""

QUICK_W1000_ROUNDS = 3
QUICK_THREAD_ROUNDS = 6
"""Quick mode: rounds of each thread-study run (steady median over rounds 3..6)."""
QUICK_PAIRED_EXECUTORS = ("vmap",)
QUICK_CNN_STEPS = 2
"""Quick mode: two local steps per device instead of an epoch, one round (a smoke run of the CNN path)."""
QUICK_SWEEP_REPEATS = 1
QUICK_CNN_SWEEP = (16, 1024)
"""Quick mode times the CNN's centralized throughput at the sweep's two ends only."""
QUICK_SWEEP_SAMPLES = {"mlp": 16_384, "cnn_small": 2048}
QUICK_SERIAL_MAX_DEVICES = 1000
"""Quick mode skips the serial executor above 1,000 devices (a 10,000-device serial round takes ~15 s)."""
QUICK_JOB_TIMEOUT_S = 120.0
QUICK_MAX_ROUND_S = 30.0

IN_PROCESS = ("serial", "vmap", "auto")
RAY_LABELS = ("ray-vmap", "ray-serial")
NUMERIC_KEYS = ("wall_s", "loop_s", "samples_per_s", "updates_per_s", "peak_rss_mb", "final_accuracy")
RECORD_KEYS = ("workload", "executor", *NUMERIC_KEYS)
STDERR_TAIL_CHARS = 800
"""Characters of a failed measurement process's output kept in its record's note."""
TABLE_WIDTH = 160
"""Console width when stdout is not a terminal: the executor table's 12 columns fit without wrapping."""
BYTES_PER_MB = 2**20
MIN_DURATION_S = 1e-12
"""Floor of a timed duration in rate computations (a clock may report 0 for a sub-tick region)."""
KB_PER_MB = 1024


# ----------------------------------------------------------------------------------------------------------
# Plan


@dataclass(frozen=True)
class FLWorkload:
    """A FedAvg workload timed on several executors, with its centralized and naive-loop references.

    ``family`` names the model and input shape; workloads of one family share a centralized batch sweep.
    ``paired`` executors are also timed round by round against the naive loop in one process (needs
    ``naive``), a ratio that other processes' load on a shared machine cannot skew.
    """

    name: str
    config: Mapping[str, Any]
    executors: tuple[str, ...]
    family: str
    centralized: bool = True
    naive: bool = False
    paired: tuple[str, ...] = ()
    sweep: tuple[int, ...] = ()
    sweep_samples: int = 0
    sweep_repeats: int = SWEEP_REPEATS
    note: str = ""


@dataclass(frozen=True)
class ScalingStudy:
    """Rounds of one workload over growing device counts, each size in a fresh process (Ray: one cluster)."""

    name: str
    config: Mapping[str, Any]
    devices: tuple[int, ...]
    executors: tuple[str, ...]
    samples_per_device: int = SAMPLES_PER_DEVICE
    max_devices: Mapping[str, int] = field(default_factory=dict)
    max_round_s: float = MAX_ROUND_S


@dataclass(frozen=True)
class ThreadStudy:
    """One workload timed at each ``engine.torch_threads`` setting, idle and beside a busy neighbour."""

    name: str
    config: Mapping[str, Any]
    executor: str = "vmap"
    settings: tuple[int | str, ...] = THREAD_SETTINGS
    busy: tuple[bool, ...] = (False, True)


@dataclass(frozen=True)
class BenchPlan:
    """Everything one benchmark run measures, and how (threads, per-process time limit, isolation)."""

    workloads: tuple[FLWorkload, ...]
    scaling: tuple[ScalingStudy, ...] = ()
    threads: int = BENCH_THREADS
    job_timeout_s: float = JOB_TIMEOUT_S
    isolate: bool = True
    notes: tuple[dict[str, Any], ...] = ()
    thread_study: ThreadStudy | None = None


def ray_available() -> bool:
    """True when the optional Ray package can be imported (``pip install 'edgelearn[ray]'``)."""
    return importlib.util.find_spec("ray") is not None


def fashion_available() -> bool:
    """True when the Fashion-MNIST IDX files sit in the default folder (Debian's dataset-fashion-mnist)."""
    from edgelearn.data.idx import FASHION_MNIST_DEFAULT_DIR

    return FASHION_MNIST_DEFAULT_DIR.is_dir() and any(FASHION_MNIST_DEFAULT_DIR.iterdir())


def fedavg_config(
    *,
    dataset: str,
    devices: int,
    rounds: int,
    model: str = "mlp",
    num_train: int | None = None,
    local: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``build_config`` mapping of a FedAvg workload (W's settings unless overridden); no executor."""
    data: dict[str, Any] = {"dataset": dataset}
    if dataset == "synthetic":
        data.update(
            num_train=int(num_train or SAMPLES_PER_DEVICE * devices),
            num_test=SYNTHETIC_TEST,
            input_shape=list(SYNTHETIC_SHAPE),
        )
    options = {"hidden": list(MLP_HIDDEN)} if model == "mlp" else {}
    return {
        "name": "bench",
        "seed": SEED,
        "data": data,
        "partition": {"method": "dirichlet", "alpha": W_ALPHA},
        "topology": {"devices": int(devices)},
        "model": {"name": model, "options": options},
        "algorithm": {
            "name": "fedavg",
            "rounds": int(rounds),
            "local": dict(local or {"lr": W_LR, "batch_size": W_BATCH, "epochs": 1}),
        },
        "output": {"plots": False, "progress": False},
    }


def default_plan(quick: bool = False, threads: int = BENCH_THREADS) -> BenchPlan:
    """The issue-5 benchmark; ``quick`` keeps every section but shrinks it to a few minutes (CI smoke).

    Quick mode runs no Ray executor (Ray has its own tests; its cluster and actors alone take ~20 s to
    start here), 3 W1000 rounds, one CNN round of 2 local steps, and serial scaling up to 1,000 devices.
    """
    notes: list[dict[str, Any]] = []
    ray: tuple[str, ...] = ()
    if quick:
        notes.append({"section": "ray", "note": "quick mode: Ray executors not run"})
    elif ray_available():
        ray = RAY_LABELS
    else:
        notes.append({"section": "ray", "note": "Ray is not installed: Ray executors skipped"})
    sweep_samples = QUICK_SWEEP_SAMPLES if quick else SWEEP_SAMPLES
    repeats = QUICK_SWEEP_REPEATS if quick else SWEEP_REPEATS
    mlp = "mlp-1x8x8"
    workloads = [
        FLWorkload(
            name="W-digits-mlp",
            config=fedavg_config(dataset="digits", devices=W_DEVICES, rounds=W_ROUNDS),
            executors=(*IN_PROCESS, *ray),
            family=mlp,
            sweep=CENTRAL_SWEEP_BATCHES,
            sweep_samples=sweep_samples["mlp"],
            sweep_repeats=repeats,
        ),
        FLWorkload(
            name="W1000-synthetic-mlp",
            config=fedavg_config(
                dataset="synthetic", devices=W1000_DEVICES, rounds=QUICK_W1000_ROUNDS if quick else W_ROUNDS
            ),
            executors=("serial", "vmap") if quick else (*IN_PROCESS, *ray),
            family=mlp,
            naive=True,
            paired=QUICK_PAIRED_EXECUTORS if quick else PAIRED_EXECUTORS,
            note="W scaled to 1,000 devices: synthetic 1x8x8 data, ~14 samples per device as in W",
        ),
    ]
    if fashion_available():
        local: dict[str, Any] = {"lr": W_LR, "batch_size": W_BATCH}
        local.update({"steps": QUICK_CNN_STEPS} if quick else {"epochs": 1})
        workloads.append(
            FLWorkload(
                name="fashion-cnn_small",
                config=fedavg_config(
                    dataset="fashion_mnist",
                    devices=W_DEVICES,
                    rounds=1 if quick else CNN_ROUNDS,
                    model="cnn_small",
                    local=local,
                ),
                executors=("serial", "vmap") if quick else (*IN_PROCESS, *ray),
                family="cnn_small-1x28x28",
                sweep=QUICK_CNN_SWEEP if quick else CENTRAL_SWEEP_BATCHES,
                sweep_samples=sweep_samples["cnn_small"],
                sweep_repeats=repeats,
            )
        )
    else:
        notes.append({"section": "fashion-cnn_small", "note": "Fashion-MNIST files absent: CNN skipped"})
    scaling = ScalingStudy(
        name="scaling-mlp-synthetic",
        config=fedavg_config(dataset="synthetic", devices=SCALING_DEVICES[0], rounds=SCALING_TIMED_ROUNDS),
        devices=SCALING_DEVICES,
        executors=("vmap", "serial") if quick else (*IN_PROCESS, *ray),
        max_devices={"serial": QUICK_SERIAL_MAX_DEVICES} if quick else {},
        max_round_s=QUICK_MAX_ROUND_S if quick else MAX_ROUND_S,
    )
    thread_study = ThreadStudy(
        name=f"{THREADS_PREFIX}W-digits-mlp",
        config=fedavg_config(
            dataset="digits", devices=W_DEVICES, rounds=QUICK_THREAD_ROUNDS if quick else W_ROUNDS
        ),
    )
    return BenchPlan(
        workloads=tuple(workloads),
        scaling=(scaling,),
        threads=int(threads),
        job_timeout_s=QUICK_JOB_TIMEOUT_S if quick else JOB_TIMEOUT_S,
        notes=tuple(notes),
        thread_study=thread_study,
    )


# ----------------------------------------------------------------------------------------------------------
# Memory: peak RSS of this process (resettable on Linux) and of other processes (Ray workers)


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


def _sum_peaks(pids: Iterable[int]) -> float | None:
    peaks = [p for p in (process_peak_rss_mb(pid) for pid in pids) if p is not None]
    return float(sum(peaks)) if peaks else None


# ----------------------------------------------------------------------------------------------------------
# Records


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


# ----------------------------------------------------------------------------------------------------------
# Measurements (each runs inside a measurement process, see _execute)


class _CountingExecutor:
    """Forwards ``train`` to the real executor and counts the samples and device-updates it reports."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.device = inner.device
        self.samples = 0
        self.updates = 0

    def train(self, cohort: Any, spec: Any) -> Any:
        """Train through the wrapped executor; add the cohort's trained samples and updated devices."""
        result = self.inner.train(cohort, spec)
        self.samples += int(np.sum(result.samples))
        self.updates += int(np.count_nonzero(result.steps))
        return result


def executor_overrides(label: str) -> dict[str, Any]:
    """Config entries selecting an executor label (``ray-vmap`` = Ray workers running vmap)."""
    if label in IN_PROCESS:
        return {"executor": label}
    if label in RAY_LABELS:
        return {"executor": "ray", "engine": {"ray_inner": label.split("-", 1)[1]}}
    raise ConfigError(
        f"benchmark executor {label!r} is unknown", hint=f"use one of: {', '.join(IN_PROCESS + RAY_LABELS)}"
    )


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of two config mappings (``extra`` wins)."""
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _build(config: Mapping[str, Any], label: str, threads: int | str) -> tuple[Any, Any, _CountingExecutor]:
    """Config -> run context -> FedAvg (initialised), with the executor wrapped in a counter."""
    from edgelearn.algorithms import make_algorithm
    from edgelearn.config import build_config
    from edgelearn.runner import build_context

    cfg = build_config(
        _merge(_merge(config, executor_overrides(label)), {"engine": {"torch_threads": threads}})
    )
    ctx = build_context(cfg)
    counter = _CountingExecutor(ctx.executor)
    ctx.executor = counter
    algo = make_algorithm(ctx)
    algo.init()
    return ctx, algo, counter


def _warm_up(ctx: Any, algo: Any, executor: Any) -> float:
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
    out: dict[str, Any] = {"workers_peak_rss_mb": _sum_peaks(pids), "workers_restarted": restarted}
    if restarted:
        out["warning"] = f"Ray restarted {restarted} worker(s) during this run: its timings include restarts"
    return out


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
    ctx, algo, counter = _build(config, label, threads)
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
    warmup_s = _warm_up(ctx, algo, counter.inner)
    round_s = []
    for r in range(1, algo.rounds + 1):
        t = time.perf_counter()
        algo.run_round(r)
        round_s.append(time.perf_counter() - t)
    ev = algo.evaluate()
    wall_s = time.perf_counter() - started
    if ray_startup_s is not None:
        extras.update(_worker_memory(counter.inner, pids))
        extras["cluster_peak_rss_mb"] = _sum_peaks(descendant_pids())
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


def _train_data(config: Mapping[str, Any], threads: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """The workload's run context (serial executor: nothing else starts) and its full training set."""
    ctx, _algo, _counter = _build(config, "serial", threads)
    x = torch.as_tensor(ctx.bundle.train.x, device=ctx.device)
    y = torch.as_tensor(ctx.bundle.train.y, device=ctx.device)
    return ctx, x, y


def _central_steps(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int,
    total: int,
    gen: torch.Generator,
) -> int:
    """Plain mini-batch SGD over shuffled passes of (x, y) until ``total`` samples; samples trained."""
    import torch.nn.functional as F

    seen = 0
    model.train()
    while seen < total:
        order = torch.randperm(len(y), generator=gen).to(y.device)
        for i in range(0, len(y), batch):
            take = order[i : min(i + batch, i + total - seen)]
            loss = F.cross_entropy(model(x[take]), y[take])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(take)
            if seen >= total:
                break
    return seen


def measure_centralized(
    workload: str,
    config: Mapping[str, Any],
    threads: int,
    sweep: Sequence[int],
    sweep_samples: int,
    repeats: int,
) -> Iterator[dict[str, Any]]:
    """Centralized SGD of one model on all training data: the run's samples at its batch size, then a sweep.

    The reference trains exactly the samples FedAvg trains (rounds x one epoch of every device = rounds
    epochs of the training set) at the same batch size and learning rate; the sweep times ``sweep_samples``
    samples per batch size (best of ``repeats``) for the best throughput at any batch size.
    """
    from edgelearn.engine import evaluate_state

    started = time.perf_counter()
    ctx, x, y = _train_data(config, threads)
    local = ctx.cfg.algorithm.local
    batch, lr = int(local.batch_size), float(local.lr)
    if local.epochs is not None:
        total = ctx.cfg.algorithm.rounds * local.epochs * len(y)
    else:
        sizes = np.array([len(d) for d in ctx.client_data])
        total = ctx.cfg.algorithm.rounds * int(np.minimum(sizes, batch).sum()) * int(local.steps)
    gen = torch.Generator().manual_seed(SEED)

    def fresh() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(SEED)
        model = ctx.model_fn().to(ctx.device)
        return model, torch.optim.SGD(model.parameters(), lr=lr)

    warm, warm_opt = fresh()
    _central_steps(warm, warm_opt, x, y, batch, CENTRAL_WARMUP_STEPS * batch, gen)
    model, opt = fresh()
    t = time.perf_counter()
    seen = _central_steps(model, opt, x, y, batch, total, gen)
    loop_s = time.perf_counter() - t
    acc, _loss = evaluate_state(model, None, ctx.test_x, ctx.test_y, ctx.cfg.eval.batch_size)
    yield record(
        workload,
        "centralized",
        wall_s=time.perf_counter() - started,
        loop_s=loop_s,
        samples=seen,
        updates=None,
        peak_rss_mb=peak_rss_mb(),
        final_accuracy=acc,
        batch_size=batch,
        threads=threads,
        note="one model, plain PyTorch loop, same samples and batch size as the FedAvg run",
    )
    for size in sweep:
        best = math.inf
        for _ in range(max(1, repeats)):
            model, opt = fresh()
            _central_steps(model, opt, x, y, size, CENTRAL_WARMUP_STEPS * size, gen)
            t = time.perf_counter()
            done = _central_steps(model, opt, x, y, size, sweep_samples, gen)
            best = min(best, time.perf_counter() - t)
        yield record(
            f"centralized-sweep-{workload}",
            f"centralized-b{size}",
            wall_s=best,
            loop_s=best,
            samples=done,
            updates=None,
            peak_rss_mb=peak_rss_mb(),
            final_accuracy=None,
            batch_size=size,
            repeats=repeats,
            threads=threads,
        )


class NaiveLoop:
    """The naive FL loop: per round, deep-copy the global model for each device, train it, average all.

    Same data, batch size, learning rate and rounds as FedAvg; the trained copies are kept until the round's
    average, as simple simulators do. Batch orders come from one ``torch.randperm`` stream seeded with
    :data:`SEED`.
    """

    def __init__(self, ctx: Any) -> None:
        local = ctx.cfg.algorithm.local
        self.ctx = ctx
        self.rounds, self.batch, self.lr = (
            int(ctx.cfg.algorithm.rounds),
            int(local.batch_size),
            float(local.lr),
        )
        self.gen = torch.Generator().manual_seed(SEED)
        torch.manual_seed(SEED)
        self.model = ctx.model_fn().to(ctx.device)
        self.devices = [d for d in ctx.client_data if len(d) > 0]

    def round(self, clients: Sequence[Any] | None = None) -> int:
        """One round over ``clients`` (default: every device with data); returns the samples trained."""
        import torch.nn.functional as F

        states, weights, seen = [], [], 0
        for data in self.devices if clients is None else clients:
            model = copy.deepcopy(self.model)
            opt = torch.optim.SGD(model.parameters(), lr=self.lr)
            order = torch.randperm(len(data), generator=self.gen).to(data.y.device)
            for i in range(0, len(data), self.batch):
                idx = order[i : i + self.batch]
                loss = F.cross_entropy(model(data.x[idx]), data.y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                seen += len(idx)
            states.append(model.state_dict())
            weights.append(float(len(data)))
        total = sum(weights)
        averaged = {k: sum(w * s[k] for s, w in zip(states, weights)) / total for k in states[0]}
        self.model.load_state_dict(averaged)
        return seen

    def warm_up(self) -> float:
        """One untimed round of the first ``WARMUP_CLIENTS`` devices, its model discarded; seconds taken."""
        snapshot = copy.deepcopy(self.model.state_dict())
        started = time.perf_counter()
        self.round(self.devices[:WARMUP_CLIENTS])
        self.model.load_state_dict(snapshot)
        return time.perf_counter() - started

    def accuracy(self) -> float:
        """Test accuracy of the global model."""
        from edgelearn.engine import evaluate_state

        ctx = self.ctx
        acc, _loss = evaluate_state(self.model, None, ctx.test_x, ctx.test_y, ctx.cfg.eval.batch_size)
        return float(acc)


def measure_naive(workload: str, config: Mapping[str, Any], threads: int) -> Iterator[dict[str, Any]]:
    """Time :class:`NaiveLoop` over the workload's rounds."""
    started = time.perf_counter()
    ctx, _x, _y = _train_data(config, threads)
    naive = NaiveLoop(ctx)
    rounds, devices = naive.rounds, naive.devices
    warmup_s = naive.warm_up()
    round_s, seen = [], 0
    for _ in range(rounds):
        t = time.perf_counter()
        seen += naive.round()
        round_s.append(time.perf_counter() - t)
    acc = naive.accuracy()
    yield record(
        workload,
        "naive-loop",
        wall_s=time.perf_counter() - started,
        loop_s=sum(round_s),
        samples=seen,
        updates=rounds * len(devices),
        peak_rss_mb=peak_rss_mb(),
        final_accuracy=acc,
        rounds=rounds,
        devices=len(devices),
        warmup_s=warmup_s,
        first_round_s=round_s[0],
        round_s_median=statistics.median(round_s),
        threads=threads,
        note="plain sequential PyTorch loop: copy.deepcopy of the global model per device, then average",
    )


def measure_paired(
    workload: str, config: Mapping[str, Any], labels: Sequence[str], threads: int
) -> Iterator[dict[str, Any]]:
    """Time the naive loop and each executor round by round in this one process, alternating who goes first.

    Every round of every executor runs right next to a naive round, so both see the same load from other
    processes on a shared machine; ``speedup_vs_naive`` is the naive loop's time over the executor's, summed
    over the rounds, and ``speedup_vs_naive_median_round`` the median of the per-round ratios. Peak RSS is
    the whole process's (the naive loop and every paired executor).
    """
    started = time.perf_counter()
    naive = NaiveLoop(_train_data(config, threads)[0])
    runs: dict[str, tuple[Any, Any, _CountingExecutor]] = {}
    for label in labels:
        ctx, algo, counter = _build(config, label, threads)
        _warm_up(ctx, algo, counter.inner)
        runs[label] = (ctx, algo, counter)
    naive.warm_up()
    naive_s: list[float] = []
    exec_s: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(1, naive.rounds + 1):
        slots: list[str | None] = [None, *labels]  # None: the naive loop's round
        for slot in slots if r % 2 else slots[::-1]:
            t = time.perf_counter()
            if slot is None:
                naive.round()
                naive_s.append(time.perf_counter() - t)
                continue
            runs[slot][1].run_round(r)
            exec_s[slot].append(time.perf_counter() - t)
    for label, (ctx, algo, counter) in runs.items():
        times = exec_s[label]
        yield record(
            f"{PAIRED_PREFIX}{workload}",
            label,
            wall_s=time.perf_counter() - started,
            loop_s=sum(times),
            samples=counter.samples,
            updates=counter.updates,
            peak_rss_mb=peak_rss_mb(),
            final_accuracy=float(algo.evaluate()["accuracy"]),
            rounds=naive.rounds,
            devices=int(ctx.topology.num_devices),
            naive_loop_s=sum(naive_s),
            naive_round_s_median=statistics.median(naive_s),
            naive_final_accuracy=naive.accuracy(),
            round_s_median=statistics.median(times),
            speedup_vs_naive=sum(naive_s) / max(sum(times), MIN_DURATION_S),
            speedup_vs_naive_median_round=statistics.median(
                n / max(e, MIN_DURATION_S) for n, e in zip(naive_s, times)
            ),
            threads=threads,
            peak_rss_scope="the naive loop and every paired executor in one process",
            note="timed round by round against the naive loop in the same process (same machine load)",
        )


def scaling_config(base: Mapping[str, Any], devices: int, samples_per_device: int) -> dict[str, Any]:
    """The scaling workload at ``devices`` devices (synthetic data grows with them)."""
    return _merge(
        base,
        {
            "topology": {"devices": int(devices)},
            "data": {"num_train": int(samples_per_device * devices)},
            "algorithm": {"rounds": SCALING_TIMED_ROUNDS},
        },
    )


def _too_slow(last: tuple[int, float] | None, devices: int, max_round_s: float) -> str | None:
    """Why a scaling size is skipped: its round, projected linearly from the last size's, exceeds the cap."""
    if last is None:
        return None
    projected = last[1] * devices / last[0]
    if projected <= max_round_s:
        return None
    return f"projected round {projected:.0f} s exceeds the {max_round_s:.0f} s cap"


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
        note = _too_slow(last, n, max_round_s)
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
    ctx, algo, counter = _build(scaling_config(base, n, samples_per_device), label, threads)
    pids = counter.inner.worker_pids() if label in RAY_LABELS else []
    warmup_s = _warm_up(ctx, algo, counter.inner)
    setup_s = time.perf_counter() - started
    setup_peak = peak_rss_mb()
    reset_ok = reset_peak_rss()
    rss_before = current_rss_mb()
    workers_reset = all(reset_peak_rss(pid) for pid in pids)
    round_s = []
    for r in range(1, algo.rounds + 1):
        t = time.perf_counter()
        algo.run_round(r)
        round_s.append(time.perf_counter() - t)
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


def busy_neighbour(max_s: float) -> subprocess.Popen[bytes]:
    """Start a second process that spins one core for at most ``max_s`` seconds (stop it with ``.kill()``)."""
    proc = subprocess.Popen([sys.executable, "-c", NEIGHBOUR_CODE, str(float(max_s))])
    time.sleep(NEIGHBOUR_SETTLE_S)
    return proc


def thread_label(executor: str, setting: int | str) -> str:
    """The ``executor`` field of a thread-study record: executor and engine.torch_threads setting."""
    return f"{executor} threads={setting}"


def thread_workload(study: str, busy: bool) -> str:
    """The ``workload`` field of a thread-study record: the study and the machine condition."""
    return f"{study}-{'busy' if busy else 'idle'}"


def measure_threads(
    workload: str,
    config: Mapping[str, Any],
    executor: str,
    settings: Sequence[int | str],
    busy: bool,
    max_s: float,
) -> Iterator[dict[str, Any]]:
    """W's rounds at each engine.torch_threads setting, idle or beside :func:`busy_neighbour` (bounded by
    this job's time limit); the steady round is the median from round :data:`THREAD_STEADY_FROM`.

    The settings are paired like :func:`measure_paired`: one run per setting, built once, then round ``r`` of
    every run in turn, each under its own thread count, so load from other programs on a shared machine hits
    all settings alike. Round ``r`` takes the ``r``-th of all orders of the settings in turn, so every
    setting follows every other equally often (a run right after a two-thread one would otherwise inherit
    that one's spinning OpenMP workers more often than the others).
    """
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    neighbour = busy_neighbour(max_s) if busy else None
    try:
        runs = []
        for setting in settings:
            started = time.perf_counter()
            ctx, algo, counter = _build(config, executor, setting)
            runs.append((setting, ctx, algo, counter, time.perf_counter() - started))
        round_s: list[list[float]] = [[] for _ in runs]
        orders = list(itertools.permutations(range(len(runs))))
        for r in range(1, runs[0][2].rounds + 1):
            for k in orders[r % len(orders)]:
                _setting, ctx, algo, _counter, _setup = runs[k]
                torch.set_num_threads(int(ctx.torch_threads["chosen"]))
                t = time.perf_counter()
                algo.run_round(r)
                round_s[k].append(time.perf_counter() - t)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    for (setting, ctx, algo, counter, setup_s), times in zip(runs, round_s):
        steady = times[THREAD_STEADY_FROM - 1 :] or times
        yield record(
            thread_workload(workload, busy),
            thread_label(executor, setting),
            wall_s=setup_s + sum(times),
            loop_s=sum(times),
            samples=counter.samples,
            updates=counter.updates,
            peak_rss_mb=peak_rss_mb(),
            final_accuracy=None,
            rounds=algo.rounds,
            devices=int(ctx.topology.num_devices),
            executor_name=executor,
            torch_threads=str(setting),
            threads_chosen=int(ctx.torch_threads["chosen"]),
            threads_reason=ctx.torch_threads.get("reason"),
            busy=busy,
            round_s_median=statistics.median(steady),
            steady_rounds=f"{len(times) - len(steady) + 1}..{len(times)}",
            cpu_capability=torch.backends.cpu.get_cpu_capability(),
            load_average=load,
            paired="settings alternated round by round in one process",
        )


def add_thread_ratios(records: list[dict[str, Any]]) -> None:
    """Add ``x_one_thread`` to each thread-study record: its steady round over the one-thread run's under the
    same condition (idle or busy); above 1 means slower than one thread."""
    ok = [r for r in _ok(records) if r["workload"].startswith(THREADS_PREFIX)]
    one = {r["workload"]: r["round_s_median"] for r in ok if r["torch_threads"] == "1"}
    for r in ok:
        if r["workload"] in one:
            r["x_one_thread"] = r["round_s_median"] / max(one[r["workload"]], MIN_DURATION_S)


# ----------------------------------------------------------------------------------------------------------
# Jobs: one measurement process each (its own peak RSS)


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


def _package_root() -> Path:
    """The folder holding the ``edgelearn`` package (``src`` in a checkout), for Ray workers' PYTHONPATH."""
    return Path(__file__).resolve().parent.parent


PRELOAD = ("torch", "torch._dynamo", "edgelearn.runner", "edgelearn.engine.vmap", "edgelearn.bench")
"""Modules the fork server imports once, so each measurement process starts in milliseconds, not seconds
(``torch._dynamo``, with sympy, is imported lazily by the first model build: ~2.5 s here)."""


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
                note = _too_slow(last, n, study.max_round_s)
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


# ----------------------------------------------------------------------------------------------------------
# Ratios and the Done-when summary


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


# ----------------------------------------------------------------------------------------------------------
# Output


def environment(plan: BenchPlan) -> dict[str, Any]:
    """Machine, library versions and settings the numbers were measured under."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": plan.threads,
        "load_average": list(load) if load else None,
        "isolated_processes": plan.isolate,
        "seed": SEED,
    }


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
            "Paired with the naive loop: rounds alternated in one process (same machine load)",
            ("workload", "executor", "rounds", "naive loop s", "loop s", "x naive", "x naive median round"),
            left=2,
        )
        for r in paired:
            pt.add_row(
                r["workload"].removeprefix(sections[2]),
                r["executor"],
                str(r["rounds"]),
                *(_fmt(r[k]) for k in ("naive_loop_s", "loop_s")),
                *(_fmt(r[k]) for k in ("speedup_vs_naive", "speedup_vs_naive_median_round")),
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
) -> list[dict[str, Any]]:
    """Run the benchmark (``quick``: the CI-sized subset), print tables, write JSON; return the records.

    ``plan`` replaces the default workloads (tests run a miniature one); ``threads`` is ignored then.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"--threads is {threads!r}; it must be a positive integer", hint="e.g. --threads 1")
    if json_path is not None:
        check_json_path(Path(json_path))
    from edgelearn.report.progress import get_console

    progress = get_console()
    plan = plan or default_plan(quick, threads)
    records = run_plan(plan, log=lambda msg: progress.print(msg, highlight=False))
    summary = summarize(records)
    print_tables(records, summary)
    if json_path is not None:
        write_results(Path(json_path), plan, records, summary)
    return records
