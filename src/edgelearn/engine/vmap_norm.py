"""BatchNorm for the vmap executor: masked per-client batch statistics, running statistics as outputs.

Under ``torch.func.vmap`` every client of a chunk sees its own batch, padded to the step's widest batch with
copies of its sample 0 under a 0/1 mask (:mod:`edgelearn.engine.vmap`). torch's BatchNorm cannot train
there as serial does, for two reasons: its batch statistics would count the padded rows, and in train mode
it updates ``running_mean``, ``running_var`` and ``num_batches_tracked`` in place, which vmap cannot do per
client on buffers it sees through ``functional_call``.

:class:`MaskedNorms` swaps the ``forward`` of every BatchNorm layer of one module (the vmap executor's
private template, once per architecture) for a functional one. While :meth:`MaskedNorms.active` holds a
client's sample mask (inside the vmapped objective), that forward

* normalizes with the mean and biased variance of the client's REAL samples of the step (masked sums over
  the batch and spatial axes, divided by the real count), as ``F.batch_norm`` does on the unpadded batch;
* computes the new running statistics exactly as torch's train-mode update does (exponential average with
  ``momentum``, or the cumulative average ``1 / num_batches_tracked`` when ``momentum`` is None; the running
  variance takes the unbiased variance) and hands them out through the dict ``active`` yields instead of
  writing the buffers, so the vmapped objective returns them stacked per client and the executor writes them
  into its stacked state;
* in eval mode normalizes with the running statistics (or, without them, the masked batch statistics).

Outside ``active`` the layers run torch's own forward, so the module stays an ordinary module. Statistics are
computed in float32 at least (autocast hands BatchNorm bfloat16 activations; torch's CPU kernel reduces them
in float32 too) and the output keeps the input's dtype. Results equal the serial executor's up to float32
summation order.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from edgelearn.errors import ConfigError

RUNNING_KEYS: tuple[str, ...] = ("running_mean", "running_var", "num_batches_tracked")
"""BatchNorm buffers a train-mode forward updates; the masked forward returns their new values."""

_STAT_DTYPE = torch.float32
"""Least precise dtype the statistics are reduced in: torch's CPU and CUDA kernels reduce low-precision
activations in float32, so a bfloat16 mean would differ from serial by far more than rounding."""


def is_masked_batchnorm(module: nn.Module) -> bool:
    """Whether ``module`` is a BatchNorm layer :class:`MaskedNorms` replaces (torch's forward, not overridden:
    a subclass with its own forward, such as ``SyncBatchNorm``, might compute something else)."""
    return isinstance(module, _BatchNorm) and type(module).forward is _BatchNorm.forward


def overridden_batchnorm(module: nn.Module) -> bool:
    """Whether ``module`` is a BatchNorm whose class overrides torch's forward (the vmap path cannot
    reproduce a forward it does not know)."""
    return isinstance(module, _BatchNorm) and not is_masked_batchnorm(module)


class MaskedNorms:
    """The masked, functional BatchNorm forwards of one module (see the module docstring).

    Build it with :meth:`attach`; one instance serves one module and one vmapped call at a time (the state
    of the call in progress, its mask and the running-statistics updates, lives on the instance).
    """

    def __init__(self, module: nn.Module) -> None:
        self.names: list[str] = []
        self.smallest_batch = 0
        """The smallest real batch of the step in progress, set by the executor before each step: with a
        single value per channel torch's train-mode BatchNorm raises, and so does the masked forward."""
        self._mask: torch.Tensor | None = None
        self._updates: dict[str, torch.Tensor] = {}
        for name, sub in module.named_modules():
            if is_masked_batchnorm(sub):
                self.names.append(name)
                # An instance attribute shadows the class's forward; nn.Module.__call__ looks it up per call.
                sub.forward = functools.partial(self._forward, sub, name)

    @classmethod
    def attach(cls, module: nn.Module) -> MaskedNorms | None:
        """Masked forwards for ``module``'s BatchNorm layers, or None (nothing changed) when it has none."""
        if not any(is_masked_batchnorm(sub) for sub in module.modules()):
            return None
        return cls(module)

    @contextlib.contextmanager
    def active(self, mask: torch.Tensor) -> Iterator[dict[str, torch.Tensor]]:
        """Run the BatchNorm layers masked by ``mask`` (bool, one entry per sample of the batch); yields the
        dict that receives the new running statistics, keyed like the module's state dict."""
        if self._mask is not None:
            raise RuntimeError("MaskedNorms.active is already in use: one vmapped call at a time")
        updates: dict[str, torch.Tensor] = {}
        self._mask, self._updates = mask, updates
        try:
            yield updates
        finally:
            self._mask, self._updates = None, {}

    def _buffer(self, module: _BatchNorm, name: str, key: str) -> torch.Tensor | None:
        """The layer's buffer ``key`` as of now: as updated earlier in this call (a layer used twice), else
        as loaded."""
        return self._updates.get(f"{name}.{key}" if name else key, getattr(module, key))

    def _forward(self, module: _BatchNorm, name: str, x: torch.Tensor) -> torch.Tensor:
        """torch's BatchNorm forward outside :meth:`active`, the masked functional one inside."""
        mask = self._mask
        if mask is None:
            return _BatchNorm.forward(module, x)
        module._check_input_dim(x)
        running_mean = self._buffer(module, name, "running_mean")
        running_var = self._buffer(module, name, "running_var")
        if not module.training and running_mean is not None and running_var is not None:
            return _normalize(x, running_mean, running_var, module)
        if x.shape[0] != mask.shape[0]:
            raise ConfigError(
                f"BatchNorm {name or type(module).__name__} got {x.shape[0]} samples in a batch of "
                f"{mask.shape[0]}: under the vmap executor its statistics are masked per sample of the batch",
                hint="feed the model tensors aligned with the batch's samples (x or a per-sample extra), "
                "or use executor=serial",
            )
        spatial = math.prod(x.shape[2:])
        if module.training and self.smallest_batch * spatial == 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {[1, *x.shape[1:]]}"
            )
        dims = [0, *range(2, x.dim())]
        xs = x.to(torch.promote_types(x.dtype, _STAT_DTYPE))
        real = mask.to(xs.dtype).view(-1, *([1] * (x.dim() - 1)))  # 1 for real samples, 0 for padding
        count = mask.sum().to(xs.dtype) * spatial
        mean = (xs * real).sum(dims) / count
        centered = xs - _channels(mean, x.dim())
        var_sum = (centered * centered * real).sum(dims)
        out = _affine(centered * _channels(torch.rsqrt(var_sum / count + module.eps), x.dim()), module)
        tracked = running_mean is not None and running_var is not None
        if module.training and module.track_running_stats and tracked:
            unbiased = var_sum.detach() / (count - 1)
            self._update(module, name, mean.detach(), unbiased, (running_mean, running_var))
        return out.to(x.dtype)

    def _update(
        self,
        module: _BatchNorm,
        name: str,
        mean: torch.Tensor,
        unbiased_var: torch.Tensor,
        running: tuple[torch.Tensor, torch.Tensor],
    ) -> None:
        """Record the layer's new running statistics as torch's train-mode forward would write them, from the
        step's batch ``mean``, ``unbiased_var`` and the current (running mean, running variance)."""
        running_mean, running_var = running
        prefix = f"{name}." if name else ""
        factor: float | torch.Tensor = module.momentum if module.momentum is not None else 0.0
        tracked = self._buffer(module, name, "num_batches_tracked")
        if tracked is not None:
            tracked = tracked + 1
            self._updates[prefix + "num_batches_tracked"] = tracked
            if module.momentum is None:  # cumulative moving average, 1 / batches seen (computed in float64)
                factor = (1.0 / tracked.to(torch.float64)).to(running_mean.dtype)
        self._updates[prefix + "running_mean"] = (
            factor * mean.to(running_mean.dtype) + (1 - factor) * running_mean
        )
        self._updates[prefix + "running_var"] = (
            factor * unbiased_var.to(running_var.dtype) + (1 - factor) * running_var
        )


def _channels(per_channel: torch.Tensor, dim: int) -> torch.Tensor:
    """A (C,) tensor shaped to broadcast over an input of ``dim`` dimensions laid out (N, C, ...)."""
    return per_channel.view(1, -1, *([1] * (dim - 2)))


def _affine(normalized: torch.Tensor, module: _BatchNorm) -> torch.Tensor:
    """The layer's learned scale and shift applied to ``normalized`` (unchanged without them)."""
    if module.weight is not None:
        normalized = normalized * _channels(module.weight, normalized.dim())
    if module.bias is not None:
        normalized = normalized + _channels(module.bias, normalized.dim())
    return normalized


def _normalize(
    x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor, module: _BatchNorm
) -> torch.Tensor:
    """Eval-mode BatchNorm: ``x`` normalized with the running statistics, then the affine transform."""
    xs = x.to(torch.promote_types(x.dtype, _STAT_DTYPE))
    scale = torch.rsqrt(running_var + module.eps)
    out = _affine((xs - _channels(running_mean, x.dim())) * _channels(scale, x.dim()), module)
    return out.to(x.dtype)
