"""Mini-batch schedules shared by every executor, so serial, vmap and ray runs see identical batches.

A client's batch order is a function of its own ``(num_samples, batch_size, seed)`` only: it walks shuffled
passes drawn by a PCG64 generator seeded with ``seed`` exactly as ``np.random.default_rng(seed)`` seeds one,
so any subset of a cohort, in any order or chunking, gets the same batches. :func:`batch_schedules` builds a
whole cohort's schedules at once in columnar form (the generators' seeds derived in one vectorized pass,
:func:`edgelearn.seeding.seed_words`); :func:`batch_schedule` is the one-client view of the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.random import PCG64, Generator
from numpy.random.bit_generator import ISeedSequence

from edgelearn.seeding import seed_words

PCG64_SEED_WORDS = 4
"""64-bit words PCG64 draws from its seed sequence (128-bit state and 128-bit increment)."""


class _SeedWords(ISeedSequence):
    """A seed sequence whose state words were precomputed in bulk (``seed_words``): seeds one PCG64 fast."""

    __slots__ = ("words",)

    def __init__(self, words: np.ndarray) -> None:
        self.words = words

    def generate_state(self, n_words: int, dtype: type | np.dtype = np.uint32) -> np.ndarray:
        """The precomputed words (only the uint64 request PCG64 makes is supported)."""
        if int(n_words) != len(self.words) or np.dtype(dtype) != np.uint64:
            raise ValueError(f"precomputed seed words: cannot produce {n_words} words of {np.dtype(dtype)}")
        return self.words


@dataclass(frozen=True)
class Schedules:
    """Batch orders of many clients, columnar: every client's batches concatenated, client after client.

    ``order`` holds the sample indices (local to each client) of all batches; ``batch_len`` the length of
    every batch; ``steps`` and ``samples`` the number of batches and of samples per client.
    """

    order: np.ndarray
    batch_len: np.ndarray
    steps: np.ndarray
    samples: np.ndarray

    def __len__(self) -> int:
        return int(self.steps.shape[0])

    @cached_property
    def first_batch(self) -> np.ndarray:
        """Index into ``batch_len`` of each client's first batch (its batches follow contiguously)."""
        return (np.cumsum(self.steps) - self.steps).astype(np.int64)

    @cached_property
    def batch_start(self) -> np.ndarray:
        """Index into ``order`` of every batch's first sample."""
        return (np.cumsum(self.batch_len) - self.batch_len).astype(np.int64)

    def batches(self, i: int) -> list[np.ndarray]:
        """Client i's batches as index arrays (views of ``order``), in training order."""
        first = int(self.steps[:i].sum())
        begin = int(self.samples[:i].sum())
        ends = begin + np.cumsum(self.batch_len[first : first + int(self.steps[i])])
        starts = np.concatenate([[begin], ends[:-1]]).astype(np.int64)
        return [self.order[a:b] for a, b in zip(starts.tolist(), ends.tolist())]

    def all_batches(self) -> list[list[np.ndarray]]:
        """Every client's batches (:meth:`batches` for each client, in one pass)."""
        ends = np.cumsum(self.batch_len).tolist()
        starts = [0, *ends[:-1]]
        out: list[list[np.ndarray]] = []
        b = 0
        for count in self.steps.tolist():
            out.append([self.order[starts[j] : ends[j]] for j in range(b, b + count)])
            b += count
        return out


def _check_mode(epochs: int | None, steps: int | None) -> None:
    """Local training runs either whole passes or a step count, never both or neither."""
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs or steps")


def batch_schedules(
    sizes: Sequence[int] | np.ndarray,
    batch_sizes: Sequence[int] | np.ndarray | int,
    seeds: Sequence[int] | np.ndarray,
    *,
    epochs: int | None = None,
    steps: int | None = None,
) -> Schedules:
    """Batch orders of many clients at once; client i has ``sizes[i]``, ``batch_sizes[i]`` and ``seeds[i]``.

    ``epochs``: that many shuffled passes, the last batch of a pass may be short. ``steps``: exactly that
    many batches of ``min(batch_size, num_samples)`` samples drawn by walking reshuffled passes (batches do
    not straddle passes, so every batch holds distinct samples). Clients without samples get no batch.
    """
    n = np.asarray(sizes, dtype=np.int64).ravel()
    count = n.shape[0]
    seed_arr = np.asarray(seeds).ravel()
    if seed_arr.shape[0] != count:
        raise ValueError(f"batch_schedules: {seed_arr.shape[0]} seeds for {count} clients")
    size = np.maximum(1, np.minimum(np.broadcast_to(np.asarray(batch_sizes, dtype=np.int64), n.shape), n))
    has = n > 0
    empty = np.zeros(0, dtype=np.int64)
    if not has.any():
        zeros = np.zeros(count, dtype=np.int64)
        return Schedules(order=empty, batch_len=empty, steps=zeros, samples=zeros.copy())
    _check_mode(epochs, steps)
    if epochs is not None:
        per_pass = np.where(has, -(-n // size), 0)
        n_steps = int(epochs) * per_pass
        samples = np.where(has, int(epochs) * n, 0)
        batch_len = np.repeat(size, n_steps)
        # The last batch of each pass holds what is left of the pass (a full batch when size divides n).
        first = np.repeat(np.cumsum(n_steps) - n_steps, n_steps)
        in_pass = (np.arange(batch_len.shape[0]) - first) % np.repeat(np.maximum(per_pass, 1), n_steps)
        last = in_pass == np.repeat(per_pass - 1, n_steps)
        batch_len[last] = np.repeat(n - (per_pass - 1) * size, n_steps)[last]
    else:
        n_steps = np.where(has, int(steps), 0)  # type: ignore[arg-type]
        samples = n_steps * size
        batch_len = np.repeat(size, n_steps)
    words = seed_words(seed_arr[has], PCG64_SEED_WORDS)
    parts: list[np.ndarray] = []
    for w, ni, si, todo in zip(words, n[has].tolist(), size[has].tolist(), n_steps[has].tolist()):
        rng = Generator(PCG64(_SeedWords(w)))
        if epochs is not None:
            for _ in range(int(epochs)):
                parts.append(rng.permutation(ni))
            continue
        per = ni // si
        while todo > 0:
            take = min(per, todo)
            parts.append(rng.permutation(ni)[: take * si])
            todo -= take
    return Schedules(
        order=np.concatenate(parts).astype(np.int64, copy=False) if parts else empty,
        batch_len=batch_len.astype(np.int64, copy=False),
        steps=n_steps.astype(np.int64),
        samples=samples.astype(np.int64),
    )


def batch_schedule(
    num_samples: int,
    batch_size: int,
    *,
    seed: int,
    epochs: int | None = None,
    steps: int | None = None,
) -> list[np.ndarray]:
    """Index arrays of each local SGD step for one client (one client of :func:`batch_schedules`).

    ``epochs``: that many shuffled passes, the last batch of a pass may be short. ``steps``: exactly that
    many batches of ``min(batch_size, num_samples)`` samples drawn by walking reshuffled passes (batches do
    not straddle passes, so every batch holds distinct samples).
    """
    if num_samples <= 0:
        return []
    _check_mode(epochs, steps)
    return batch_schedules([num_samples], [batch_size], [seed], epochs=epochs, steps=steps).batches(0)
