"""Model zoo: MLP, small CNNs and CIFAR-style ResNets built by name, plus their parameter/byte/FLOP costs."""

from edgelearn.models.flops import FlopCount, analytic_flops, count_flops, measure_flops
from edgelearn.models.registry import (
    MODEL_NAMES,
    ModelInfo,
    build_model,
    describe,
    model_defaults,
    model_info,
    num_params,
    state_bytes,
)
from edgelearn.models.zoo import (
    MLP,
    NORM_KINDS,
    ConvNet,
    ResNet,
    SmallCNN,
    cnn_large,
    cnn_medium,
    cnn_small,
    resnet8,
    resnet14,
    resnet20,
)

__all__ = [
    "MLP",
    "MODEL_NAMES",
    "NORM_KINDS",
    "ConvNet",
    "FlopCount",
    "ModelInfo",
    "ResNet",
    "SmallCNN",
    "analytic_flops",
    "build_model",
    "cnn_large",
    "cnn_medium",
    "cnn_small",
    "count_flops",
    "describe",
    "measure_flops",
    "model_defaults",
    "model_info",
    "num_params",
    "resnet8",
    "resnet14",
    "resnet20",
    "state_bytes",
]
