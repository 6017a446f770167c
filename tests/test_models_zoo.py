"""Tests for edgelearn.models.zoo: every architecture builds, runs, counts parameters as hand-computed and
is torch.func (functional_call + vmap) compatible."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap
from torch.nn import functional as F

from edgelearn.errors import ConfigError
from edgelearn.models import MODEL_NAMES, build_model, num_params

IMAGE_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
CONV_NAMES = [n for n in MODEL_NAMES if n != "mlp"]
NUM_CLASSES = 10


def _run_forward_backward(model: nn.Module, shape: tuple[int, ...], batch: int = 2) -> torch.Tensor:
    x = torch.randn(batch, *shape)
    y = torch.arange(batch) % NUM_CLASSES
    logits = model(x)
    F.cross_entropy(logits, y).backward()
    return logits


BUILD_CASES = [(name, shape) for name in MODEL_NAMES for shape in IMAGE_SHAPES] + [("mlp", (20,))]


@pytest.mark.parametrize(("name", "shape"), BUILD_CASES, ids=str)
def test_every_model_builds_runs_and_backpropagates(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_model(name, shape, NUM_CLASSES)
    logits = _run_forward_backward(model, shape)
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
@pytest.mark.parametrize("name", ["cnn_medium", "cnn_large", "resnet8"])
def test_every_norm_kind_runs(name: str, norm: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, (1, 8, 8), NUM_CLASSES, norm=norm)
    kinds = {type(m) for m in model.modules()}
    assert (nn.BatchNorm2d in kinds) == (norm == "batch")
    assert (nn.GroupNorm in kinds) == (norm == "group")
    assert _run_forward_backward(model, (1, 8, 8)).shape == (2, NUM_CLASSES)


def test_mlp_parameter_count_hand_computed() -> None:
    # 64*128 + 128 (hidden layer) + 128*10 + 10 (output layer)
    assert num_params(build_model("mlp", (64,), 10)) == 9_610
    # (1, 8, 8) is flattened to 64 features: same network
    assert num_params(build_model("mlp", (1, 8, 8), 10)) == 9_610
    # two hidden layers 64-32-16-3: 64*32+32 + 32*16+16 + 16*3+3
    assert num_params(build_model("mlp", (64,), 3, hidden=[32, 16])) == 2_080 + 528 + 51
    # logistic regression: 64*10 + 10
    assert num_params(build_model("mlp", (64,), 10, hidden=())) == 650


def test_cnn_small_parameter_count_hand_computed() -> None:
    # conv1 1->10 5x5: 250+10; conv2 10->20 5x5: 5000+20; fc1 20*4*4=320 -> 50: 16000+50; fc2 50->10: 500+10
    expected = 260 + 5_020 + 16_050 + 510
    assert expected == 21_840  # the paper's "about 21.8k parameters"
    for shape in [(1, 8, 8), (1, 28, 28), (1, 32, 32)]:
        assert num_params(build_model("cnn_small", shape, 10)) == expected
    # 3 input channels only change conv1: 3*25*10 + 10 = 760
    assert num_params(build_model("cnn_small", (3, 32, 32), 10)) == expected - 260 + 760


def test_resnet8_parameter_count_hand_computed() -> None:
    gn = 2  # GroupNorm weight + bias per channel
    stem = 1 * 16 * 9 + gn * 16
    stage1 = 2 * (16 * 16 * 9 + gn * 16)
    stage2 = 16 * 32 * 9 + 32 * 32 * 9 + 2 * gn * 32 + (16 * 32 + gn * 32)  # 1x1 projection shortcut
    stage3 = 32 * 64 * 9 + 64 * 64 * 9 + 2 * gn * 64 + (32 * 64 + gn * 64)
    head = 64 * 10 + 10
    expected = stem + stage1 + stage2 + stage3 + head
    assert expected == 77_754
    assert num_params(build_model("resnet8", (1, 32, 32), 10)) == expected
    # norm="none": no norm parameters, every conv gets a bias instead (16 + 2*16 + 2*32 + 32 + 2*64 + 64)
    norm_params = gn * (16 + 2 * 16 + 3 * 32 + 3 * 64)
    biases = 16 + 2 * 16 + 3 * 32 + 3 * 64
    assert num_params(build_model("resnet8", (1, 32, 32), 10, norm="none")) == expected - norm_params + biases


@pytest.mark.parametrize("shape", IMAGE_SHAPES, ids=str)
def test_model_sizes_are_ordered(shape: tuple[int, int, int]) -> None:
    size = {name: num_params(build_model(name, shape, 10)) for name in MODEL_NAMES}
    assert size["cnn_small"] < size["cnn_medium"] < size["cnn_large"]
    assert 100_000 <= size["cnn_medium"] <= 300_000
    assert 500_000 <= size["cnn_large"] <= 1_500_000
    assert size["resnet8"] < size["resnet14"] < size["resnet20"]


def test_resnet_width_multiplier_scales_parameters() -> None:
    narrow = num_params(build_model("resnet20", (3, 32, 32), 10, width=1))
    wide = num_params(build_model("resnet20", (3, 32, 32), 10, width=2))
    # conv weights (the bulk) grow 4x, norm/head parameters 2x: the ratio is just under 4
    assert wide > narrow
    assert 3.8 < wide / narrow < 4.0
    assert num_params(build_model("resnet20", (3, 32, 32), 10, width=0.5)) < narrow


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(CONV_NAMES),
    channels=st.integers(1, 3),
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    classes=st.integers(2, 12),
)
def test_conv_models_never_collapse_spatially(
    name: str, channels: int, height: int, width: int, classes: int
) -> None:
    model = build_model(name, (channels, height, width), classes).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, channels, height, width))
    assert out.shape == (1, classes)


def test_large_inputs_get_a_stem_pool_only_above_32_px() -> None:
    def has_stem_pool(shape: tuple[int, int, int]) -> bool:
        return any(isinstance(m, nn.MaxPool2d) for m in build_model("resnet8", shape, 10).modules())

    assert not has_stem_pool((3, 32, 32))
    assert has_stem_pool((3, 64, 64))


def test_no_inplace_activations() -> None:
    for name in MODEL_NAMES:
        for module in build_model(name, (1, 8, 8), 10).modules():
            assert not getattr(module, "inplace", False), f"{name}: {module}"


def _vmap_cases() -> list[tuple[str, dict[str, str]]]:
    cases: list[tuple[str, dict[str, str]]] = [("mlp", {}), ("cnn_small", {})]
    for name in ["cnn_medium", "cnn_large", "resnet8", "resnet14", "resnet20"]:
        cases += [(name, {"norm": "group"}), (name, {"norm": "none"})]
    return cases


@pytest.mark.parametrize(("name", "kwargs"), _vmap_cases(), ids=lambda v: str(v))
def test_vmap_functional_call_matches_each_copy(name: str, kwargs: dict[str, str]) -> None:
    shape = (3, 10, 10)  # exercises unpadded/padded convs, skipped pools and adaptive pooling
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(build_model(name, shape, 5, **kwargs))
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    torch.manual_seed(100)
    x = torch.randn(3, 2, *shape)  # a different batch per copy
    y = torch.tensor([[0, 1], [2, 3], [4, 0]])

    def logits(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (xb,))

    def loss(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor):
        return F.cross_entropy(logits(p, b, xb), yb)

    batched_out = vmap(logits)(params, buffers, x)
    batched_grads = vmap(grad(loss))(params, buffers, x, y)
    for i, model in enumerate(models):
        out = model(x[i])
        torch.testing.assert_close(batched_out[i], out, rtol=1e-4, atol=1e-5)
        F.cross_entropy(out, y[i]).backward()
        for pname, p in model.named_parameters():
            torch.testing.assert_close(batched_grads[pname][i], p.grad, rtol=1e-4, atol=1e-5)
    # the copies really differ, so the comparison above is not vacuous
    assert not torch.allclose(batched_out[0], batched_out[1])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_initialization_is_deterministic_under_seed(name: str) -> None:
    def make(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return build_model(name, (1, 8, 8), 10)

    a, b, c = make(7), make(7), make(8)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert any(
        not torch.equal(value, c.state_dict()[key])
        for key, value in a.state_dict().items()
        if value.is_floating_point()
    )
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(a(x), b(x))


def test_conv_model_on_flat_input_is_a_config_error_with_hint() -> None:
    for name in CONV_NAMES:
        with pytest.raises(ConfigError, match=r"\(C, H, W\)") as info:
            build_model(name, (64,), 10)
        assert info.value.hint is not None and "mlp" in info.value.hint


@pytest.mark.parametrize(
    ("name", "shape", "classes", "kwargs", "pattern"),
    [
        ("resnet8", (1, 8, 8), 10, {"norm": "layer"}, "norm must be one of"),
        ("cnn_medium", (1, 8, 8), 10, {"norm": "batchnorm"}, "norm must be one of"),
        ("resnet8", (1, 8, 8), 10, {"width": 0}, "width must be a positive number"),
        ("resnet8", (1, 8, 8), 10, {"width": "2"}, "width must be a positive number"),
        ("mlp", (64,), 10, {"hidden": [128, 0]}, "hidden must be a sequence of positive integers"),
        ("mlp", (64,), 10, {"hidden": 128}, "hidden must be a sequence of positive integers"),
        ("mlp", (64,), 1, {}, "num_classes must be an integer >= 2"),
        ("cnn_small", (1, 8, 8), 2.5, {}, "num_classes must be an integer >= 2"),
        ("mlp", (), 10, {}, "input_shape must be a non-empty tuple"),
        ("cnn_small", (1, 0, 8), 10, {}, "input_shape must be a non-empty tuple"),
        ("cnn_small", (1, 8), 10, {}, r"needs an image input_shape"),
    ],
)
def test_bad_model_arguments_raise_config_error(
    name: str, shape: tuple[int, ...], classes: int, kwargs: dict[str, object], pattern: str
) -> None:
    with pytest.raises(ConfigError, match=pattern) as info:
        build_model(name, shape, classes, **kwargs)
    assert info.value.hint
