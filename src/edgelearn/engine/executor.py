"""The executor seam: algorithms hand cohorts to ``Executor.train`` (and node models to ``Executor.infer``)
and never loop over devices."""

from __future__ import annotations

from typing import Any, Protocol

import torch

from edgelearn.engine.cohort import Cohort, CohortResult, LocalSpec
from edgelearn.engine.infer import InferCohort, InferResult, InferSpec
from edgelearn.errors import ConfigError


class Executor(Protocol):
    """Runs local SGD for every client of a cohort and aggregates per group (streaming); infers node models
    without gradients (:mod:`edgelearn.engine.infer`)."""

    name: str
    device: torch.device

    def train(self, cohort: Cohort, spec: LocalSpec) -> CohortResult:
        """Train each client from its start state on its data; return group means and per-client stats."""
        ...

    def infer(self, cohort: InferCohort, spec: InferSpec) -> InferResult:
        """Each node model's outputs on its inputs, eval mode, no gradients; equal on every executor up to
        float32 summation order."""
        ...


EXECUTORS = ("auto", "serial", "vmap", "ray")


EXECUTOR_SUMMARIES: dict[str, str] = {
    "serial": "one client after another, one torch model (reference semantics)",
    "vmap": "clients of one architecture trained in lockstep with torch.func.vmap (same batches as serial)",
    "ray": "cohorts split over Ray workers, local or multi-node (the extra: pip install edgelearn[ray])",
    "auto": "vmap where the cohort allows it, else serial (engine.auto: rule or probe)",
}
"""``executor:`` values with one line each (``edgelearn list executors``)."""


def make_executor(name: str, device: torch.device, engine: Any = None) -> Executor:
    """Build the executor named in the config; ``engine`` is the config's EngineConfig section (or None).

    ``auto`` is resolved per cohort by :class:`edgelearn.engine.auto.AutoExecutor` where available.
    """
    options = engine.model_dump() if engine is not None else {}
    if name == "serial":
        from edgelearn.engine.serial import SerialExecutor

        return SerialExecutor(device)
    if name == "vmap":
        from edgelearn.engine.vmap import VmapExecutor

        return VmapExecutor(device, chunk_size=options.get("vmap_chunk"))
    if name == "ray":
        from edgelearn.engine.ray_executor import RayExecutor

        return RayExecutor(
            device,
            address=options.get("ray_address"),
            num_workers=options.get("ray_workers"),
            chunk_size=options.get("ray_chunk"),
            inner=options.get("ray_inner", "serial"),
            resources=options.get("ray_resources") or None,
            # an integer is the run's resolved engine.torch_threads (runner.build_context); auto/None: no cap
            max_threads=threads if isinstance(threads := options.get("torch_threads"), int) else None,
        )
    if name == "auto":
        try:
            from edgelearn.engine.auto import AutoExecutor
        except ImportError:  # vectorized engine not available: serial is always correct
            from edgelearn.engine.serial import SerialExecutor

            return SerialExecutor(device)
        return AutoExecutor(device, chunk_size=options.get("vmap_chunk"), mode=options.get("auto", "rule"))
    raise ConfigError(f"executor {name!r} is not available", hint=f"use one of: {', '.join(EXECUTORS)}")
