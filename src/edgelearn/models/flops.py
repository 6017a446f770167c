"""Per-sample FLOP measurement with ``torch.utils.flop_counter.FlopCounterMode``.

FlopCounterMode counts only matrix products and convolutions (mm/addmm/bmm/conv and their backward kernels),
at 2 FLOPs per multiply-accumulate. Activations, normalization, pooling, the loss and the optimizer step are
not counted; they are a small fraction for the models in this package. The backward pass skips the gradient
with respect to the (non-trainable) input, so forward+backward is a little under 3x the forward count.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

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
