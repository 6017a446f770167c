"""The thread study: W's steady round at each ``engine.torch_threads`` setting, idle and beside a busy
neighbour process, the settings alternated round by round in one process."""

from __future__ import annotations

import itertools
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from edgelearn.commands.bench.machine import load_average
from edgelearn.commands.bench.measure import build_fedavg
from edgelearn.commands.bench.plan import THREAD_STEADY_FROM
from edgelearn.commands.bench.records import record
from edgelearn.commands.bench.rss import peak_rss_mb

NEIGHBOUR_CODE = (
    "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"
)
"""The busy neighbour: a separate interpreter spinning one core until its deadline (or until it is killed)."""
NEIGHBOUR_SETTLE_S = 0.2
"""Seconds the neighbour runs before timing starts, so it is spinning (interpreter started) when it counts."""


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

    The settings are paired like :func:`~edgelearn.commands.bench.references.measure_paired`: one run per
    setting, built once, then round ``r`` of every run in turn, each under its own thread count, so load from
    other programs on a shared machine hits all settings alike. Round ``r`` takes the ``r``-th of all orders
    of the settings in turn, so every setting follows every other equally often (a run right after a
    two-thread one would otherwise inherit that one's spinning OpenMP workers more often than the others).
    """
    load = load_average()
    neighbour = busy_neighbour(max_s) if busy else None
    try:
        runs = []
        for setting in settings:
            started = time.perf_counter()
            ctx, algo, counter = build_fedavg(config, executor, setting)
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
