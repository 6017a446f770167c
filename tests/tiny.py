"""Tiny setups shared by the test files (imported as ``tiny``: pytest puts this folder on sys.path)."""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch
from hypothesis import strategies as st

from edgelearn.algorithms.base import RunContext
from edgelearn.planning import BoundConstants, TwoStageProblem, minimum_budgets
from edgelearn.run_config import RunConfig, build_config
from edgelearn.runner import build_context

if TYPE_CHECKING:
    from edgelearn.algorithms.fedagg.algorithm import FedAgg


def python_stdout(code: str, *args: str) -> str:
    """What ``python -c code args...`` prints, run in a fresh interpreter (what a module imports is only seen
    in a process that has imported nothing yet); a non-zero exit fails with its output."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


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


FEDAGG_HOLDOUT = "data.holdout=32"
"""Override holding out the 32 training images :func:`tiny_fedagg`'s autoencoder pre-trains on (its default
``autoencoder.source: holdout``): contexts built for FedAgg tests add it, as a FedAgg config's would."""


def tiny_fedagg(ctx: RunContext, **cfg: Any) -> FedAgg:
    """FedAgg on ``ctx`` with :data:`FEDAGG_MODELS`, 2 rounds, batch 16 and a fast autoencoder pre-training
    (each overridable through ``cfg``), initialised."""
    from edgelearn.algorithms.fedagg.algorithm import FedAgg
    from edgelearn.algorithms.fedagg.config import FedAggConfig

    settings: dict[str, Any] = {
        "rounds": 2,
        "models": FEDAGG_MODELS,
        "local": {"batch_size": 16},
        "autoencoder": {"epochs": 2, "max_samples": 32, "batch_size": 16},
        **cfg,
    }
    algo = FedAgg(ctx, FedAggConfig.model_validate(settings))
    algo.init()
    return algo


def constant_logits(state: Mapping[str, torch.Tensor], logits: Sequence[float]) -> dict[str, torch.Tensor]:
    """A copy of ``state`` whose classifier (its last 2-D weight with one row per class, and that layer's
    bias) outputs ``logits`` for every input: the weight zeroed, the bias set to ``logits``."""
    out = {k: v.clone() for k, v in state.items()}
    rows = len(logits)
    head = [k for k, v in out.items() if k.endswith("weight") and v.ndim == 2 and v.shape[0] == rows][-1]
    out[head].zero_()
    bias = out[head.removesuffix("weight") + "bias"]
    bias.copy_(torch.tensor(logits, dtype=bias.dtype))
    return out


def one_class_logits(cls: int, num_classes: int = 10) -> list[float]:
    """Logits log p of a model giving class ``cls`` probability 1/2 and every other class 1/(2 (C - 1)): on
    a sample of class ``cls`` its cross-entropy is log 2, on any other log 2 (C - 1) (log 18 for C = 10)."""
    return [math.log(0.5) if k == cls else math.log(0.5 / (num_classes - 1)) for k in range(num_classes)]


TEST_COUNTS = (16, 8, 6, 4, 2, 2, 1, 1, 0, 0)
"""Class counts of the constructed test labels replacing :data:`SYNTHETIC`'s 40 (balanced) test labels."""

TIER_COUNTS = (10, 5, 5, 2, 2, 1, 0, 0, 0, 0)
"""Class counts of a constructed 25-sample tier-evaluation subset."""


def labels_with_counts(counts: Sequence[int]) -> torch.Tensor:
    """Class labels with ``counts[k]`` samples of class k, in class order."""
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))


@st.composite
def random_systems(draw: st.DrawFn) -> TwoStageProblem:
    """K in 2..6 with random distances, clocks, powers, data sizes, constants, optional per-round fading,
    and budgets drawn above the minimum feasible ones."""
    k = draw(st.integers(2, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    distance_km = rng.uniform(0.05, 0.25, k)
    gain = 10 ** (-(128.1 + 37.6 * np.log10(distance_km)) / 10)
    rounds = draw(st.one_of(st.none(), st.integers(2, 6)))
    if rounds is not None:
        gain = gain[None, :] * rng.exponential(1.0, size=(rounds, k))
    smooth = draw(st.floats(0.5, 5.0))
    constants = BoundConstants(
        L=smooth,
        sigma2_task=draw(st.floats(1.0, 50.0)),
        sigma2_general=draw(st.floats(1.0, 50.0)),
        Delta=draw(st.floats(0.5, 3.0)),
        delta=draw(st.floats(0.0, 1.5)),
    )
    eta = min(0.05, 1.0 / smooth)
    base = TwoStageProblem.from_arrays(
        f_max_server=draw(st.floats(2e9, 6e9)),
        kappa_server=1e-28,
        cycles_per_sample_server=draw(st.floats(5e5, 2e6)),
        general_size=draw(st.integers(100, 20_000)),
        eta_pre=eta,
        f_max=rng.uniform(0.5e9, 2e9, k),
        kappa=1e-28 * rng.uniform(0.5, 2.0, k),
        cycles_per_sample=rng.uniform(5e5, 2e6, k),
        p_max=rng.uniform(0.05, 0.2, k),
        bandwidth=1e6 / k,
        gain=gain,
        data_sizes=rng.integers(20, 800, k),
        noise_psd=3.98e-21,
        payload_bits=draw(st.floats(1e5, 2e6)),
        eta_ft=eta,
        energy_j=1.0,
        delay_s=1.0,
        constants=constants,
        downlink_s=draw(st.sampled_from([0.0, 0.01])),
    )
    floor = minimum_budgets(base).delay_floor_s
    delay = floor * 10 ** draw(st.floats(0.1, 2.5))
    energy = minimum_budgets(base.with_budgets(delay_s=delay)).energy_j * 10 ** draw(st.floats(0.05, 4.0))
    return base.with_budgets(energy_j=energy, delay_s=delay)


RAY_TEST_CPUS = 2
"""CPUs of the local Ray cluster the Ray tests share (this machine's two cores)."""


@contextlib.contextmanager
def local_ray(num_cpus: int = RAY_TEST_CPUS) -> Iterator[Any]:
    """A local Ray cluster for a block, or the one already running (then left running); yields ``ray``.
    Executors created inside join it instead of starting their own."""
    import logging

    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
