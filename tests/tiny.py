"""Tiny setups shared by the test files (imported as ``tiny``: pytest puts this folder on sys.path)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgelearn.algorithms.base import RunContext
from edgelearn.config import RunConfig, build_config
from edgelearn.runner import build_context

if TYPE_CHECKING:
    from edgelearn.algorithms.fedagg import FedAgg

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


FEDAGG_MODELS: dict[str, Any] = {
    "device": {"name": "mlp", "options": {"hidden": [16]}},
    "edge": {"name": "cnn_small"},
    "cloud": {"name": "resnet8"},
}
"""Three distinct, cheap architectures so FedAgg's tiers are heterogeneous and tests stay fast."""


def tiny_fedagg(ctx: RunContext, **cfg: Any) -> FedAgg:
    """FedAgg on ``ctx`` with :data:`FEDAGG_MODELS`, 2 rounds, batch 16 and a fast autoencoder pre-training
    (each overridable through ``cfg``), initialised."""
    from edgelearn.algorithms.fedagg import FedAgg, FedAggConfig

    settings: dict[str, Any] = {
        "rounds": 2,
        "models": FEDAGG_MODELS,
        "batch_size": 16,
        "autoencoder": {"epochs": 2, "max_samples": 32, "batch_size": 16},
        **cfg,
    }
    algo = FedAgg(ctx, FedAggConfig.model_validate(settings))
    algo.init()
    return algo
