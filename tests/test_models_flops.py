"""Tests for edgelearn.models.flops: FlopCounterMode counts match hand-computed matmul/conv FLOPs, and the
analytic count (what runs use) equals FlopCounterMode on every built-in model."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny import python_stdout
from torch import nn

from edgelearn.algorithms.registry import make_algorithm
from edgelearn.errors import ConfigError
from edgelearn.models import (
    MODEL_NAMES,
    FlopCount,
    analytic_flops,
    build_model,
    count_flops,
    measure_flops,
    zoo,
)
from edgelearn.models import flops as flops_module
from edgelearn.run_config import build_config
from edgelearn.runner import build_context


def test_mlp_flops_hand_computed() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", (64,), 10)  # 64 -> 128 -> 10
    forward = 2 * (64 * 128 + 128 * 10)  # 2 FLOPs per multiply-accumulate
    # backward: weight gradients of both layers (same cost as their forward) plus the input gradient of the
    # output layer; the first layer's input gradient is never computed because the data needs no gradient.
    backward = 2 * (64 * 128 + 128 * 10) + 2 * (128 * 10)
    assert forward == 18_944
    assert measure_flops(model, (64,)) == FlopCount(forward=forward, train=forward + backward)
    assert forward + backward == 40_448  # ~2.1x forward here: "3x forward" minus the skipped input gradient


def test_logistic_regression_flops_hand_computed() -> None:
    model = build_model("mlp", (1, 8, 8), 10, hidden=())
    # one 64 -> 10 layer: forward 2*640; backward only the weight gradient, 2*640 again
    assert measure_flops(model, (1, 8, 8)) == FlopCount(forward=1_280, train=2_560)


def test_cnn_small_flops_hand_computed() -> None:
    model = build_model("cnn_small", (1, 28, 28), 10)
    conv1 = 2 * (24 * 24 * 10) * (1 * 5 * 5)  # output pixels x MACs per output pixel
    conv2 = 2 * (8 * 8 * 20) * (10 * 5 * 5)
    fc1 = 2 * 320 * 50
    fc2 = 2 * 50 * 10
    forward = conv1 + conv2 + fc1 + fc2
    backward = conv1 + 2 * conv2 + 2 * fc1 + 2 * fc2  # conv1: weight gradient only
    assert measure_flops(model, (1, 28, 28)) == FlopCount(forward=forward, train=forward + backward)
    assert forward == 961_000


@pytest.mark.parametrize("batch_size", [1, 3])
def test_per_sample_flops_do_not_depend_on_batch_size(batch_size: int) -> None:
    model = build_model("resnet8", (3, 8, 8), 10)
    assert measure_flops(model, (3, 8, 8), batch_size=batch_size) == measure_flops(model, (3, 8, 8))


def test_measurement_leaves_the_model_untouched() -> None:
    torch.manual_seed(0)
    model = build_model("resnet8", (1, 8, 8), 10, norm="batch").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure_flops(model, (1, 8, 8))
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # BatchNorm running stats included


def test_bad_batch_size_and_wrong_input_shape_are_config_errors() -> None:
    model = build_model("mlp", (64,), 10)
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        measure_flops(model, (64,), batch_size=0)
    with pytest.raises(ConfigError, match=r"cannot run on input_shape \(32,\)"):
        measure_flops(model, (32,))


# --- analytic FLOPs (count_flops): equal to FlopCounterMode on every built-in model ---------------------

ANALYTIC_CASES = [
    *[
        (name, shape, {})
        for name in MODEL_NAMES
        if name != "mlp"
        for shape in ((1, 8, 8), (3, 32, 32), (1, 28, 28), (3, 5, 7))
    ],
    ("mlp", (64,), {}),
    ("mlp", (1, 8, 8), {}),
    ("mlp", (3, 4, 4), {"hidden": ()}),
    ("mlp", (64,), {"hidden": (32, 16)}),
    ("cnn_medium", (1, 8, 8), {"norm": "group"}),
    ("cnn_medium", (3, 12, 12), {"norm": "batch"}),
    ("cnn_large", (3, 16, 16), {"norm": "batch"}),
    ("resnet8", (3, 40, 40), {"norm": "batch", "width": 0.5}),  # > 32 px: the stem max-pool
    ("resnet14", (1, 8, 8), {"norm": "none", "width": 2}),
    ("resnet20", (3, 9, 9), {"norm": "group", "width": 1.5}),
]


@pytest.mark.parametrize(("name", "shape", "options"), ANALYTIC_CASES)
def test_analytic_flops_equal_flop_counter_mode(
    name: str, shape: tuple[int, ...], options: dict[str, Any]
) -> None:
    model = build_model(name, shape, 10, **options)
    analytic = analytic_flops(model, shape)
    assert analytic is not None, "every built-in model must be counted analytically"
    assert analytic == measure_flops(model, shape)
    assert count_flops(model, shape) == analytic


def test_every_built_in_model_is_covered() -> None:
    assert {name for name, _, _ in ANALYTIC_CASES} == set(MODEL_NAMES)


def test_frozen_layers_and_other_dtypes_match_the_measurement() -> None:
    model = build_model("cnn_small", (1, 12, 12), 10).double()
    model.features[0].weight.requires_grad_(False)  # no weight gradient for conv1 ...
    model.head[1].requires_grad_(False)  # ... nor for fc1 (its input still needs one for conv2)
    assert analytic_flops(model, (1, 12, 12)) == measure_flops(model, (1, 12, 12))


class _Bilinear(nn.Module):
    """A plugin layer with a matmul in its own forward: unknown to the analytic count."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight


