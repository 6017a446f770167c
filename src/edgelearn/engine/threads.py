"""How many torch intra-op threads a run uses (``engine.torch_threads``): ``auto``, a number, or torch's own.

``auto`` (the default) sizes the thread count from the work of the run's largest lockstep training step: its
FLOPs (mini-batch x clients trained at once x training FLOPs per sample) divided by
``engine.auto_threads_step_flops`` (the FLOPs one more thread needs per step to pay for itself), at least one
and at most the cores this process may run on (``os.sched_getaffinity``, so a sweep worker pinned to a core
slot stays inside it). Small models therefore train on one thread: their ops are too short for intra-op
parallelism, whose OpenMP barriers cost more than they save and, when anything else runs on the machine,
wait for a descheduled thread (a FedAvg MLP round took 0.1-0.6 s at two threads instead of 0.01-0.03 s at
one). The rule reads only the config and the models' FLOP counts, never a timing, so the same config gives the
same choice and the same bits on the same machine. An explicit integer always wins; ``null`` keeps torch's
default (one thread per core), as before ``auto`` existed.

Threads are a process-wide setting: the choice is made once per run from its largest step, and the run's
summary records it (``torch_threads``: chosen, mode, reason). Ray workers run in their own processes with
CPUs / workers threads each, capped by the same choice (:mod:`edgelearn.engine.ray_executor`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

AUTO = "auto"


@dataclass(frozen=True)
class Workload:
    """One kind of training step a run makes: ``clients`` models of ``flops_per_sample`` on ``batch`` samples.

    ``clients`` is how many same-architecture clients one cohort holds (the vmap executor may train them in
    lockstep); ``params`` decides whether the executor would vectorize them at all.
    """

    label: str
    flops_per_sample: float
    batch: int
    clients: int = 1
    params: int = 0


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count a run uses and why (written to ``summary.json`` as ``torch_threads``)."""

    chosen: int
    mode: str  # "auto", "explicit" or "torch" (engine.torch_threads: null)
    reason: str
    step_flops: float | None = None
    cores: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def usable_core_ids() -> list[int]:
    """Ids of the cores this process may run on, ascending: its affinity mask where the OS has one, else
    every CPU."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return list(range(os.cpu_count() or 1))


def usable_cores() -> int:
    """How many cores this process may run on (:func:`usable_core_ids`), at least one."""
    return max(1, len(usable_core_ids()))


def lockstep_clients(
    executor: str,
    clients: int,
    params: int,
    device: torch.device,
    engine: Any,
    cores: int,
) -> int:
    """How many of a cohort's ``clients`` one training step computes at once under ``executor``.

    serial trains one client at a time; vmap a chunk (``engine.vmap_chunk``, else the whole cohort: an upper
    bound, since chunks sized from memory are never larger); auto follows its deterministic rule (vmap for
    cohorts of at least ``MIN_PROBED_CLIENTS`` small models on a CPU, always on CUDA); ray counts a worker's
    step (inner serial: one client; inner vmap: the clients spread over the workers).
    """
    from edgelearn.engine.auto import MIN_PROBED_CLIENTS, RULE_CPU_MAX_PARAMS

    chunk = min(clients, engine.vmap_chunk or clients)
    if executor == "vmap":
        return max(1, chunk)
    if executor == "auto":
        small = device.type == "cuda" or params <= RULE_CPU_MAX_PARAMS
        return max(1, chunk) if clients >= MIN_PROBED_CLIENTS and small else 1
    if executor == "ray" and engine.ray_inner == "vmap":
        workers = engine.ray_workers or cores
        spread = -(-clients // workers)  # ceil: clients per worker
        return max(1, min(spread, engine.ray_chunk or spread))
    return 1


def auto_thread_count(step_flops: float, flops_per_thread: float, cores: int) -> int:
    """``step_flops // flops_per_thread`` threads, at least one and at most ``cores``."""
    return int(min(cores, max(1, step_flops // flops_per_thread)))


def choose_threads(
    setting: int | str | None,
    workloads: Sequence[Workload],
    *,
    executor: str,
    device: torch.device,
    engine: Any,
    cores: int | None = None,
) -> ThreadChoice:
    """The run's thread count from ``engine.torch_threads`` (``setting``) and its training ``workloads``.

    Deterministic: a function of the config, the models' FLOP counts and the affinity mask only.
    """
    cores = usable_cores() if cores is None else cores
    if setting is None:
        return ThreadChoice(torch.get_num_threads(), "torch", "engine.torch_threads=null: torch's default")
    if setting != AUTO:
        return ThreadChoice(int(setting), "explicit", f"engine.torch_threads={setting}", cores=cores)
    per_thread = float(engine.auto_threads_step_flops)
    if not workloads:
        return ThreadChoice(1, AUTO, "no training workload known: one thread", 0.0, cores)

    def lockstep(w: Workload) -> int:
        return lockstep_clients(executor, w.clients, w.params, device, engine, cores)

    sized = [(w.flops_per_sample * w.batch * lockstep(w), w) for w in workloads]
    step_flops, biggest = max(sized, key=_first)
    chosen = auto_thread_count(step_flops, per_thread, cores)
    reason = (
        f"largest training step {step_flops:.3g} FLOPs ({biggest.label}: batch {biggest.batch} x "
        f"{lockstep(biggest)} client(s) in lockstep ({executor}) x "
        f"{biggest.flops_per_sample:.3g} FLOPs/sample); "
        f"one thread per {per_thread:.3g} FLOPs (engine.auto_threads_step_flops), {cores} usable core(s)"
    )
    return ThreadChoice(chosen, AUTO, reason, step_flops, cores)


def _first(pair: tuple[float, Workload]) -> float:
    return pair[0]


def apply_threads(choice: ThreadChoice) -> None:
    """Set torch's intra-op thread count to the choice (torch's default is left as it is) and log it."""
    if choice.mode != "torch":
        torch.set_num_threads(choice.chosen)
    log.info("torch threads: %d (%s: %s)", choice.chosen, choice.mode, choice.reason)


__all__ = [
    "AUTO",
    "ThreadChoice",
    "Workload",
    "apply_threads",
    "auto_thread_count",
    "choose_threads",
    "lockstep_clients",
    "usable_cores",
]
