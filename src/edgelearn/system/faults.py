"""Fault models: device dropout (probability or availability trace), stragglers cut by a round deadline,
lost uplink transmissions and edge-server outages.

Every random draw comes from ``Seeds(seed).rng("faults", round, stream, ...)`` over *all* node ids at once,
so which nodes fail depends only on the seed, the round and the node id: every executor, and a run resumed
from a checkpoint, sees the same faults. Per-round counters live in :class:`FaultModel` and travel with the
system model's checkpoint state.

**Availability trace** (``faults.availability_trace``): a UTF-8 CSV file. The first row that is not blank
and does not start with ``#`` is the header ``round,node,available``; every later row gives a round
(integer >= 1), a device (its node name, e.g. ``dev3``, or failing that its integer node id) and ``1``
(available) or ``0`` (unavailable). A device not listed for a round is available in that round. A
``(round, device)`` pair may appear once. Any other content is a :class:`DataError` naming file and line.

**Deadline and straggler accounting.** A device's predicted time is its local training (planned samples x
training FLOPs at f_max) plus its upload over its own link at p_max in that round; the clock for the
deadline starts when the device holds the model (after the broadcast). With ``deadline_factor`` the deadline
is that factor times the median predicted time over the devices taking part. A device predicted to exceed
the deadline is a straggler: it is cut off *at* the deadline and nothing of it is aggregated. It is charged
exactly what it spends until then: compute for ``min(compute_s, deadline)`` seconds (that share of its
FLOPs, phase ``straggler_train``) and, when its training ended in time, ``deadline - compute_s`` seconds of
upload (that share of its bytes, phase ``straggler_upload``). Energy is linear in FLOPs at a fixed clock and
in bytes at a fixed power and rate, so these partial charges are exact.

**Lost uploads.** An upload lost with probability ``uplink_loss`` (a device's transmission over its own
link; wired backhaul is reliable) is charged its full energy and delay (phase ``lost_upload``) and delivers
nothing; relays above it forward nothing for it.

**Edge outages.** While an edge server is down its subtree cannot reach the cloud: HierFAVG's devices under
it sit out and its model is not aggregated; FedAvg's relays through it fail, so its devices sit out too.
:meth:`FaultModel.failed_edges` is the hook other algorithms query: FedAgg re-parents a failed edge's devices
to the least-loaded live sibling edge and moves them back when it returns; FedGKT, FedDKC and DemLearn let
them sit out, as HierFAVG does.

Algorithms apply all of this through one object per round, :class:`edgelearn.system.screen.RoundScreen`
(who sits out, the deadline and lost-upload screen, the charges above, the round's counters).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgelearn.errors import ConfigError, DataError
from edgelearn.seeding import Seeds
from edgelearn.system.topology import ROOT_ID, Tier, Topology

if TYPE_CHECKING:  # pragma: no cover - typing only
    from edgelearn.config import FaultsConfig

TRACE_HEADER: tuple[str, ...] = ("round", "node", "available")
"""Columns of an availability trace, in order."""

STREAM_DROPOUT = 0
STREAM_UPLINK = 1
"""Sub-keys after the round in ``Seeds.rng("faults", round, stream, ...)``."""

COUNTERS: tuple[str, ...] = ("dropped", "edge_down", "straggled", "lost", "arrived", "edges_failed", "empty")
"""Per-round counters: devices unavailable (dropout/trace), devices cut off by a failed edge, uploads cut by
the deadline, uploads lost, uploads that arrived, edge servers down, and 1 if nothing arrived (the previous
model was kept). Straggled/lost/arrived count device uploads (HierFAVG has kappa2 per round)."""

PHASE_STRAGGLER_TRAIN = "straggler_train"
PHASE_STRAGGLER_UPLOAD = "straggler_upload"
PHASE_LOST_UPLOAD = "lost_upload"
"""Ledger phases of energy spent on updates that never arrived."""

_TRACE_HINT = (
    "write a CSV whose header is `round,node,available` followed by rows such as `3,dev7,0` "
    "(round >= 1, a device name or node id, 1 = available / 0 = unavailable)"
)


@dataclass(frozen=True)
class EdgeOutage:
    """Edge server ``edge`` (node id) is down in rounds ``start_round..end_round`` (both included)."""

    edge: int
    start_round: int
    end_round: int

    def active(self, round_: int) -> bool:
        """Whether the edge is down in ``round_``."""
        return self.start_round <= round_ <= self.end_round


class AvailabilityTrace:
    """Which devices are unavailable in which round, read from a CSV trace (format in the module doc)."""

    def __init__(self, unavailable: Mapping[int, Iterable[int]], source: str = "<trace>") -> None:
        self.source = source
        self._down = {int(r): frozenset(int(n) for n in nodes) for r, nodes in unavailable.items()}

    def unavailable(self, round_: int) -> frozenset[int]:
        """Node ids the trace marks unavailable in ``round_``."""
        return self._down.get(int(round_), frozenset())

    @classmethod
    def load(cls, path: str | Path, topology: Topology) -> AvailabilityTrace:
        """Read and validate a trace file against ``topology``; any malformed line is a DataError."""
        p = Path(path)
        if not p.is_file():
            raise DataError(
                f"availability trace {p} does not exist", hint="set faults.availability_trace to a CSV file"
            )
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(
                f"availability trace {p} cannot be read as UTF-8 text: {exc}", hint=_TRACE_HINT
            ) from None
        return cls.parse(text, topology, source=str(p))

    @classmethod
    def parse(cls, text: str, topology: Topology, *, source: str = "<trace>") -> AvailabilityTrace:
        """Parse trace text (see the module doc); errors name ``source`` and the 1-based line."""
        names = {n.name: n.id for n in topology.nodes}
        down: dict[int, set[int]] = {}
        seen: set[tuple[int, int]] = set()
        header_seen = False
        reader = csv.reader(io.StringIO(text))
        try:
            rows = [(reader.line_num, row) for row in reader]  # line_num: physical line ending the row
        except csv.Error as exc:
            raise DataError(
                f"availability trace {source}, line {reader.line_num}: not valid CSV ({exc})",
                hint=_TRACE_HINT,
            ) from None
        for line, row in rows:
            cells = [c.strip() for c in row]
            if not any(cells) or cells[0].startswith("#"):
                continue
            where = f"availability trace {source}, line {line}"
            if not header_seen:
                if tuple(c.lower() for c in cells) != TRACE_HEADER:
                    raise DataError(
                        f"{where}: expected the header `round,node,available`, got {row!r}", hint=_TRACE_HINT
                    )
                header_seen = True
                continue
            if len(cells) != len(TRACE_HEADER):
                raise DataError(
                    f"{where}: expected 3 fields (round,node,available), got {len(cells)}", hint=_TRACE_HINT
                )
            round_ = _parse_int(cells[0])
            if round_ is None or round_ < 1:
                raise DataError(f"{where}: round {cells[0]!r} is not an integer >= 1", hint=_TRACE_HINT)
            node = _resolve_node(cells[1], names, topology)
            if node is None:
                raise DataError(
                    f"{where}: node {cells[1]!r} is not a device of the topology", hint=_TRACE_HINT
                )
            if cells[2] not in ("0", "1"):
                raise DataError(f"{where}: available must be 0 or 1, got {cells[2]!r}", hint=_TRACE_HINT)
            if (round_, node) in seen:
                raise DataError(
                    f"{where}: round {round_} lists node {cells[1]!r} a second time",
                    hint="give each (round, node) pair at most one row",
                )
            seen.add((round_, node))
            if cells[2] == "0":
                down.setdefault(round_, set()).add(node)
        if not header_seen:
            raise DataError(
                f"availability trace {source}: no header row `round,node,available`", hint=_TRACE_HINT
            )
        return cls(down, source)


def _parse_int(text: str) -> int | None:
    try:
        return int(text, 10)
    except ValueError:
        return None


def _resolve_node(token: str, names: Mapping[str, int], topology: Topology) -> int | None:
    """A device's node id from its name or integer id; None if it names no device."""
    node = names.get(token)
    if node is None:
        node = _parse_int(token)
    if node is None or not 0 <= node < topology.num_nodes or topology.tier(node) is not Tier.DEVICE:
        return None
    return node


