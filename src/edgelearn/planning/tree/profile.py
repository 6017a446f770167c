"""A round's work profile, read back from the ledger: the compute and transfer batches of one round in the
order the virtual clock ran them, as a dependency graph the tree planner optimizes over.

Every algorithm reports its work to the system model as batches ("these nodes computed F FLOPs", "these links
carried B bytes"); the ledger numbers each batch (its ``batch`` column). Replaying the batches in order
through a fresh clock reproduces the round's delay exactly, at any clocks and powers: so a profile recorded
once serves any algorithm, built-in or plugged in, without the planner knowing what the algorithm does.

The clock's rules (``system/ledger.py``, ``VirtualClock``), which :meth:`RoundProfile.graph` turns into
precedence pairs: a compute event on node n starts when n is ready and makes n ready at its end; a transfer
starts when its sender is ready (every transfer of one batch at that same instant: FDMA sub-bands), and makes
both the sender and the receiver ready no earlier than its end. A round starts with every node ready.

Per-round variation is not averaged away: a profile is one recorded round (by default round 1). Rounds whose
work differs (client sampling, fading, faults) run at the same operating point and report their measured
energy and delay beside the prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgelearn.errors import ConfigError
from edgelearn.system import OperatingPoint, SystemModel
from edgelearn.system.ledger import Ledger, VirtualClock


@dataclass(frozen=True)
class Batch:
    """One record call of the round: compute (``nodes``, ``flops``) or transmit (``src``, ``dst``,
    ``nbytes``); ``phase`` names it in the replayed ledger."""

    kind: str
    phase: str
    nodes: np.ndarray
    flops: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    nbytes: np.ndarray


@dataclass(frozen=True)
class Graph:
    """The round as events with precedence: event ``e`` starts no earlier than the end of every event
    ``before[i]`` with ``after[i] == e``. Events are numbered in replay order; ``kind`` is 0 for compute (on
    ``node``) and 1 for transmit (``src`` -> ``dst``)."""

    kind: np.ndarray
    node: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    flops: np.ndarray
    nbytes: np.ndarray
    before: np.ndarray
    after: np.ndarray

    @property
    def size(self) -> int:
        """Number of events."""
        return int(self.kind.size)

    def finish_times(self, seconds: np.ndarray) -> np.ndarray:
        """Each event's end time when events take ``seconds`` (longest path through the precedence pairs,
        which are listed in topological order): equals the virtual clock's times."""
        end = np.asarray(seconds, dtype=np.float64).copy()
        start = np.zeros_like(end)
        for b, a in zip(self.before.tolist(), self.after.tolist()):
            if end[b] > start[a]:
                start[a] = end[b]
                end[a] = start[a] + seconds[a]
        return end


