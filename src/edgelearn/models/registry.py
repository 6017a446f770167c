"""Build models by name and describe their cost: parameter count, upload bytes and per-sample FLOPs."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgelearn.errors import ConfigError
from edgelearn.extensions import registered
from edgelearn.models import zoo
from edgelearn.models.flops import MEASURE_DEVICE, count_flops


@dataclass(frozen=True)
class _Spec:
    """How to build one named model: its factory and the keyword arguments it accepts (with defaults)."""

    builder: Callable[..., nn.Module]
    defaults: Mapping[str, Any]


_RESNET_DEFAULTS: Mapping[str, Any] = {"width": 1, "norm": "group"}
_SPECS: dict[str, _Spec] = {
    "mlp": _Spec(zoo.MLP, {"hidden": zoo.MLP_DEFAULT_HIDDEN}),
    "cnn_small": _Spec(zoo.cnn_small, {}),
    "cnn_medium": _Spec(zoo.cnn_medium, {"norm": "none"}),
    "cnn_large": _Spec(zoo.cnn_large, {"norm": "none"}),
    "resnet8": _Spec(zoo.resnet8, _RESNET_DEFAULTS),
    "resnet14": _Spec(zoo.resnet14, _RESNET_DEFAULTS),
    "resnet20": _Spec(zoo.resnet20, _RESNET_DEFAULTS),
}

MODEL_NAMES: tuple[str, ...] = tuple(_SPECS)
"""The built-in model names (:func:`model_names` adds the plugins')."""


def model_names() -> list[str]:
    """Every name :func:`build_model` accepts: the built-ins, then registered plugins."""
    return list(_SPECS)


def register_model(name: str, builder: Callable[..., nn.Module], defaults: Mapping[str, Any]) -> None:
    """Add (or replace) model ``name``: ``builder(input_shape, num_classes, **options)`` with the keyword
    options ``defaults`` lists (what :func:`edgelearn.plugins.register_model` calls after its checks)."""
    _SPECS[name] = _Spec(builder, dict(defaults))


def model_summary(name: str) -> str:
    """One line on model ``name``: its builder's first docstring line and its options."""
    spec = _spec(name)
    doc = (spec.builder.__doc__ or "").strip().splitlines()
    options = ", ".join(f"{k}={v!r}" for k, v in spec.defaults.items()) or "no options"
    return f"{doc[0].strip() if doc else name} ({options})"


def _spec(name: str) -> _Spec:
    if not registered(name, _SPECS):
        raise ConfigError(
            f"model.name {name!r} is not a known model",
            hint=f"use one of: {', '.join(_SPECS)} (plugins register more: edgelearn list models)",
        )
    return _SPECS[name]


def model_defaults(name: str) -> dict[str, Any]:
    """The keyword arguments model ``name`` accepts, with their default values."""
    return dict(_spec(name).defaults)


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> nn.Module:
    """Build model ``name`` for per-sample ``input_shape`` ((C, H, W) or (D,)) and ``num_classes`` outputs.

    Initialization draws from torch's global RNG, so the caller seeds it (``torch.manual_seed``) for
    reproducible weights. Unknown names or keyword arguments and unsupported shapes raise ConfigError.
    """
    spec = _spec(name)
    unknown = sorted(set(kwargs) - set(spec.defaults))
    if unknown:
        allowed = ", ".join(sorted(spec.defaults)) or "(none)"
        raise ConfigError(
            f"model {name!r} got unknown option(s) {unknown}",
            hint=f"options accepted by {name!r}: {allowed}",
        )
    return spec.builder(input_shape, num_classes, **kwargs)


def num_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (by default only trainable) parameter elements in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def state_bytes(state_dict: Mapping[str, Any]) -> int:
    """Bytes of the floating-point tensors in ``state_dict`` at their own dtype: what uploading a model costs.

    Integer bookkeeping buffers (BatchNorm's ``num_batches_tracked``) are not averaged or sent in federated
    learning and are not counted; non-tensor entries are ignored.
    """
    return sum(
        t.numel() * t.element_size()
        for t in state_dict.values()
        if isinstance(t, torch.Tensor) and t.is_floating_point()
    )


@dataclass(frozen=True)
class ModelInfo:
    """Cost summary of a model: trainable parameter count, upload bytes and per-sample FLOPs.

    FLOPs are FlopCounterMode's count (matmuls and convolutions only, 2 FLOPs per multiply-accumulate),
    computed analytically for known layers (:func:`edgelearn.models.flops.count_flops`); ``flops_train`` is
    forward + backward of a cross-entropy loss, without the optimizer step.
    """

    name: str
    params: int
    param_bytes: int
    flops_forward: int
    flops_train: int


def model_info(model: nn.Module, input_shape: Sequence[int], name: str = "") -> ModelInfo:
    """Cost of ``model`` on per-sample ``input_shape``; FLOPs use a deep CPU copy, the model is untouched."""
    flops = count_flops(model, input_shape)
    return ModelInfo(
        name=name,
        params=num_params(model),
        param_bytes=state_bytes(model.state_dict()),
        flops_forward=flops.forward,
        flops_train=flops.train,
    )


def _freeze(value: Any) -> Any:
    """Lists/tuples to (nested) tuples so keyword values can key the cache."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@functools.cache
def _describe_cached(
    name: str, input_shape: tuple[Any, ...], num_classes: int, frozen: tuple[tuple[str, Any], ...]
) -> ModelInfo:
    return _describe(name, input_shape, num_classes, dict(frozen))


def _describe(name: str, input_shape: Sequence[int], num_classes: int, kwargs: dict[str, Any]) -> ModelInfo:
    # Build on CPU under a forked RNG: describing a model must not shift the caller's random stream.
    with torch.random.fork_rng(devices=[]), MEASURE_DEVICE:
        model = build_model(name, input_shape, num_classes, **kwargs)
    return model_info(model, input_shape, name)


def describe(name: str, input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> ModelInfo:
    """:class:`ModelInfo` of model ``name`` built with ``kwargs``; cached by (name, shape, classes, options).

    Does not consume the caller's torch RNG. Defaults are filled in before caching, so an explicit default
    and an omitted one share a cache entry.
    """
    spec = _spec(name)
    merged = {**spec.defaults, **kwargs}
    shape = _freeze(input_shape) if isinstance(input_shape, (list, tuple)) else input_shape
    key = (name, shape, num_classes, tuple(sorted((k, _freeze(v)) for k, v in merged.items())))
    try:
        hash(key)
    except TypeError:  # an unhashable option value: measure without caching (build_model validates it)
        return _describe(name, input_shape, num_classes, merged)
    return _describe_cached(*key)
