"""The event ledger (every joule, second, FLOP and byte spent) and the virtual clock that times events.

Events are stored column-wise in growing numpy arrays, so recording a batch of 10,000 device events is a
handful of vectorized copies, and totals are ``np.bincount`` reductions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgelearn.errors import DataError
from edgelearn.system.topology import TIER_CODE, TIER_ORDER, Tier

ArrayLike = int | float | Sequence[float] | np.ndarray

KINDS: tuple[str, ...] = ("compute", "transmit")
DIRECTIONS: tuple[str, ...] = ("none", "up", "down")
KIND_CODE = {k: i for i, k in enumerate(KINDS)}
DIRECTION_CODE = {d: i for i, d in enumerate(DIRECTIONS)}
NO_NODE = -1
"""``dst`` (and ``src``) of a compute event."""

INITIAL_CAPACITY = 1024
STATE_VERSION = 1

_COLUMNS: dict[str, Any] = {
    "kind": np.int8,
    "round": np.int64,
    "node": np.int64,
    "tier": np.int8,
    "src": np.int64,
    "dst": np.int64,
    "direction": np.int8,
    "flops": np.float64,
    "bytes": np.float64,
    "seconds": np.float64,
    "joules": np.float64,
    "t_start": np.float64,
    "t_end": np.float64,
    "phase": np.int32,
    "batch": np.int64,
}
METRICS: tuple[str, ...] = ("energy_j", "compute_j", "transmit_j", "bytes_up", "bytes_down", "flops")


class VirtualClock:
    """Per-node ready times; events advance them so a round's delay is max over parallel branches plus
    sequential stages, without any explicit critical-path bookkeeping."""

    def __init__(self, num_nodes: int) -> None:
        if num_nodes < 1:
            raise ValueError("VirtualClock needs at least one node")
        self.ready = np.zeros(int(num_nodes), dtype=np.float64)

    @property
    def now(self) -> float:
        """The latest ready time over all nodes."""
        return float(self.ready.max())

    def sync(self) -> None:
        """Barrier: every node becomes ready at ``now`` (start of a synchronous round)."""
        self.ready[:] = self.ready.max()

    def compute(self, nodes: ArrayLike, seconds: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Run work of ``seconds`` on each node; returns (t_start, t_end).

        Repeated nodes in one batch run back to back, in the order given.
        """
        ids, secs = np.broadcast_arrays(
            np.asarray(nodes, dtype=np.int64), np.asarray(seconds, dtype=np.float64)
        )
        ids, secs = ids.ravel(), secs.ravel()
        if np.unique(ids).size == ids.size:
            start = self.ready[ids].copy()
            end = start + secs
            self.ready[ids] = end
            return start, end
        order = np.argsort(ids, kind="stable")
        sorted_ids, sorted_secs = ids[order], secs[order]
        first = np.r_[True, sorted_ids[1:] != sorted_ids[:-1]]
        cum = np.cumsum(sorted_secs)
        group_first = np.maximum.accumulate(np.where(first, np.arange(ids.size), 0))
        end_sorted = self.ready[sorted_ids] + cum - (cum[group_first] - sorted_secs[group_first])
        end = np.empty_like(end_sorted)
        end[order] = end_sorted
        start = end - secs
        last = np.r_[sorted_ids[1:] != sorted_ids[:-1], True]
        self.ready[sorted_ids[last]] = end_sorted[last]
        return start, end

    def transmit(self, src: ArrayLike, dst: ArrayLike, seconds: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Send from ``src`` to ``dst`` taking ``seconds``; returns (t_start, t_end).

        A batch is concurrent (FDMA sub-bands or separate wires): each transfer starts at its sender's
        ready time; a sender becomes ready at its latest end, a receiver at max(its ready, arrival).
        """
        s, d, secs = np.broadcast_arrays(
            np.asarray(src, dtype=np.int64),
            np.asarray(dst, dtype=np.int64),
            np.asarray(seconds, dtype=np.float64),
        )
        s, d, secs = s.ravel(), d.ravel(), secs.ravel()
        start = self.ready[s].copy()
        end = start + secs
        np.maximum.at(self.ready, s, end)
        np.maximum.at(self.ready, d, end)
        return start, end

    def state_dict(self) -> dict[str, Any]:
        """Checkpointable state."""
        return {"ready": self.ready.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict`` output (same number of nodes)."""
        ready = np.asarray(state["ready"], dtype=np.float64)
        if ready.shape != self.ready.shape:
            raise DataError(f"clock state: {ready.shape[0]} nodes, expected {self.ready.shape[0]}")
        self.ready = ready.copy()


def _zero_metrics() -> dict[str, float]:
    return {m: 0.0 for m in METRICS}


class Ledger:
    """Columnar record of compute and transmit events, with totals by tier, phase and round.

    ``node_tiers`` gives the tier of every node id, so each event's tier column is filled from its node.
    """

    def __init__(self, node_tiers: Sequence[Tier | str]) -> None:
        self._node_tiers = np.array([TIER_CODE[Tier(t)] for t in node_tiers], dtype=np.int8)
        self._phases: list[str] = []
        self._phase_code: dict[str, int] = {}
        self._size = 0
        self._batches = 0
        """Record calls so far: each event's ``batch`` column numbers the call that recorded it, so a round's
        work can be replayed with the clock's batch semantics (a transmit batch is concurrent)."""
        self._cols = {name: np.empty(INITIAL_CAPACITY, dtype=dt) for name, dt in _COLUMNS.items()}

    def __len__(self) -> int:
        return self._size

    # ------------------------------------------------------------------ recording
    def _code_phase(self, phase: str) -> int:
        if not isinstance(phase, str) or not phase:
            raise ValueError(f"phase must be a non-empty string, got {phase!r}")
        if phase not in self._phase_code:
            self._phase_code[phase] = len(self._phases)
            self._phases.append(phase)
        return self._phase_code[phase]

    def _append(self, values: dict[str, Any]) -> None:
        values = {**values, "batch": self._batches}
        self._batches += 1
        arrays = np.broadcast_arrays(*(np.asarray(v) for v in values.values()))
        n = arrays[0].size
        need = self._size + n
        if need > self._cols["kind"].size:
            capacity = max(need, 2 * self._cols["kind"].size)
            for name, col in self._cols.items():
                grown = np.empty(capacity, dtype=col.dtype)
                grown[: self._size] = col[: self._size]
                self._cols[name] = grown
        for name, arr in zip(values, arrays, strict=True):
            self._cols[name][self._size : need] = arr.ravel()
        self._size = need

    def record_compute(
        self,
        *,
        round: int | np.ndarray,
        node: ArrayLike,
        flops: ArrayLike,
        seconds: ArrayLike,
        joules: ArrayLike,
        t_start: ArrayLike,
        t_end: ArrayLike,
        phase: str = "train",
    ) -> None:
        """Record one or a batch (arrays broadcast together) of compute events on ``node``."""
        nodes = np.asarray(node, dtype=np.int64)
        self._append(
            {
                "kind": KIND_CODE["compute"],
                "round": round,
                "node": nodes,
                "tier": self._node_tiers[nodes],
                "src": NO_NODE,
                "dst": NO_NODE,
                "direction": DIRECTION_CODE["none"],
                "flops": flops,
                "bytes": 0.0,
                "seconds": seconds,
                "joules": joules,
                "t_start": t_start,
                "t_end": t_end,
                "phase": self._code_phase(phase),
            }
        )

    def record_transmit(
        self,
        *,
        round: int | np.ndarray,
        src: ArrayLike,
        dst: ArrayLike,
        direction: str | Sequence[str] | np.ndarray,
        nbytes: ArrayLike,
        seconds: ArrayLike,
        joules: ArrayLike,
        t_start: ArrayLike,
        t_end: ArrayLike,
        phase: str = "train",
    ) -> None:
        """Record one or a batch of transmissions; energy is charged to the sender ``src``."""
        srcs = np.asarray(src, dtype=np.int64)
        dirs = np.asarray(direction)
        codes = np.where(dirs == "up", DIRECTION_CODE["up"], DIRECTION_CODE["down"]).astype(np.int8)
        if not np.all((dirs == "up") | (dirs == "down")):
            raise ValueError(f"direction must be 'up' or 'down', got {np.unique(dirs).tolist()}")
        self._append(
            {
                "kind": KIND_CODE["transmit"],
                "round": round,
                "node": srcs,
                "tier": self._node_tiers[srcs],
                "src": srcs,
                "dst": dst,
                "direction": codes,
                "flops": 0.0,
                "bytes": nbytes,
                "seconds": seconds,
                "joules": joules,
                "t_start": t_start,
                "t_end": t_end,
                "phase": self._code_phase(phase),
            }
        )

    # ------------------------------------------------------------------ queries
    def _col(self, name: str) -> np.ndarray:
        return self._cols[name][: self._size]

    def _summarize(self, mask: np.ndarray | None) -> dict[str, Any]:
        cols = {n: (self._col(n) if mask is None else self._col(n)[mask]) for n in _COLUMNS}
        is_comp = cols["kind"] == KIND_CODE["compute"]
        up = cols["direction"] == DIRECTION_CODE["up"]
        down = cols["direction"] == DIRECTION_CODE["down"]
        per_event = {
            "energy_j": cols["joules"],
            "compute_j": np.where(is_comp, cols["joules"], 0.0),
            "transmit_j": np.where(is_comp, 0.0, cols["joules"]),
            "bytes_up": np.where(up, cols["bytes"], 0.0),
            "bytes_down": np.where(down, cols["bytes"], 0.0),
            "flops": cols["flops"],
        }

        def grouped(codes: np.ndarray, count: int) -> np.ndarray:
            return np.stack([np.bincount(codes, weights=v, minlength=count) for v in per_event.values()])

        out: dict[str, Any] = {m: float(v.sum()) for m, v in per_event.items()}
        tier_sums = grouped(cols["tier"].astype(np.int64), len(TIER_ORDER))
        out["by_tier"] = {
            t.value: {m: float(tier_sums[i, j]) for i, m in enumerate(METRICS)}
            for j, t in enumerate(TIER_ORDER)
        }
        phase_sums = grouped(cols["phase"].astype(np.int64), len(self._phases))
        present = np.unique(cols["phase"])
        out["by_phase"] = {
            self._phases[p]: {m: float(phase_sums[i, p]) for i, m in enumerate(METRICS)} for p in present
        }
        out["events"] = int(cols["kind"].size)
        if mask is None:
            out["delay_s"] = float(cols["t_end"].max()) if cols["t_end"].size else 0.0
        else:
            out["delay_s"] = float(cols["t_end"].max() - cols["t_start"].min()) if cols["t_end"].size else 0.0
        return out

    def totals(self) -> dict[str, Any]:
        """Run totals: energy_j, compute_j, transmit_j, bytes_up, bytes_down, flops, by_tier (bytes are those
        *sent* by that tier), by_phase, events and delay_s (the virtual clock's now = latest event end)."""
        return self._summarize(None)

    def round_totals(self, round_: int) -> dict[str, Any]:
        """Totals of one round; delay_s is its span (latest end minus earliest start of its events)."""
        return self._summarize(self._col("round") == round_)

    def rounds(self) -> np.ndarray:
        """Sorted distinct round numbers with at least one event."""
        return np.unique(self._col("round"))

    def events(self, round: int | None = None) -> np.ndarray:
        """Events as a structured numpy array with readable string fields (kind, tier, direction, phase)."""
        mask = slice(None) if round is None else self._col("round") == round
        cols = {n: self._col(n)[mask] for n in _COLUMNS}
        width = max([len(p) for p in self._phases] + [1])
        dtype = [
            (n, "U8" if n in ("kind", "tier", "direction") else (f"U{width}" if n == "phase" else dt))
            for n, dt in _COLUMNS.items()
        ]
        out = np.empty(cols["kind"].size, dtype=dtype)
        labels = {
            "kind": np.array(KINDS),
            "tier": np.array([t.value for t in TIER_ORDER]),
            "direction": np.array(DIRECTIONS),
            "phase": np.array(self._phases or [""]),
        }
        for n, col in cols.items():
            out[n] = labels[n][col] if n in labels else col
        return out

    def event_dicts(self, round: int | None = None) -> list[dict[str, Any]]:
        """Events as a list of plain dicts (JSON-able); meant for small logs and tests."""
        arr = self.events(round)
        names = arr.dtype.names or ()
        return [{n: row[n].item() for n in names} for row in arr]

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Plain python/numpy state for checkpoints."""
        return {
            "version": STATE_VERSION,
            "node_tiers": [TIER_ORDER[c].value for c in self._node_tiers],
            "phases": list(self._phases),
            "columns": {n: self._col(n).copy() for n in _COLUMNS},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict`` output, replacing the current events."""
        try:
            if state["version"] != STATE_VERSION:
                raise DataError(f"ledger state: version {state['version']!r}, expected {STATE_VERSION}")
            saved = state["columns"]
            columns = {n: np.asarray(saved[n], dtype=dt) for n, dt in _COLUMNS.items() if n != "batch"}
            # checkpoints written before the batch column: one batch per event (each replayed on its own)
            count = next(iter(columns.values())).shape[0] if columns else 0
            columns["batch"] = np.asarray(saved.get("batch", np.arange(count)), dtype=np.int64)
            phases = [str(p) for p in state["phases"]]
            tiers = np.array([TIER_CODE[Tier(t)] for t in state["node_tiers"]], dtype=np.int8)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"ledger state: malformed ({exc!r})", hint="pass the dict written by Ledger.state_dict()"
            ) from exc
        sizes = {c.shape for c in columns.values()}
        if len(sizes) != 1 or len(next(iter(sizes))) != 1:
            raise DataError("ledger state: columns differ in length", hint="the checkpoint is corrupt")
        size = next(iter(sizes))[0]
        if size and int(columns["phase"].max()) >= len(phases):
            raise DataError(
                "ledger state: phase codes exceed the phase list", hint="the checkpoint is corrupt"
            )
        self._node_tiers, self._phases = tiers, phases
        self._phase_code = {p: i for i, p in enumerate(phases)}
        self._cols = {
            n: np.concatenate([c, np.empty(INITIAL_CAPACITY, dtype=c.dtype)]) for n, c in columns.items()
        }
        self._size = size
        self._batches = int(columns["batch"].max()) + 1 if size else 0
