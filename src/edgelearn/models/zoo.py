"""Model architectures (MLP, small CNNs, CIFAR-style ResNets) that adapt to any input shape and class count.

Every model here is written for ``torch.func``: no in-place activations or in-place residual adds, no dropout
(its randomness would need ``vmap(randomness=...)``), so a vectorized executor can run many copies with
``torch.func.functional_call`` + ``torch.func.vmap`` over stacked parameters.

Normalization (``norm``) is selectable on the deeper models:

* ``"group"`` (the ResNet default): GroupNorm normalizes each sample on its own, so it has no running
  statistics to average across non-IID clients (BatchNorm's running means are the known failure mode of
  federated averaging, Hsieh et al., "The Non-IID Data Quagmire", ICML 2020), behaves the same for tiny client
  batches, and needs no in-place buffer updates, so it works unchanged under ``torch.func.vmap``.
* ``"batch"``: BatchNorm, for fidelity with papers that use it. It keeps running-statistics buffers that are
  updated in place during training; the vmap executor trains it per client anyway, with masked batch
  statistics and the running statistics returned from its vmapped forward (``engine.vmap_norm``).
* ``"none"``: no normalization; convolutions then carry a bias.

Weights use PyTorch's default initialization; the caller seeds it with ``torch.manual_seed``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from edgelearn.errors import ConfigError

NORM_KINDS: tuple[str, ...] = ("batch", "group", "none")
"""Allowed values of the ``norm`` argument."""

GN_MAX_GROUPS = 8
"""GroupNorm group count (reduced to gcd(channels, 8) when it does not divide the channels). Wu & He (2018)
use 32 groups for ImageNet widths; 8 keeps >= 2 channels per group at the 16-channel ResNet base width."""

MLP_DEFAULT_HIDDEN: tuple[int, ...] = (128,)
"""Default MLP hidden widths: one hidden layer of 128 units."""

# --- cnn_small: the PyTorch-example MNIST CNN (our two-stage model): 2 conv (5x5, 10/20 ch) + 2 FC. --------
SMALL_CNN_CHANNELS: tuple[int, int] = (10, 20)
SMALL_CNN_KERNEL = 5
SMALL_CNN_FC_HIDDEN = 50
SMALL_CNN_HEAD_SIDE = 4
"""Spatial side fed to the FC head; 4x4x20 = 320 features, exactly the classic 28x28 MNIST layout."""
SMALL_CNN_MIN_SIDE_AFTER_VALID = 4
"""A 5x5 conv is 'valid' (unpadded, as in the original) only if it leaves at least this side; else 'same'."""
SMALL_CNN_POOL_MIN_SIDE = 8
"""A 2x2 max-pool is applied along a dimension only if that side is at least this large."""

# --- cnn_medium / cnn_large: VGG-style stacks of 3x3 'same' convs with a 2x2 max-pool after each stage. ----
CNN_MEDIUM_STAGES: tuple[tuple[int, ...], ...] = ((32,), (64,), (128,))
CNN_MEDIUM_FC_HIDDEN = 128
CNN_LARGE_STAGES: tuple[tuple[int, ...], ...] = ((48, 48), (96, 96), (192, 192))
CNN_LARGE_FC_HIDDEN = 256
CNN_HEAD_SIDE = 2
"""Adaptive average pooling to 2x2 before the FC head, so the head size is independent of the input size."""
CNN_POOL_MIN_SIDE = 4
"""A stage's 2x2 max-pool is applied along a dimension only if its side is at least this (result >= 2)."""
CONV_KERNEL = 3
POOL = 2

# --- CIFAR-style ResNets (He et al. 2016, §4.2): depth 6n+2, stages of 16/32/64 x width channels. ---------
RESNET_BASE_WIDTH = 16
RESNET_STAGE_MULTIPLIERS: tuple[int, ...] = (1, 2, 4)
RESNET_STAGE_STRIDES: tuple[int, ...] = (1, 2, 2)
RESNET_STEM_POOL_ABOVE_PX = 32
"""Inputs whose smaller side exceeds this get an ImageNet-style 3x3/2 stem max-pool; <= 32 px get none."""


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(
            f"model.num_classes must be an integer >= 2, got {num_classes!r}",
            hint="set num_classes to the number of labels in the dataset (e.g. 10 for MNIST/CIFAR-10)",
        )
    return num_classes


def _check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ConfigError(
            f"model input_shape must be a non-empty tuple of positive integers, got {input_shape!r}",
            hint="pass the per-sample shape without the batch dimension, e.g. (1, 28, 28) or (64,)",
        )
    return shape


