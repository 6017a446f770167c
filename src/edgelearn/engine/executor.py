"""The executor seam: algorithms hand cohorts to ``Executor.train`` and never loop over devices."""

from __future__ import annotations

from typing import Protocol

import torch

from edgelearn.engine.cohort import Cohort, CohortResult, LocalSpec
from edgelearn.errors import ConfigError


class Executor(Protocol):
    """Runs local SGD for every client of a cohort and aggregates per group (streaming)."""

    name: str
    device: torch.device

    def train(self, cohort: Cohort, spec: LocalSpec) -> CohortResult:
        """Train each client from its start state on its data; return group means and per-client stats."""
        ...


EXECUTORS = ("auto", "serial")


def make_executor(name: str, device: torch.device) -> Executor:
    """Build the executor named in the config (``auto`` resolves to the best available one)."""
    from edgelearn.engine.serial import SerialExecutor

    if name in ("auto", "serial"):
        return SerialExecutor(device)
    raise ConfigError(f"executor {name!r} is not available", hint=f"use one of: {', '.join(EXECUTORS)}")