@dataclass(frozen=True)
class RoundProfile:
    """One round's batches in clock order (:meth:`from_ledger`), and what they cost at an operating point
    (:meth:`replay`)."""

    round: int
    num_nodes: int
    batches: tuple[Batch, ...]

    @classmethod
    def from_ledger(cls, ledger: Ledger, round_: int, num_nodes: int) -> RoundProfile:
        """The batches of ``round_`` in the order they were recorded; ConfigError if it recorded none."""
        events = ledger.events(round_)
        if events.size == 0:
            raise ConfigError(
                f"plan: round {round_} recorded no work to plan",
                hint="set plan.profile_round to a round the algorithm runs (rounds start at 1)",
            )
        batches = []
        ids = events["batch"]
        cuts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        for lo, hi in zip(cuts, np.r_[cuts[1:], ids.size]):
            ev = events[lo:hi]
            compute = ev["kind"][0] == "compute"
            batches.append(
                Batch(
                    kind="compute" if compute else "transmit",
                    phase=str(ev["phase"][0]),
                    nodes=ev["node"].astype(np.int64),
                    flops=ev["flops"].astype(np.float64),
                    src=ev["src"].astype(np.int64),
                    dst=ev["dst"].astype(np.int64),
                    nbytes=ev["bytes"].astype(np.float64),
                )
            )
        return cls(int(round_), int(num_nodes), tuple(batches))

    def replay(self, system: SystemModel, point: OperatingPoint | None) -> dict[str, Any]:
        """Charge the batches again on a fresh ledger and clock sharing ``system``'s tree, hardware and
        channel, at ``point`` (None: full clock and p_max): the energy (J), delay (s) and FLOPs/bytes this
        round would cost. The same code path as execution, so a run at ``point`` records exactly this."""
        scratch, delay = self.charge(system, point)
        totals = scratch.ledger.round_totals(self.round)
        return {
            "energy_j": float(totals["energy_j"]),
            "delay_s": float(delay),
            "compute_j": float(totals["compute_j"]),
            "transmit_j": float(totals["transmit_j"]),
            "events": int(totals["events"]),
        }

    def charge(self, system: SystemModel, point: OperatingPoint | None) -> tuple[SystemModel, float]:
        """The batches charged at ``point`` on a scratch system (a fresh ledger and clock sharing ``system``'s
        tree, hardware and a copy of its channel): the scratch system, its ledger holding the round's events,
        and the round's delay (s)."""
        scratch = SystemModel(
            system.topology,
            system.profiles,
            system.channel.clone(),  # the point's bandwidth shares must not reach the caller's channel
            ledger=Ledger([n.tier for n in system.topology.nodes]),
            clock=VirtualClock(system.topology.num_nodes),
        )
        scratch.set_operating_point(point)
        scratch.begin_round(self.round)
        for b in self.batches:
            if b.kind == "compute":
                scratch.compute(b.nodes, b.flops, phase=b.phase)
            else:
                scratch.transmit(b.src, b.dst, b.nbytes, phase=b.phase)
        return scratch, scratch.end_round()

    def graph(self) -> Graph:
        """The events and their precedence pairs under the clock's rules (module docstring)."""
        kinds, nodes, srcs, dsts, flops, nbytes = [], [], [], [], [], []
        before: list[int] = []
        after: list[int] = []
        ready: list[list[int]] = [[] for _ in range(self.num_nodes)]  # events a node waits for
        count = 0
        for b in self.batches:
            if b.kind == "compute":
                for n, f in zip(b.nodes.tolist(), b.flops.tolist()):
                    e = count
                    count += 1
                    kinds.append(0)
                    nodes.append(n)
                    srcs.append(-1)
                    dsts.append(-1)
                    flops.append(f)
                    nbytes.append(0.0)
                    before.extend(ready[n])
                    after.extend([e] * len(ready[n]))
                    ready[n] = [e]
                continue
            start = {s: list(ready[s]) for s in set(b.src.tolist())}  # every transfer starts at batch time
            sent: dict[int, list[int]] = {}
            arrived: dict[int, list[int]] = {}
            for s, d, nb in zip(b.src.tolist(), b.dst.tolist(), b.nbytes.tolist()):
                e = count
                count += 1
                kinds.append(1)
                nodes.append(s)
                srcs.append(s)
                dsts.append(d)
                flops.append(0.0)
                nbytes.append(nb)
                before.extend(start[s])
                after.extend([e] * len(start[s]))
                sent.setdefault(s, []).append(e)
                arrived.setdefault(d, []).append(e)
            for n in set(sent) | set(arrived):
                # a sender's transfers end after it was ready, so they replace its old waits
                kept = sent[n] if n in sent else ready[n]
                ready[n] = [*kept, *arrived.get(n, [])]
        order = np.lexsort((np.asarray(before), np.asarray(after)))  # by the later event: topological
        return Graph(
            kind=np.asarray(kinds, dtype=np.int8),
            node=np.asarray(nodes, dtype=np.int64),
            src=np.asarray(srcs, dtype=np.int64),
            dst=np.asarray(dsts, dtype=np.int64),
            flops=np.asarray(flops, dtype=np.float64),
            nbytes=np.asarray(nbytes, dtype=np.float64),
            before=np.asarray(before, dtype=np.int64)[order],
            after=np.asarray(after, dtype=np.int64)[order],
        )
