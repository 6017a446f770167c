"""Per-sample FLOPs: counted analytically for known layers, with FlopCounterMode as the reference.

FlopCounterMode counts only matrix products and convolutions (mm/addmm/bmm/conv and their backward kernels),
at 2 FLOPs per multiply-accumulate. Activations, normalization, pooling, the loss and the optimizer step are
not counted; they are a small fraction for the models in this package. The backward pass skips the gradient
with respect to the (non-trainable) input, so forward+backward is a little under 3x the forward count.

FlopCounterMode's first use imports torch's compile stack (``torch._dynamo``), which costs a short run more
start-up time than its training. :func:`count_flops` therefore counts analytically whenever every module of a
model is one this file knows (the zoo's containers, ``Linear``, ``Conv2d`` and FLOP-free layers), with
exactly FlopCounterMode's formulas, and measures only unknown (plugin) models. A test checks the two agree on
every built-in model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from edgelearn.errors import ConfigError

FLOP_BATCH_SIZE = 2
"""Samples per measurement batch: 2 keeps BatchNorm's training statistics defined and the run cheap."""

MEASURE_DEVICE = torch.device("cpu")
"""Measurements run on a CPU copy, so they never touch the caller's device or model."""


@dataclass(frozen=True)
class FlopCount:
    """FLOPs per sample: ``forward`` (inference) and ``train`` (forward + backward of cross-entropy)."""

    forward: int
    train: int


