"""Resolve the ``device: auto|cpu|cuda`` setting to a torch.device (nothing else hard-codes one), and time
work on one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from edgelearn.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda`` without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device is 'cuda' but no CUDA GPU is available", hint="set device: auto or cpu")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r} is not one of auto, cpu, cuda")
    return torch.device(name)


def timed(fn: Callable[..., Any], *args: Any, device: torch.device) -> float:
    """Wall seconds ``fn(*args)`` takes on ``device``. CUDA launches are asynchronous, so the device's queue
    is drained before the clock starts and before it is read (nothing to drain on a CPU): benchmarks time
    GPU work with it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started