class FaultModel:
    """Seeded device, link and edge faults over a topology, plus per-round counters.

    ``dropout`` and ``uplink_loss`` are probabilities; ``deadline_s`` (absolute) or ``deadline_factor`` (x the
    median predicted compute + upload time) sets the straggler deadline; ``outages`` lists edge downtimes.
    The default instance injects no fault.
    """

    def __init__(
        self,
        topology: Topology,
        seeds: Seeds | None = None,
        *,
        dropout: float = 0.0,
        trace: AvailabilityTrace | None = None,
        deadline_s: float | None = None,
        deadline_factor: float | None = None,
        uplink_loss: float = 0.0,
        outages: Sequence[EdgeOutage] = (),
    ) -> None:
        for name, p in (("dropout", dropout), ("uplink_loss", uplink_loss)):
            if not 0.0 <= float(p) <= 1.0:
                raise ConfigError(f"faults.{name}: got {p!r}; need a probability in [0, 1]")
        for name, v in (("deadline_s", deadline_s), ("deadline_factor", deadline_factor)):
            if v is not None and not float(v) > 0:
                raise ConfigError(f"faults.{name}: got {v!r}; need a number > 0 (or leave it unset)")
        if deadline_s is not None and deadline_factor is not None:
            raise ConfigError("faults: give at most one of `deadline_s` and `deadline_factor`")
        if (dropout > 0 or uplink_loss > 0) and seeds is None:
            raise ValueError("FaultModel: random faults need seeds")
        for outage in outages:
            if topology.tier(outage.edge) is not Tier.EDGE:
                raise ConfigError(f"faults.edge_failures: node {outage.edge} is not an edge server")
        self.topology = topology
        self.seeds = seeds
        self.dropout = float(dropout)
        self.trace = trace
        self.deadline_s = None if deadline_s is None else float(deadline_s)
        self.deadline_factor = None if deadline_factor is None else float(deadline_factor)
        self.uplink_loss = float(uplink_loss)
        self.outages = tuple(outages)
        self._counts: dict[int, np.ndarray] = {}

    @classmethod
    def from_config(cls, cfg: FaultsConfig, topology: Topology, seeds: Seeds) -> FaultModel:
        """Build from the ``faults`` config section; edges are resolved by id or name, the trace is read."""
        names = {n.name: n.id for n in topology.nodes}
        outages = []
        for i, item in enumerate(cfg.edge_failures):
            where = f"faults.edge_failures[{i}].edge"
            edge = names.get(item.edge) if isinstance(item.edge, str) else int(item.edge)
            if edge is None or not 0 <= edge < topology.num_nodes or topology.tier(edge) is not Tier.EDGE:
                edges = [topology.node(e).name for e in topology.edges]
                raise ConfigError(
                    f"`{where}`: {item.edge!r} is not an edge server of the topology",
                    hint=f"use an edge's node id or name; edges: {edges}",
                )
            outages.append(EdgeOutage(edge, int(item.start_round), int(item.end_round)))
        trace = None
        if cfg.availability_trace is not None:
            trace = AvailabilityTrace.load(cfg.availability_trace, topology)
        return cls(
            topology,
            seeds,
            dropout=cfg.dropout,
            trace=trace,
            deadline_s=cfg.deadline_s,
            deadline_factor=cfg.deadline_factor,
            uplink_loss=cfg.uplink_loss,
            outages=outages,
        )

    @property
    def enabled(self) -> bool:
        """Whether any fault can occur (algorithms report fault counters only then)."""
        return bool(
            self.dropout > 0
            or self.trace is not None
            or self.deadline_s is not None
            or self.deadline_factor is not None
            or self.uplink_loss > 0
            or self.outages
        )

    # ------------------------------------------------------------------ devices and edges
    def _draw(self, round_: int, *keys: int) -> np.ndarray:
        assert self.seeds is not None
        return self.seeds.rng("faults", int(round_), *keys).random(self.topology.num_nodes)

    def available(self, round_: int, nodes: Sequence[int] | np.ndarray) -> np.ndarray:
        """Mask over ``nodes``: not dropped by the dropout draw of ``round_`` nor marked 0 by the trace."""
        ids = np.asarray(nodes, dtype=np.int64)
        ok = np.ones(ids.shape, dtype=bool)
        if self.dropout > 0:
            ok &= self._draw(round_, STREAM_DROPOUT)[ids] >= self.dropout
        if self.trace is not None:
            down = self.trace.unavailable(round_)
            if down:
                ok &= ~np.isin(ids, np.fromiter(down, dtype=np.int64))
        return ok

    def failed_edges(self, round_: int) -> list[int]:
        """Edge servers down in ``round_``, sorted (the hook FedAgg's re-parenting queries)."""
        return sorted({o.edge for o in self.outages if o.active(round_)})

    def reachable(
        self, round_: int, nodes: Sequence[int] | np.ndarray, *, target: int = ROOT_ID
    ) -> np.ndarray:
        """Mask over ``nodes``: no failed edge on the path from the node up to ``target`` (both included)."""
        failed = set(self.failed_edges(round_))
        ids = np.asarray(nodes, dtype=np.int64)
        if not failed:
            return np.ones(ids.shape, dtype=bool)
        out = np.empty(ids.shape, dtype=bool)
        for i, node in enumerate(ids.tolist()):
            path = self.topology.path_to_root(node)
            path = path[: path.index(target) + 1] if target in path else path
            out[i] = not failed.intersection(path)
        return out

    def uplink_lost(self, round_: int, nodes: Sequence[int] | np.ndarray, step: int = 0) -> np.ndarray:
        """Mask over ``nodes``: the upload of ``round_`` (sub-step ``step``) is lost on the node's link."""
        ids = np.asarray(nodes, dtype=np.int64)
        if self.uplink_loss <= 0:
            return np.zeros(ids.shape, dtype=bool)
        return self._draw(round_, STREAM_UPLINK, int(step))[ids] < self.uplink_loss

    def deadline(self, predicted_s: np.ndarray) -> float:
        """The round deadline for these predicted compute + upload times (inf when none is set)."""
        if self.deadline_s is not None:
            return self.deadline_s
        if self.deadline_factor is not None and np.size(predicted_s):
            return self.deadline_factor * float(np.median(predicted_s))
        return float("inf")

    # ------------------------------------------------------------------ counters
    def record(self, round_: int, **counts: int) -> None:
        """Set the counters of ``round_`` (names from ``COUNTERS``, missing ones 0); re-recording replaces."""
        unknown = set(counts) - set(COUNTERS)
        if unknown:
            raise ValueError(f"unknown fault counters {sorted(unknown)}; use {list(COUNTERS)}")
        self._counts[int(round_)] = np.array([int(counts.get(c, 0)) for c in COUNTERS], dtype=np.int64)

    def round_counts(self, round_: int) -> dict[str, int]:
        """The counters recorded for ``round_`` (zeros if none)."""
        row = self._counts.get(int(round_), np.zeros(len(COUNTERS), dtype=np.int64))
        return {c: int(v) for c, v in zip(COUNTERS, row, strict=True)}

    def totals(self) -> dict[str, int]:
        """Counters summed over all recorded rounds (``empty`` = rounds where nothing arrived)."""
        total = np.zeros(len(COUNTERS), dtype=np.int64)
        for row in self._counts.values():
            total += row
        out = {c: int(v) for c, v in zip(COUNTERS, total, strict=True)}
        out["rounds_with_edge_failure"] = int(
            sum(1 for row in self._counts.values() if row[COUNTERS.index("edges_failed")])
        )
        return out

    def state_dict(self) -> dict[str, Any]:
        """Checkpointable counters: an int64 array of rows ``[round, *COUNTERS]``."""
        rows = [np.r_[r, self._counts[r]] for r in sorted(self._counts)]
        table = np.array(rows, dtype=np.int64).reshape(len(rows), len(COUNTERS) + 1)
        return {"counters": list(COUNTERS), "table": table}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        try:
            table = np.asarray(state["table"], dtype=np.int64)
            names = [str(c) for c in state["counters"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"fault state: malformed ({exc!r})", hint="the checkpoint is corrupt") from None
        if names != list(COUNTERS) or table.ndim != 2 or table.shape[1] != len(COUNTERS) + 1:
            raise DataError("fault state: unexpected counters or shape", hint="the checkpoint is corrupt")
        self._counts = {int(row[0]): row[1:].copy() for row in table}


__all__ = [
    "COUNTERS",
    "PHASE_LOST_UPLOAD",
    "PHASE_STRAGGLER_TRAIN",
    "PHASE_STRAGGLER_UPLOAD",
    "TRACE_HEADER",
    "AvailabilityTrace",
    "EdgeOutage",
    "FaultModel",
]