def image_shape(input_shape: Sequence[int], model: str) -> tuple[int, int, int]:
    """Validate that ``input_shape`` is an image shape (C, H, W); convolutional models need one."""
    shape = _check_shape(input_shape)
    if len(shape) != 3:
        raise ConfigError(
            f"model {model!r} needs an image input_shape (C, H, W), got {shape} ({len(shape)}-d)",
            hint="use model 'mlp' for flat feature vectors, or reshape the data to (C, H, W), "
            "e.g. (1, 8, 8) for scikit-learn digits",
        )
    return shape[0], shape[1], shape[2]


def check_norm(norm: str) -> str:
    """Validate a ``norm`` argument against :data:`NORM_KINDS`."""
    if norm not in NORM_KINDS:
        raise ConfigError(
            f"model norm must be one of {list(NORM_KINDS)}, got {norm!r}",
            hint="use 'group' (federated/vmap friendly), 'batch' (paper fidelity) or 'none'",
        )
    return norm


def make_norm(norm: str, channels: int) -> nn.Module:
    """A 2-d normalization layer of kind ``norm`` over ``channels`` channels (Identity for ``"none"``)."""
    check_norm(norm)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(math.gcd(channels, GN_MAX_GROUPS), channels)
    return nn.Identity()


def _maybe_pool(height: int, width: int, min_side: int) -> tuple[nn.Module, int, int]:
    """A 2x2 max-pool applied only along dimensions of side >= ``min_side``, and the new (H, W)."""
    kh = POOL if height >= min_side else 1
    kw = POOL if width >= min_side else 1
    if kh == 1 and kw == 1:
        return nn.Identity(), height, width
    return nn.MaxPool2d((kh, kw)), height // kh, width // kw


def _conv3x3(in_channels: int, out_channels: int, stride: int, norm: str) -> nn.Conv2d:
    """3x3 'same' conv; biased only without normalization (a norm layer's shift makes a bias redundant)."""
    return nn.Conv2d(in_channels, out_channels, CONV_KERNEL, stride, CONV_KERNEL // 2, bias=norm == "none")


class MLP(nn.Module):
    """ReLU MLP on the flattened input; ``hidden=()`` gives multinomial logistic regression."""

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = MLP_DEFAULT_HIDDEN
    ) -> None:
        super().__init__()
        shape = _check_shape(input_shape)
        _check_num_classes(num_classes)
        widths = tuple(hidden) if isinstance(hidden, Sequence) and not isinstance(hidden, str) else None
        if widths is None or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ConfigError(
                f"model 'mlp' hidden must be a sequence of positive integers, got {hidden!r}",
                hint="e.g. hidden=[128] or hidden=[256, 128]; hidden=[] gives logistic regression",
            )
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = math.prod(shape)
        for width in widths:
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        layers.append(nn.Linear(fan_in, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, num_classes)."""
        return self.net(x)


class SmallCNN(nn.Module):
    """Two 5x5 conv layers (10/20 channels, ReLU, 2x2 max-pool) and two FC layers (50 hidden).

    On 1x28x28 this is exactly the classic MNIST CNN of the two-stage paper (21,840 parameters). Each conv is
    unpadded when the input is big enough and 'same'-padded otherwise, pools are skipped on small sides and an
    adaptive average pool fixes the head at 20x4x4, so 8x8 and 32x32 inputs work with the same head.
    The original's dropout is omitted (see module docstring).
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = image_shape(input_shape, "cnn_small")
        _check_num_classes(num_classes)
        layers: list[nn.Module] = []
        for out_channels in SMALL_CNN_CHANNELS:
            pad_h, height = self._conv_side(height)
            pad_w, width = self._conv_side(width)
            layers += [nn.Conv2d(channels, out_channels, SMALL_CNN_KERNEL, padding=(pad_h, pad_w)), nn.ReLU()]
            pool, height, width = _maybe_pool(height, width, SMALL_CNN_POOL_MIN_SIDE)
            layers.append(pool)
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(SMALL_CNN_HEAD_SIDE)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * SMALL_CNN_HEAD_SIDE**2, SMALL_CNN_FC_HIDDEN),
            nn.ReLU(),
            nn.Linear(SMALL_CNN_FC_HIDDEN, num_classes),
        )

    @staticmethod
    def _conv_side(side: int) -> tuple[int, int]:
        """Padding and output side of one 5x5 conv: 'valid' if it leaves enough pixels, else 'same'."""
        valid = side - (SMALL_CNN_KERNEL - 1)
        if valid >= SMALL_CNN_MIN_SIDE_AFTER_VALID:
            return 0, valid
        return SMALL_CNN_KERNEL // 2, side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, num_classes)."""
        return self.head(self.pool(self.features(x)))