class _SubclassedMLP(zoo.MLP):
    """A subclass may change forward's math, so only exact zoo types are trusted."""


@pytest.mark.parametrize(
    "model",
    [
        _Bilinear(),
        nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 10)),  # Tanh: not on the list
        nn.Sequential(nn.ConvTranspose2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 10 * 10, 10)),
        _SubclassedMLP((1, 8, 8), 10),
    ],
    ids=["plugin-matmul", "unknown-activation", "transposed-conv", "zoo-subclass"],
)
def test_unknown_models_fall_back_to_measuring(model: nn.Module) -> None:
    assert analytic_flops(model, (1, 8, 8)) is None
    assert count_flops(model, (1, 8, 8)) == measure_flops(model, (1, 8, 8))


def test_plain_sequential_of_known_layers_is_counted_analytically() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, stride=2, groups=3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 3 * 3, 4)
    )
    assert analytic_flops(model, (3, 7, 7)) == measure_flops(model, (3, 7, 7))


def test_wrong_input_shape_is_still_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"cannot run on input_shape \(32,\)"):
        count_flops(build_model("mlp", (64,), 10), (32,))


def test_counting_does_not_import_the_compile_stack() -> None:
    code = (
        "import sys\n"
        "from edgelearn.models import build_model, model_info\n"
        "info = model_info(build_model('resnet8', (3, 16, 16), 10), (3, 16, 16))\n"
        "print(info.flops_train, 'torch._dynamo' in sys.modules, 'torch.utils.flop_counter' in sys.modules)\n"
    )
    out = python_stdout(code).split()
    assert out[1:] == ["False", "False"]
    assert int(out[0]) == measure_flops(build_model("resnet8", (3, 16, 16), 10), (3, 16, 16)).train


def test_the_ledger_has_the_same_numbers_measured_or_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = [
        "data.dataset=synthetic",
        "data.num_train=40",
        "data.num_test=10",
        "partition.method=iid",
        "topology.devices=4",
        "model.name=cnn_small",
        "algorithm.rounds=1",
        "device=cpu",
    ]
    totals = []
    for force_measure in (False, True):
        if force_measure:
            monkeypatch.setattr(flops_module, "analytic_flops", lambda model, shape: None)
        ctx = build_context(build_config({}, [*overrides, "executor=serial"]))
        algo = make_algorithm(ctx)
        algo.init()
        algo.run_round(1)
        totals.append((ctx.info, ctx.system.ledger.totals()["flops"], ctx.system.ledger.totals()["energy_j"]))
    assert totals[0] == totals[1]
