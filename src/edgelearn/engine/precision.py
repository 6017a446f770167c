"""Mixed precision: the dtype forward passes run in (``engine.precision``), as a process-wide policy.

Like ``torch.set_num_threads``, the policy belongs to the process: a run sets it from its config
(:func:`set_precision`), and the executors (training forward + loss), test-set evaluation and teachers'
no-grad logits enter :func:`autocast` around their forward passes. Parameters, optimizer state, aggregation
and the logits handed between nodes stay float32; only the autocast op list (convolutions, matrix products)
runs in the low-precision dtype. Planning-time estimates (bound constants, pilots) never enter it and stay
float32. bfloat16 needs no loss scaling, which is why float16 is not offered.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager

import torch

from edgelearn.errors import ConfigError

PRECISIONS: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}
"""Names accepted by ``engine.precision`` and the autocast dtype of each (None: no autocast)."""

_dtype: torch.dtype | None = None


def set_precision(name: str, device: torch.device | None = None) -> None:
    """Make ``name`` (a key of :data:`PRECISIONS`) this process's policy; a ConfigError for an unknown name
    or a device type that has no autocast."""
    global _dtype
    if name not in PRECISIONS:
        raise ConfigError(
            f"engine.precision: unknown precision {name!r}", hint=f"use one of {list(PRECISIONS)}"
        )
    dtype = PRECISIONS[name]
    if dtype is not None and device is not None and not torch.amp.is_autocast_available(device.type):
        raise ConfigError(
            f"engine.precision={name}: torch has no autocast for device type {device.type!r}",
            hint="set engine.precision=float32 on this device",
        )
    _dtype = dtype


def current_precision() -> str:
    """The name of the policy in force."""
    return next(name for name, dtype in PRECISIONS.items() if dtype == _dtype)


def autocast(device: torch.device) -> AbstractContextManager[object]:
    """The autocast context for forward passes on ``device`` under the policy (a no-op for float32)."""
    if _dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_dtype)


@contextlib.contextmanager
def precision(name: str, device: torch.device | None = None) -> Iterator[None]:
    """Run a block under policy ``name``, restoring the previous policy afterwards (tests, scoped use)."""
    before = current_precision()
    set_precision(name, device)
    try:
        yield
    finally:
        set_precision(before)
