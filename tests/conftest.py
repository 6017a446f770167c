"""Suite-wide settings: one torch thread (tests use tiny models; extra threads only add contention)."""

from __future__ import annotations

import os

# Subprocesses (CLI tests) inherit this; torch reads it at start-up.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
