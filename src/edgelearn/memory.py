"""Fail fast when a config's sizes cannot fit in memory, instead of growing until the OS kills the run.

Only sizes the config sets are estimated (the synthetic dataset's ``data.num_train``, ``data.num_test`` and
``data.input_shape``); file datasets are as large as their files. The estimate follows what the runner
holds at once (runner.build_context): the float32 features and int64 labels of both splits, one more copy
of the training split as the devices' shards (``train_x[index]`` copies), and the generator's per-sample
index temporaries.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from edgelearn.errors import ConfigError

FEATURE_BYTES = 4
"""float32 features."""
LABEL_BYTES = 8
"""int64 labels."""
TRAIN_COPIES = 2
"""The loaded training split plus the devices' shards the runner copies out of it."""
GENERATOR_TEMP_BYTES = 16
"""Per-sample int64 temporaries of the synthetic generator (class ids and their permutation)."""
MEMORY_HEADROOM = 0.8
"""Share of the available memory a run's data may take (the model, optimizer and Python need the rest)."""
GIB = 2**30


def available_memory_bytes() -> int:
    """Memory available to this process now: MemAvailable of /proc/meminfo, else the physical memory."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return 2**63 - 1  # unknown: do not refuse


def data_bytes(num_train: int, num_test: int, input_shape: tuple[int, ...]) -> int:
    """Bytes the runner holds at once for a synthetic dataset of these sizes (see the module docstring)."""
    sample = FEATURE_BYTES * math.prod(input_shape) + LABEL_BYTES
    train = num_train * (TRAIN_COPIES * sample + GENERATOR_TEMP_BYTES)
    return train + num_test * (sample + GENERATOR_TEMP_BYTES)


def check_memory(cfg: Any, available: int | None = None) -> None:
    """Raise a ConfigError naming the keys and the estimate (GiB) when ``cfg``'s data cannot fit in memory."""
    d = cfg.data
    if d.dataset != "synthetic":
        return
    need = data_bytes(d.num_train, d.num_test, tuple(d.input_shape))
    have = available_memory_bytes() if available is None else available
    if need > MEMORY_HEADROOM * have:
        raise ConfigError(
            f"data.num_train={d.num_train}, data.num_test={d.num_test} and data.input_shape="
            f"{list(d.input_shape)} need about {need / GIB:.3g} GiB ({d.num_train + d.num_test} samples x "
            f"{math.prod(d.input_shape)} float32 features, the training split held twice), but only "
            f"{have / GIB:.3g} GiB of memory is available",
            hint=f"lower data.num_train / data.num_test or data.input_shape to fit in "
            f"{MEMORY_HEADROOM * have / GIB:.3g} GiB",
        )
