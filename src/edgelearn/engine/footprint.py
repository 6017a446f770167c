"""What the vmap paths (training in :mod:`~edgelearn.engine.vmap`, inference in
:mod:`~edgelearn.engine.vmap_infer`) measure of a model before stacking it: the activation bytes one sample
produces, and whether its state ties parameters (which a stacked state cannot represent)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


@torch.no_grad()
def activation_bytes_per_sample(
    module: nn.Module,
    sample: torch.Tensor,
    forward: Callable[[nn.Module, torch.Tensor], object] | None = None,
) -> int:
    """Bytes of every leaf module's output for one input sample (plus the input): the activation footprint
    of ``forward(module, x)`` (default: ``module(x)``).

    Measured in eval mode (same shapes; a train-mode BatchNorm refuses a batch of one value per channel and
    would update its running statistics), then the module's mode is restored."""
    total = sample.numel() * sample.element_size()
    training = module.training

    def hook(_mod: nn.Module, _inp: object, out: object) -> None:
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel() * out.element_size()

    handles = [m.register_forward_hook(hook) for m in module.modules() if not list(m.children())]
    try:
        module.eval()
        if forward is None:
            module(sample[:1])
        else:
            forward(module, sample[:1])
    finally:
        module.train(training)
        for h in handles:
            h.remove()
    return total


def has_tied_parameters(module: nn.Module) -> bool:
    """Whether two state entries of ``module`` share one tensor (its state dict names more than its
    parameters and buffers do)."""
    named = {n for n, _ in module.named_parameters()} | {n for n, _ in module.named_buffers()}
    return not set(module.state_dict()) <= named
