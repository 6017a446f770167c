"""Tests for edgelearn.models.flops: FlopCounterMode counts match hand-computed matmul/conv FLOPs."""

from __future__ import annotations

import pytest
import torch

from edgelearn.errors import ConfigError
from edgelearn.models import FlopCount, build_model, measure_flops


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