def _count(fn: Callable[[], None]) -> int:
    """Total FLOPs FlopCounterMode records while ``fn`` runs."""
    from torch.utils.flop_counter import FlopCounterMode  # imports torch._dynamo on first use: only here

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def measure_flops(
    model: nn.Module, input_shape: Sequence[int], batch_size: int = FLOP_BATCH_SIZE
) -> FlopCount:
    """Measure per-sample forward and forward+backward FLOPs of ``model`` on inputs of ``input_shape``.

    Runs on a deep CPU copy in training mode with zero inputs and class-0 targets; the caller's model
    (parameters, gradients, buffers, mode, device) is left untouched.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(
            f"FLOP measurement batch_size must be a positive integer, got {batch_size!r}",
            hint=f"use the default of {FLOP_BATCH_SIZE}",
        )
    shape = tuple(input_shape)
    work = copy.deepcopy(model).to(MEASURE_DEVICE).train()
    dtype = next((p.dtype for p in work.parameters() if p.is_floating_point()), torch.get_default_dtype())
    inputs = torch.zeros((batch_size, *shape), dtype=dtype, device=MEASURE_DEVICE)

    def forward() -> None:
        with torch.no_grad():
            work(inputs)

    def train_step() -> None:
        logits = work(inputs)
        targets = torch.zeros(logits.shape[0], dtype=torch.long, device=MEASURE_DEVICE)
        F.cross_entropy(logits, targets).backward()

    try:
        forward_total = _count(forward)
        train_total = _count(train_step)
    except RuntimeError as exc:
        raise ConfigError(
            f"model {type(model).__name__} cannot run on input_shape {shape}: {exc}",
            hint="pass the per-sample input shape the model was built for (no batch dimension)",
        ) from exc
    return FlopCount(forward=forward_total // batch_size, train=train_total // batch_size)


_FLOP_FREE: tuple[type[nn.Module], ...] = (
    nn.Identity,
    nn.ReLU,
    nn.Flatten,
    nn.MaxPool2d,
    nn.AdaptiveAvgPool2d,
    nn.BatchNorm2d,
    nn.GroupNorm,
)
"""Leaf layers FlopCounterMode counts nothing for (no matmul or convolution), forward or backward."""


def _known_containers() -> tuple[type[nn.Module], ...]:
    """Module types whose own ``forward`` only chains their children and adds/flattens (no matmul)."""
    from edgelearn.models import zoo

    return (nn.Sequential, zoo.MLP, zoo.SmallCNN, zoo.ConvNet, zoo.BasicBlock, zoo.ResNet)


def _is_known(model: nn.Module) -> bool:
    """True when every module of ``model`` is of a type :func:`analytic_flops` can count exactly.

    Types are matched exactly, not by ``isinstance``: a subclass may override ``forward`` with other math.
    """
    containers = _known_containers()
    for module in model.modules():
        kind = type(module)
        if kind in containers or kind in _FLOP_FREE:
            continue
        if kind is nn.Linear:
            continue
        if kind is nn.Conv2d and not module.transposed:  # type: ignore[union-attr]
            continue
        return False
    return True


def _linear_flops(module: nn.Linear, inputs: torch.Tensor) -> tuple[int, int] | None:
    """(forward, backward) FLOPs of one Linear call on a 2-d batch, as FlopCounterMode counts (add)mm."""
    if inputs.dim() != 2:
        return None  # >2-d inputs go through matmul's folding; measure such models instead
    forward = 2 * inputs.shape[0] * module.in_features * module.out_features
    grads = int(inputs.requires_grad) + int(module.weight.requires_grad)  # grad_input mm, grad_weight mm
    return forward, grads * forward


def _conv_flops(module: nn.Conv2d, inputs: torch.Tensor, output: torch.Tensor) -> tuple[int, int]:
    """(forward, backward) FLOPs of one Conv2d call, as FlopCounterMode counts (convolution[_backward]).

    Forward and grad-input: 2 x batch x out pixels x C_out x C_in/groups x kernel; grad-weight: the same with
    all C_in (FlopCounterMode counts it as a convolution over the transposed input, groups ignored).
    """
    batch, out_channels, out_h, out_w = output.shape
    kernel_h, kernel_w = module.kernel_size
    per_group = (
        2 * batch * out_h * out_w * out_channels * kernel_h * kernel_w * (inputs.shape[1] // module.groups)
    )
    backward = per_group if inputs.requires_grad else 0
    if module.weight.requires_grad:
        backward += per_group * module.groups
    return per_group, backward


def analytic_flops(model: nn.Module, input_shape: Sequence[int]) -> FlopCount | None:
    """Per-sample FLOPs of ``model`` computed from its layers' shapes, or None when a module is not known.

    Equal to :func:`measure_flops` (FlopCounterMode) for every model made only of known modules. Layer
    shapes and which tensors need gradients come from one single-sample forward pass of a CPU copy in eval
    mode (BatchNorm statistics untouched, no backward), with hooks on Linear and Conv2d. The ``meta`` device
    would skip the arithmetic but its first use imports torch's symbolic-shape stack, costing more than the
    pass. Returns None (measure instead) for unknown module types, inputs a formula does not cover, or any
    failure of the shape pass.
    """
    if not _is_known(model) or not any(p.requires_grad for p in model.parameters()):
        return None
    forward_total = 0
    backward_total = 0
    unsupported = False

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal forward_total, backward_total, unsupported
        (inputs,) = args
        if isinstance(module, nn.Linear):
            counts = _linear_flops(module, inputs)
        else:
            counts = _conv_flops(module, inputs, output)  # type: ignore[arg-type]
        if counts is None:
            unsupported = True
            return
        forward_total += counts[0]
        backward_total += counts[1]

    try:
        work = copy.deepcopy(model).to(MEASURE_DEVICE).eval()
        dtype = next((p.dtype for p in work.parameters() if p.is_floating_point()), torch.get_default_dtype())
        for module in work.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                module.register_forward_hook(hook)
        with torch.enable_grad():
            work(torch.zeros((1, *tuple(input_shape)), dtype=dtype, device=MEASURE_DEVICE))
    except Exception:  # noqa: BLE001 - any failure of the shape pass: fall back to measuring
        return None
    if unsupported:
        return None
    return FlopCount(forward=forward_total, train=forward_total + backward_total)


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> FlopCount:
    """Per-sample FLOPs of ``model``: analytic for known modules, else measured with FlopCounterMode.

    Same numbers either way (tested on every built-in model); the analytic route keeps a run from importing
    torch's compile stack. Wrong input shapes raise ConfigError (from the measurement fallback).
    """
    counted = analytic_flops(model, input_shape)
    return counted if counted is not None else measure_flops(model, input_shape)
