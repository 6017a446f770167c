"""Per-tier model architectures shared by FedAgg and the baselines that borrow its layout (FedGKT, DemLearn),
and by :meth:`Algorithm.thread_workloads`, which sizes their training steps before a run starts.

Kept apart from ``fedagg.py`` so the algorithm base class can size tiered runs without importing FedAgg
(which imports the base class).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from edgelearn.config import ModelConfig, TierModelsConfig
from edgelearn.models import ModelInfo, build_model, describe

TIERS: tuple[str, ...] = ("device", "edge", "cloud")

LARGE_IMAGE_MIN_SIDE = 32
"""Images from this side on (CIFAR) get the larger defaults."""

# Default models per tier: a small CNN / a small ResNet / a wider ResNet (the sizing; FedAgg uses a
# 3-layer CNN / ResNet-10 / ResNet-18 on CIFAR, Wu et al., INFOCOM 2024, Table I). Parameters on 1x28x28:
# cnn_small ~22k, resnet8 ~78k, resnet14 width 2 ~0.70M; on 3x32x32 resnet14 ~0.18M and resnet20 width 2
# ~1.1M.
DEFAULT_MODELS: Mapping[str, tuple[str, Mapping[str, Any]]] = {
    "device": ("cnn_small", {}),
    "edge": ("resnet8", {}),
    "cloud": ("resnet14", {"width": 2}),
}
DEFAULT_MODELS_LARGE: Mapping[str, tuple[str, Mapping[str, Any]]] = {
    "device": ("cnn_small", {}),
    "edge": ("resnet14", {}),
    "cloud": ("resnet20", {"width": 2}),
}


@dataclass(frozen=True)
class TierArch:
    """One architecture used in the tree: how to build it and what it costs."""

    key: str
    name: str
    options: Mapping[str, Any]
    model_fn: Callable[[], nn.Module]
    info: ModelInfo


def make_arch(model: ModelConfig, input_shape: Sequence[int], num_classes: int) -> TierArch:
    """A :class:`TierArch` for a ``ModelConfig`` (unknown names/options raise ConfigError)."""
    shape = tuple(int(s) for s in input_shape)
    options = dict(model.options)
    info = describe(model.name, shape, num_classes, **options)

    def model_fn() -> nn.Module:
        return build_model(model.name, shape, num_classes, **options)

    key = f"{model.name}:{shape}:{num_classes}:{sorted(options.items())}"
    return TierArch(key=key, name=model.name, options=options, model_fn=model_fn, info=info)


def default_tier_models(input_shape: Sequence[int]) -> dict[str, ModelConfig]:
    """Dataset-sized defaults: :data:`DEFAULT_MODELS` below 32 px (digits, MNIST), else the larger set."""
    side = min(int(s) for s in tuple(input_shape)[1:]) if len(input_shape) == 3 else 0
    table = DEFAULT_MODELS_LARGE if side >= LARGE_IMAGE_MIN_SIDE else DEFAULT_MODELS
    return {tier: ModelConfig(name=n, options=dict(o)) for tier, (n, o) in table.items()}


def resolve_tier_models(models: TierModelsConfig, input_shape: Sequence[int]) -> dict[str, ModelConfig]:
    """The configured model of each tier, falling back to :func:`default_tier_models`."""
    defaults = default_tier_models(input_shape)
    return {t: getattr(models, t) or defaults[t] for t in TIERS}
