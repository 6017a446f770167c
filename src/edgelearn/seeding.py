"""One run seed, spawned per purpose with numpy's SeedSequence, so every random choice is reproducible.

:meth:`Seeds.int_seeds` and :func:`seed_words` derive many seeds in one vectorized pass: they reproduce
numpy's SeedSequence hashing (``numpy/random/bit_generator.pyx``, stream-stable since numpy 1.17) on arrays
of keys, so a cohort of 10,000 clients gets its seeds in a few dozen numpy operations instead of 10,000
SeedSequence objects, with the very same values (tests/test_engine_batches.py checks them against numpy).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

PURPOSES = ("data", "partition", "init", "sampling", "channel", "hardware", "train", "faults")

# numpy's SeedSequence constants (bit_generator.pyx): pool of 4 words, hashing multipliers and shifts.
POOL_SIZE = 4
"""SeedSequence's default pool size in 32-bit words."""
WORD_BITS = 32
WORD_MASK = (1 << WORD_BITS) - 1
INIT_A = 0x43B0D7E5
MULT_A = 0x931E8875
INIT_B = 0x8B51F9DD
MULT_B = 0x58F38DED
MIX_MULT_L = 0xCA01F9DD
MIX_MULT_R = 0x4973F715
XSHIFT = WORD_BITS // 2
INT_SEED_WORDS = 1
"""64-bit words generated per ``int_seed`` (one, shifted right by one bit to fit a signed int64)."""

Words = np.ndarray
"""A uint64 array holding 32-bit words (uint64 so products of two words never overflow)."""


def _key(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def _int_words(value: int) -> list[int]:
    """A non-negative integer as little-endian 32-bit words, as SeedSequence coerces it (0 -> [0])."""
    value = int(value)
    if value < 0:
        raise ValueError(f"seed entropy must be non-negative, got {value}")
    words = [value & WORD_MASK]
    value >>= WORD_BITS
    while value:
        words.append(value & WORD_MASK)
        value >>= WORD_BITS
    return words


def _one_word_each(keys: np.ndarray) -> bool:
    """Whether every key is an integer SeedSequence coerces to exactly one 32-bit word."""
    if keys.dtype.kind not in "iu":
        return False
    return not keys.size or (int(keys.min()) >= 0 and int(keys.max()) <= WORD_MASK)


def _hashmix(value: Words, hash_const: list[int]) -> Words:
    """SeedSequence's ``hashmix``: xor, multiply by the evolving constant (advanced in place), xor-shift."""
    value = value ^ np.uint64(hash_const[0])
    hash_const[0] = (hash_const[0] * MULT_A) & WORD_MASK
    value = (value * np.uint64(hash_const[0])) & np.uint64(WORD_MASK)
    return value ^ (value >> np.uint64(XSHIFT))


def _mix(x: Words, y: Words) -> Words:
    """SeedSequence's ``mix`` of two words (uint64 arithmetic wraps, the low 32 bits are exact)."""
    result = (np.uint64(MIX_MULT_L) * x - np.uint64(MIX_MULT_R) * y) & np.uint64(WORD_MASK)
    return result ^ (result >> np.uint64(XSHIFT))


def _pool(entropy: Sequence[Words]) -> list[Words]:
    """SeedSequence's ``mix_entropy`` over equally shaped word arrays: the 4-word pool, vectorized."""
    shape = entropy[0].shape
    hash_const = [INIT_A]
    zero = np.zeros(shape, dtype=np.uint64)
    pool = [_hashmix(entropy[i] if i < len(entropy) else zero, hash_const) for i in range(POOL_SIZE)]
    for i_src in range(POOL_SIZE):
        for i_dst in range(POOL_SIZE):
            if i_src != i_dst:
                pool[i_dst] = _mix(pool[i_dst], _hashmix(pool[i_src], hash_const))
    for i_src in range(POOL_SIZE, len(entropy)):
        for i_dst in range(POOL_SIZE):
            pool[i_dst] = _mix(pool[i_dst], _hashmix(entropy[i_src], hash_const))
    return pool


def _generate_uint64(pool: Sequence[Words], n_words: int) -> np.ndarray:
    """SeedSequence's ``generate_state(n_words, np.uint64)`` per pool column: shape (*pool shape, n_words)."""
    hash_const = INIT_B
    halves = []
    for i in range(2 * n_words):
        data = pool[i % POOL_SIZE] ^ np.uint64(hash_const)
        hash_const = (hash_const * MULT_B) & WORD_MASK
        data = (data * np.uint64(hash_const)) & np.uint64(WORD_MASK)
        halves.append(data ^ (data >> np.uint64(XSHIFT)))
    low, high = halves[0::2], halves[1::2]
    return np.stack([lo | (hi << np.uint64(WORD_BITS)) for lo, hi in zip(low, high)], axis=-1)


def seed_words(seeds: np.ndarray | Sequence[int], n_words: int) -> np.ndarray:
    """``SeedSequence(s).generate_state(n_words, np.uint64)`` for every non-negative seed ``s < 2**64``.

    This is how ``np.random.default_rng(s)`` / ``PCG64(s)`` seed themselves (four words), so the result can
    seed many generators at once. Returns shape ``(len(seeds), n_words)``.
    """
    s = np.asarray(seeds)
    if s.size and s.dtype.kind == "i" and s.min() < 0:
        raise ValueError("seeds must be non-negative")
    s = s.astype(np.uint64).ravel()
    low = s & np.uint64(WORD_MASK)
    high = s >> np.uint64(WORD_BITS)
    # One word when s < 2**32, else two: a missing word hashes exactly like a zero word inside the pool.
    return _generate_uint64(_pool([low, high]), n_words)


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

    def int_seeds(self, purpose: str, *keys: int | np.ndarray | Sequence[int]) -> np.ndarray:
        """``int_seed(purpose, *k)`` for every broadcast combination of the keys, in one vectorized pass.

        Each key is an integer or a 1-D array (e.g. a round and an array of client ids); the result is an
        int64 array of the broadcast shape, element for element equal to :meth:`int_seed`.
        """
        arrays = np.broadcast_arrays(*(np.asarray(k) for k in keys)) if keys else []
        shape = arrays[0].shape if arrays else ()
        if not all(_one_word_each(a) for a in arrays):
            # Rare: keys that are not one 32-bit word each (or not integers): numpy's own path decides.
            flat = [a.ravel().tolist() for a in arrays]
            out = [self.int_seed(purpose, *combo) for combo in zip(*flat)]
            return np.array(out, dtype=np.int64).reshape(shape)
        run = _int_words(self.seed)
        run += [0] * (POOL_SIZE - len(run))  # numpy pads short run entropy when a spawn key follows
        words = [*run, _key(purpose)]
        # Words shared by every combination (the run seed, the purpose, scalar keys) hash as 0-d arrays that
        # broadcast: the pool is the same arithmetic, without a full-size array per shared word.
        entropy = [np.asarray(w, dtype=np.uint64) for w in words]
        entropy += [
            a.astype(np.uint64).ravel() if np.ndim(k) else np.asarray(k).astype(np.uint64)
            for a, k in zip(arrays, keys)
        ]
        flat = int(np.prod(shape, dtype=np.int64))
        with np.errstate(over="ignore"):  # 0-d uint64 arithmetic wraps exactly like arrays, but warns
            pool = [np.broadcast_to(w, (flat,)) for w in _pool(entropy)]
        first = _generate_uint64(pool, INT_SEED_WORDS)[:, 0]
        return (first >> np.uint64(1)).astype(np.int64).reshape(shape)
