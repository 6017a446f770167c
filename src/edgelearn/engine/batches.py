"""Mini-batch schedules shared by every executor, so serial, vmap and ray runs see identical batches."""

from __future__ import annotations

import numpy as np


def batch_schedule(
    num_samples: int,
    batch_size: int,
    *,
    seed: int,
    epochs: int | None = None,
    steps: int | None = None,
) -> list[np.ndarray]:
    """Index arrays of each local SGD step for one client.

    ``epochs``: that many shuffled passes, the last batch of a pass may be short. ``steps``: exactly that
    many batches of ``min(batch_size, num_samples)`` samples drawn by walking reshuffled passes (batches do
    not straddle passes, so every batch holds distinct samples).
    """
    if num_samples <= 0:
        return []
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs or steps")
    rng = np.random.default_rng(seed)
    size = max(1, min(batch_size, num_samples))
    out: list[np.ndarray] = []
    if epochs is not None:
        for _ in range(epochs):
            perm = rng.permutation(num_samples)
            out.extend(perm[i : i + size] for i in range(0, num_samples, size))
        return out
    assert steps is not None
    per_pass = num_samples // size
    while len(out) < steps:
        perm = rng.permutation(num_samples)
        out.extend(perm[i * size : (i + 1) * size] for i in range(min(per_pass, steps - len(out))))
    return out
