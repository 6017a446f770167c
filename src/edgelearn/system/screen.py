"""One round's fault screen (system/faults.py): who sits out, who straggles past the deadline, whose upload
is lost, what the updates that never arrived cost, and the round's counters.

Every algorithm walks the same steps with the fault model, so they live here once::

    screen = RoundScreen.open(system, round_, candidates)   # availability + reachability: who sits out
    ... broadcast to screen.active ...
    screen.screen(flops, nbytes)                            # deadline stragglers and lost uploads
    ... train screen.trainers, upload screen.arrived ...
    screen.charge()                                         # what stragglers and lost uploads spent
    stats.update(screen.close())                            # record the counters; {} without faults

:meth:`RoundScreen.screen` may run several times in one round (HierFAVG's edge rounds: ``step`` keys each
loss draw); its counters add up over the calls and the node arrays answer for the latest one.
:meth:`RoundScreen.retry_uploads` replaces it where a lost upload may be re-sent instead (two-stage's
retransmissions, no deadline). :meth:`RoundScreen.close` takes overrides for algorithms that count a
counter their own way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgelearn.system.faults import (
    COUNTERS,
    PHASE_LOST_UPLOAD,
    PHASE_STRAGGLER_TRAIN,
    PHASE_STRAGGLER_UPLOAD,
    FaultModel,
)
from edgelearn.system.model import SystemModel
from edgelearn.system.topology import ROOT_ID

Values = float | Sequence[float] | np.ndarray

KEPT_PREVIOUS_MODEL = "kept_previous_model"
"""The round-stats key that replaces the ``empty`` counter: nothing arrived, the previous model was kept."""


@dataclass(frozen=True)
class UploadScreen:
    """One screen of the active devices: the planned work and payload of each, the predicted compute and
    upload seconds, the deadline, and which straggle past it or lose their upload (masks over ``nodes``).
    ``timed`` is False for :meth:`RoundScreen.retry_uploads`, whose tries the caller charges itself."""

    nodes: np.ndarray
    flops: np.ndarray
    nbytes: np.ndarray
    compute_s: np.ndarray
    upload_s: np.ndarray
    deadline_s: float
    straggler: np.ndarray
    lost: np.ndarray
    timed: bool = True

    @property
    def trained(self) -> np.ndarray:
        """Mask of devices that finish local training and send their whole update (arrived or lost)."""
        return ~self.straggler

    @property
    def arrived(self) -> np.ndarray:
        """Mask of devices whose update reaches its receiver."""
        return ~self.straggler & ~self.lost


class RoundScreen:
    """The faults of one round over ``candidates`` (device node ids), opened by :meth:`open`.

    Masks (``available``, ``reachable``, ``active_mask``) run over ``candidates``; the upload masks
    (``straggler_mask``, ``lost_mask``, ``trained_mask``, ``arrived_mask``) over ``active``, in its order.
    """

    def __init__(
        self,
        system: SystemModel,
        round_: int,
        candidates: np.ndarray,
        available: np.ndarray,
        reachable: np.ndarray,
        *,
        edge_outages: bool = True,
    ) -> None:
        self.system = system
        self.edge_outages = edge_outages
        self.round = int(round_)
        self.candidates = candidates
        self.available = available
        self.reachable = reachable
        self.active_mask = available & reachable
        self.active = candidates[self.active_mask]
        self._upload: UploadScreen | None = None
        self._charged = False
        self._per_device = False
        """Whether the latest screen's payloads were given per device (then stragglers are charged one after
        another, each its compute then its partial upload, as the ledger has always recorded them)."""
        self._closed = False
        self._tally = {"straggled": 0, "lost": 0, "arrived": 0}

    @classmethod
    def open(
        cls,
        system: SystemModel,
        round_: int,
        candidates: Sequence[int] | np.ndarray,
        *,
        target: int = ROOT_ID,
        edge_outages: bool = True,
    ) -> RoundScreen:
        """Screen ``candidates`` for ``round_``: unavailable devices (dropout, trace) and devices with a
        failed edge on their path up to ``target`` sit the round out; the rest are :attr:`active`.

        ``edge_outages=False`` is for an algorithm that does not model edge outages (two-stage: its plan
        fixes every round of its one server): every candidate counts as reachable and no edge as failed."""
        ids = np.asarray(candidates, dtype=np.int64)
        faults = system.faults
        available = faults.available(round_, ids)
        if edge_outages:
            reachable = faults.reachable(round_, ids, target=target)
        else:
            reachable = np.ones(ids.shape, dtype=bool)
        return cls(system, round_, ids, available, reachable, edge_outages=edge_outages)

    # ------------------------------------------------------------------ who sits out
    @property
    def faults(self) -> FaultModel:
        """The system's fault model."""
        return self.system.faults

    @property
    def sitting_out(self) -> np.ndarray:
        """Candidates that sit the round out (unavailable or cut off by a failed edge), in candidate order."""
        return self.candidates[~self.active_mask]

    @property
    def failed_edges(self) -> list[int]:
        """Edge servers down this round, sorted (none when opened with ``edge_outages=False``)."""
        return self.faults.failed_edges(self.round) if self.edge_outages else []

    # ------------------------------------------------------------------ deadline and lost uploads
    def screen(self, flops: Values, nbytes: Values, *, step: int = 0) -> RoundScreen:
        """Predict each active device's compute (``flops`` at full speed) and upload (``nbytes`` over its
        own link at p_max this round), cut those past the deadline and draw lost uploads (``step`` keys the
        draw: HierFAVG's edge round). ``flops`` and ``nbytes`` are scalars or one value per active device.
        The deadline clock starts when the device holds the model. Returns ``self``."""
        self._next("screen")
        ids = self.active
        work = np.broadcast_to(np.asarray(flops, dtype=np.float64), ids.shape)
        sizes = np.broadcast_to(np.asarray(nbytes, dtype=np.float64), ids.shape)
        self._per_device = np.ndim(nbytes) > 0
        compute_s = self.system.predict_compute_seconds(ids, work)
        upload_s = self.system.predict_upload_seconds(ids, sizes)
        deadline = self.faults.deadline(compute_s + upload_s)
        straggler = compute_s + upload_s > deadline
        lost = self.faults.uplink_lost(self.round, ids, step) & ~straggler
        self._settle(
            UploadScreen(ids, work, sizes, compute_s, upload_s, deadline, straggler, lost), int(lost.sum())
        )
        return self

    def retry_uploads(self, retries: int) -> list[np.ndarray]:
        """Draw each active device's upload, re-sending a lost one up to ``retries`` times (try ``k`` keyed
        ``step=k``; no deadline). Returns the mask over :attr:`active` of who sends in each try, for the
        caller to charge; afterwards ``lost_mask`` marks the uploads lost on every try. The ``lost``
        counter counts lost tries."""
        self._next("retry_uploads")
        ids = self.active
        arrived = np.zeros(ids.shape, dtype=bool)
        tries: list[np.ndarray] = []
        for attempt in range(int(retries) + 1):
            sending = ~arrived
            if not sending.any():
                break
            tries.append(sending)
            lost = self.faults.uplink_lost(self.round, ids[sending], step=attempt)
            arrived[np.flatnonzero(sending)[~lost]] = True
        zeros = np.zeros(ids.shape, dtype=np.float64)
        none = np.zeros(ids.shape, dtype=bool)
        failed_tries = sum(int(t.sum()) for t in tries) - int(arrived.sum())
        self._settle(
            UploadScreen(ids, zeros, zeros, zeros, zeros, float("inf"), none, ~arrived, timed=False),
            failed_tries,
        )
        return tries

    def _next(self, what: str) -> None:
        if self._closed:
            raise RuntimeError(f"RoundScreen.{what}: the round's screen is closed")

    def _settle(self, upload: UploadScreen, lost: int) -> None:
        """Make ``upload`` the latest screen (not yet charged) and add its counts (``lost`` uploads)."""
        self._upload, self._charged = upload, False
        self._tally["straggled"] += int(upload.straggler.sum())
        self._tally["lost"] += lost
        self._tally["arrived"] += int(upload.arrived.sum())

    @property
    def upload(self) -> UploadScreen:
        """The latest screen (RuntimeError before :meth:`screen` or :meth:`retry_uploads`)."""
        if self._upload is None:
            raise RuntimeError("RoundScreen: call screen() (or retry_uploads()) first")
        return self._upload

    @property
    def straggler_mask(self) -> np.ndarray:
        """Mask over :attr:`active`: cut off by the deadline."""
        return self.upload.straggler

    @property
    def lost_mask(self) -> np.ndarray:
        """Mask over :attr:`active`: trained, but the upload was lost."""
        return self.upload.lost

    @property
    def trained_mask(self) -> np.ndarray:
        """Mask over :attr:`active`: finished training and sent the whole update (arrived or lost)."""
        return self.upload.trained

    @property
    def arrived_mask(self) -> np.ndarray:
        """Mask over :attr:`active`: the update reached its receiver."""
        return self.upload.arrived

    @property
    def stragglers(self) -> np.ndarray:
        """Active devices cut off by the deadline."""
        return self.active[self.straggler_mask]

    @property
    def lost(self) -> np.ndarray:
        """Active devices that trained but lost their upload."""
        return self.active[self.lost_mask]

    @property
    def trainers(self) -> np.ndarray:
        """Active devices that finish training (the arrived and the lost)."""
        return self.active[self.trained_mask]

    @property
    def arrived(self) -> np.ndarray:
        """Active devices whose update arrives."""
        return self.active[self.arrived_mask]

    # ------------------------------------------------------------------ what never arrived costs
    def charge(self, *, lost: bool = True) -> None:
        """Charge the latest screen's stragglers and (with ``lost``) its lost uploads, each on the device's
        own link to its parent with its own payload (system/faults.py: a straggler pays its compute until
        the deadline, phase ``straggler_train``, then, when training ended in time, the share of its upload
        sent until then, ``straggler_upload``; a lost upload pays in full, ``lost_upload``, and nothing is
        relayed above it). With one payload for all, the stragglers' compute is one batch and their partial
        uploads the next; with a payload per device, each straggler's compute then its upload, one straggler
        after another (the order the ledger has always recorded, so energy sums are bit-identical). Lost
        uploads come last. A screen is charged once."""
        up = self.upload
        if not up.timed:
            raise RuntimeError("RoundScreen.charge: retry_uploads() tries are charged by the caller")
        if self._charged:
            raise RuntimeError("RoundScreen.charge: this screen was charged already")
        self._charged = True
        system, parents = self.system, self.system.topology.parent_array
        idx = np.flatnonzero(up.straggler)
        for one in [idx[i : i + 1] for i in range(idx.size)] if self._per_device else [idx]:
            self._charge_stragglers(up, one)
        if lost and up.lost.any():
            nodes = up.nodes[up.lost]
            system.transmit(nodes, parents[nodes], up.nbytes[up.lost], phase=PHASE_LOST_UPLOAD)

    def _charge_stragglers(self, up: UploadScreen, idx: np.ndarray) -> None:
        """Charge stragglers ``idx`` of ``up``: compute until the deadline, then the upload's share sent."""
        system, parents = self.system, self.system.topology.parent_array
        if idx.size:
            nodes, deadline = up.nodes[idx], up.deadline_s
            comp, upload = up.compute_s[idx], up.upload_s[idx]
            share = np.divide(np.minimum(comp, deadline), comp, out=np.ones_like(comp), where=comp > 0)
            system.compute(nodes, up.flops[idx] * share, phase=PHASE_STRAGGLER_TRAIN)
            sending = comp < deadline
            if sending.any():
                frac = (deadline - comp[sending]) / upload[sending]
                senders = nodes[sending]
                system.transmit(
                    senders, parents[senders], up.nbytes[idx][sending] * frac, phase=PHASE_STRAGGLER_UPLOAD
                )

    # ------------------------------------------------------------------ the round's counters
    def counts(self) -> dict[str, int]:
        """The round's counters (system/faults.py ``COUNTERS``): candidates unavailable, cut off by a failed
        edge; uploads cut by the deadline, lost and arrived, summed over every screen; edges down; and 1
        when nothing arrived."""
        arrived = self._tally["arrived"]
        return {
            "dropped": int((~self.available).sum()),
            "edge_down": int((self.available & ~self.reachable).sum()),
            "straggled": self._tally["straggled"],
            "lost": self._tally["lost"],
            "arrived": arrived,
            "edges_failed": len(self.failed_edges),
            "empty": int(arrived == 0),
        }

    def close(self, **overrides: int) -> dict[str, Any]:
        """Record the round's :meth:`counts` (``overrides`` replace counters an algorithm counts its own way)
        in the fault model and return them for the round's stats, ``empty`` reported as
        ``kept_previous_model``; ``{}`` (nothing recorded) when the fault model injects no fault."""
        unknown = set(overrides) - set(COUNTERS)
        if unknown:
            raise ValueError(f"RoundScreen.close: unknown counters {sorted(unknown)}; use {list(COUNTERS)}")
        self._closed = True
        faults = self.faults
        if not faults.enabled:
            return {}
        faults.record(self.round, **{**self.counts(), **overrides})
        stats: dict[str, Any] = faults.round_counts(self.round)
        empty = bool(stats.pop("empty"))
        return {**stats, KEPT_PREVIOUS_MODEL: empty}


__all__ = ["KEPT_PREVIOUS_MODEL", "RoundScreen", "UploadScreen"]
