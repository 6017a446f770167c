"""Suite-wide settings: one torch thread (tests use tiny models; extra threads only add contention)."""

from __future__ import annotations

import os
from collections.abc import Iterator

# Subprocesses (CLI tests) inherit this; torch reads it at start-up.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from edgelearn.engine.precision import set_precision  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    """Every test starts single-threaded, even after a test that changed torch's thread count (e.g. a run
    with engine.torch_threads); Ray's serial references then reduce floats like its one-thread workers."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _float32_policy() -> Iterator[None]:
    """A run with engine.precision=bfloat16 sets the process's autocast policy; later tests start float32."""
    yield
    set_precision("float32")
