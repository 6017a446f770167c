"""Tiny setups shared by the test files (imported as ``tiny``: pytest puts this folder on sys.path)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from edgelearn.algorithms.base import RunContext
from edgelearn.config import RunConfig, build_config
from edgelearn.runner import build_context

SYNTHETIC = [
    "data.dataset=synthetic",
    "data.num_train=96",
    "data.num_test=40",
    "partition.method=iid",
    "device=cpu",
]
"""Tiny synthetic 8x8 images, 10 classes, 96 training samples split IID, on the CPU."""


def synthetic_config(overrides: Iterable[str] = (), executor: str = "serial") -> RunConfig:
    """A run config on :data:`SYNTHETIC` with the given executor, then ``overrides``."""
    return build_config({}, [*SYNTHETIC, f"executor={executor}", *overrides])


def synthetic_context(overrides: Iterable[str] = (), executor: str = "serial") -> RunContext:
    """The run context of :func:`synthetic_config`."""
    return build_context(synthetic_config(overrides, executor))


TWO_STAGE_CONFIG = Path(__file__).resolve().parents[1] / "configs/two_stage/digits.yaml"
"""The quick two-stage config the tests shrink with :data:`TWO_STAGE_TINY`."""

TWO_STAGE_TINY = [
    "topology.devices=4",
    "algorithm.budget.energy_j=2.0",
    "algorithm.budget.delay_s=6.0",
    "algorithm.max_ft_rounds=60",
    "algorithm.grad_norm_samples=64",
    "algorithm.pretrain_log_points=5",
    "output.plots=false",
    "engine.torch_threads=1",
]
"""Overrides making :data:`TWO_STAGE_CONFIG` a seconds-long run: 4 devices, 2 J / 6 s budgets."""
