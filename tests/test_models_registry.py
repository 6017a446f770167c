"""Tests for edgelearn.models.registry: names, option validation, ModelInfo, caching and byte counts."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from edgelearn.errors import ConfigError
from edgelearn.models import (
    MODEL_NAMES,
    ModelInfo,
    build_model,
    describe,
    model_defaults,
    model_info,
    num_params,
    state_bytes,
)


def test_model_names() -> None:
    assert MODEL_NAMES == ("mlp", "cnn_small", "cnn_medium", "cnn_large", "resnet8", "resnet14", "resnet20")


def test_unknown_name_lists_allowed_names() -> None:
    with pytest.raises(ConfigError, match="'resnet18' is not a known model") as info:
        build_model("resnet18", (3, 32, 32), 10)
    assert info.value.hint is not None
    for name in MODEL_NAMES:
        assert name in info.value.hint
    with pytest.raises(ConfigError):
        describe("vgg", (3, 32, 32), 10)


def test_unknown_option_lists_allowed_options() -> None:
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['depth'\]") as info:
        build_model("resnet8", (3, 32, 32), 10, depth=50, width=1)
    assert info.value.hint is not None and "norm" in info.value.hint and "width" in info.value.hint
    with pytest.raises(ConfigError, match=r"\(none\)"):
        build_model("cnn_small", (1, 28, 28), 10, norm="group")


def test_model_defaults() -> None:
    assert model_defaults("mlp") == {"hidden": (128,)}
    assert model_defaults("cnn_small") == {}
    assert model_defaults("resnet20") == {"width": 1, "norm": "group"}
    assert model_defaults("cnn_large") == {"norm": "none"}


def test_state_bytes_and_num_params_hand_computed() -> None:
    model = build_model("mlp", (64,), 10)
    assert state_bytes(model.state_dict()) == 9_610 * 4
    assert state_bytes(model.double().state_dict()) == 9_610 * 8
    assert state_bytes({"step": torch.tensor(3), "note": "x", "w": torch.zeros(5, dtype=torch.float16)}) == 10
    model.net[1].weight.requires_grad_(False)  # freeze the 64x128 hidden weights
    assert num_params(model) == 9_610 - 64 * 128
    assert num_params(model, trainable_only=False) == 9_610


def test_model_info_counts_float_buffers_but_not_integer_ones() -> None:
    model = build_model("resnet8", (1, 32, 32), 10, norm="batch")
    info = model_info(model, (1, 32, 32), name="resnet8")
    assert info.params == 77_754  # BatchNorm has as many affine parameters as GroupNorm
    # running_mean + running_var of every BatchNorm: channels 16 (stem) + 2*16 + 3*32 + 3*64 = 336
    assert info.param_bytes == 4 * (77_754 + 2 * 336)
    assert info.name == "resnet8"


def test_model_info_is_frozen_and_matches_describe() -> None:
    torch.manual_seed(0)
    built = model_info(build_model("cnn_small", (1, 28, 28), 10), (1, 28, 28), name="cnn_small")
    assert built == describe("cnn_small", (1, 28, 28), 10)
    assert built == ModelInfo("cnn_small", 21_840, 21_840 * 4, 961_000, 2_595_000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.params = 0  # type: ignore[misc]


def test_describe_is_cached_and_fills_defaults() -> None:
    first = describe("mlp", (64,), 10)
    assert describe("mlp", [64], 10, hidden=[128]) is first
    assert describe("mlp", (64,), 10, hidden=(128,)) is first
    other = describe("mlp", (64,), 10, hidden=(32,))
    assert other.params == 64 * 32 + 32 + 32 * 10 + 10
    assert describe("resnet8", (3, 8, 8), 10, width=2).params > describe("resnet8", (3, 8, 8), 10).params


def test_describe_does_not_consume_the_callers_rng() -> None:
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    describe("cnn_medium", (1, 12, 12), 7)
    assert torch.equal(torch.rand(4), expected)


def test_describe_validates_options_even_if_unhashable() -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        describe("mlp", (64,), 10, extra={"a": 1})
    with pytest.raises(ConfigError, match="hidden must be"):
        describe("mlp", (64,), 10, hidden={"a": 1})
