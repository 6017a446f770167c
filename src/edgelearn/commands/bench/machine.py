"""What a benchmark's numbers depend on besides the code, recorded beside them: library versions, the CPU
and the kernels torch picked for it, the device, and how loaded the machine was."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages, or None where the OS has none."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine_facts(device: str) -> dict[str, Any]:
    """Versions, CPU (count, torch's kernel capability), the ``device`` setting and the GPU's name when it
    runs on one, and the load average now."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": device,
        "gpu": torch.cuda.get_device_name() if device != "cpu" and torch.cuda.is_available() else None,
        "load_average": load_average(),
    }