class ConvNet(nn.Module):
    """VGG-style CNN: stages of 3x3 'same' conv -> norm -> ReLU, a 2x2 max-pool after each stage (skipped on
    sides < 4), adaptive average pooling to 2x2 and a two-layer FC head."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        stages: Sequence[Sequence[int]],
        fc_hidden: int,
        norm: str = "none",
        name: str = "convnet",
    ) -> None:
        super().__init__()
        channels, height, width = image_shape(input_shape, name)
        _check_num_classes(num_classes)
        check_norm(norm)
        layers: list[nn.Module] = []
        for stage in stages:
            for out_channels in stage:
                layers += [
                    _conv3x3(channels, out_channels, 1, norm),
                    make_norm(norm, out_channels),
                    nn.ReLU(),
                ]
                channels = out_channels
            pool, height, width = _maybe_pool(height, width, CNN_POOL_MIN_SIDE)
            layers.append(pool)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(CNN_HEAD_SIDE)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * CNN_HEAD_SIDE**2, fc_hidden),
            nn.ReLU(),
            nn.Linear(fc_hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, num_classes)."""
        return self.head(self.pool(self.features(x)))


def cnn_small(input_shape: Sequence[int], num_classes: int) -> SmallCNN:
    """The two-stage paper's MNIST CNN (~21.8k parameters on 1x28x28)."""
    return SmallCNN(input_shape, num_classes)


def cnn_medium(input_shape: Sequence[int], num_classes: int, norm: str = "none") -> ConvNet:
    """3-stage CNN (32/64/128 channels, FC 128): ~160k parameters on 1-channel input."""
    return ConvNet(input_shape, num_classes, CNN_MEDIUM_STAGES, CNN_MEDIUM_FC_HIDDEN, norm, "cnn_medium")


def cnn_large(input_shape: Sequence[int], num_classes: int, norm: str = "none") -> ConvNet:
    """3-stage CNN with two convs per stage (48/96/192 channels, FC 256): ~0.84M parameters."""
    return ConvNet(input_shape, num_classes, CNN_LARGE_STAGES, CNN_LARGE_FC_HIDDEN, norm, "cnn_large")


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with a residual; a 1x1 projection shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride, norm)
        self.norm1 = make_norm(norm, out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels, 1, norm)
        self.norm2 = make_norm(norm, out_channels)
        self.act = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=norm == "none"),
                make_norm(norm, out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual output (out-of-place add, so the block stays torch.func friendly)."""
        out = self.act(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet of depth 6n+2: 3x3 stride-1 stem, three stages of n basic blocks with
    16/32/64 x ``width`` channels (strides 1/2/2), global average pooling and a linear head."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        depth: int,
        width: float = 1,
        norm: str = "group",
    ) -> None:
        super().__init__()
        name = f"resnet{depth}"
        channels, height, width_px = image_shape(input_shape, name)
        _check_num_classes(num_classes)
        check_norm(norm)
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ConfigError(
                f"ResNet depth must be 6n+2 with n >= 1, got {depth}", hint="use 8, 14, 20, 32, ..."
            )
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
            raise ConfigError(
                f"model {name!r} width must be a positive number, got {width!r}",
                hint="width multiplies the 16/32/64 base channels, e.g. width=1 or width=2",
            )
        blocks_per_stage = (depth - 2) // 6
        base = max(1, round(RESNET_BASE_WIDTH * width))
        stem: list[nn.Module] = [_conv3x3(channels, base, 1, norm), make_norm(norm, base), nn.ReLU()]
        if min(height, width_px) > RESNET_STEM_POOL_ABOVE_PX:
            stem.append(nn.MaxPool2d(CONV_KERNEL, stride=POOL, padding=CONV_KERNEL // 2))
        self.stem = nn.Sequential(*stem)
        blocks: list[nn.Module] = []
        in_channels = base
        for multiplier, stride in zip(RESNET_STAGE_MULTIPLIERS, RESNET_STAGE_STRIDES, strict=True):
            out_channels = base * multiplier
            for index in range(blocks_per_stage):
                blocks.append(BasicBlock(in_channels, out_channels, stride if index == 0 else 1, norm))
                in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, num_classes)."""
        return self.head(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def resnet8(input_shape: Sequence[int], num_classes: int, width: float = 1, norm: str = "group") -> ResNet:
    """ResNet-8 (one basic block per stage; ~78k parameters at width 1)."""
    return ResNet(input_shape, num_classes, 8, width, norm)


def resnet14(input_shape: Sequence[int], num_classes: int, width: float = 1, norm: str = "group") -> ResNet:
    """ResNet-14 (two basic blocks per stage; ~0.18M parameters at width 1)."""
    return ResNet(input_shape, num_classes, 14, width, norm)


def resnet20(input_shape: Sequence[int], num_classes: int, width: float = 1, norm: str = "group") -> ResNet:
    """ResNet-20 (three basic blocks per stage; ~0.27M parameters at width 1)."""
    return ResNet(input_shape, num_classes, 20, width, norm)
