"""Host allocator tuning: applied once per process where glibc offers mallopt, and skippable by opt-out."""

from __future__ import annotations

import platform

import pytest
import torch

from edgelearn.engine import allocator
from edgelearn.engine.vmap import CPU_MEMORY_BUDGET_BYTES, VmapExecutor


def test_opt_out_leaves_the_allocator_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_tuned", None)
    monkeypatch.setenv(allocator.OPT_OUT_ENV, "0")
    called: list[object] = []
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *a: called.append(a))
    assert allocator.tune_host_allocator(CPU_MEMORY_BUDGET_BYTES) is False
    assert called == []


def test_tuning_is_applied_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_tuned", None)
    monkeypatch.delenv(allocator.OPT_OUT_ENV, raising=False)
    first = allocator.tune_host_allocator(CPU_MEMORY_BUDGET_BYTES)
    assert first == (platform.libc_ver()[0] == "glibc")
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *a: pytest.fail("mallopt called twice"))
    assert allocator.tune_host_allocator(CPU_MEMORY_BUDGET_BYTES) is first
    VmapExecutor(torch.device("cpu"))  # a CPU vmap executor asks again: answered from the first call


def test_missing_mallopt_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_tuned", None)
    monkeypatch.delenv(allocator.OPT_OUT_ENV, raising=False)
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *a: object())  # a C library without mallopt
    assert allocator.tune_host_allocator(CPU_MEMORY_BUDGET_BYTES) is False
