"""One run seed, spawned per purpose with numpy's SeedSequence, so every random choice is reproducible."""

from __future__ import annotations

import zlib

import numpy as np

PURPOSES = ("data", "partition", "init", "sampling", "channel", "hardware", "train", "faults")


def _key(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


class Seeds:
    """Derives independent generators from one root seed.

    A purpose name (e.g. ``"partition"``) plus optional integers (round, client id) always maps to the
    same stream, whatever order the streams are requested in, so serial, vectorized and distributed
    executors draw identical numbers.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def sequence(self, purpose: str, *keys: int) -> np.random.SeedSequence:
        """The SeedSequence for ``purpose`` and integer sub-keys."""
        return np.random.SeedSequence(entropy=self.seed, spawn_key=(_key(purpose), *map(int, keys)))

    def rng(self, purpose: str, *keys: int) -> np.random.Generator:
        """A numpy Generator for ``purpose`` and integer sub-keys."""
        return np.random.default_rng(self.sequence(purpose, *keys))

    def int_seed(self, purpose: str, *keys: int) -> int:
        """A 63-bit integer seed (for torch.Generator.manual_seed) for ``purpose`` and sub-keys."""
        return int(self.sequence(purpose, *keys).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
