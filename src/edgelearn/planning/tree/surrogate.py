"""The association search's surrogate: what a recorded round costs on another edge association at a fixed
operating point, priced per edge server and replayed without a convex solve.

HFEL (Luo et al., IEEE TWC 2020) makes edge association tractable by decomposing the round per edge server:
the cost of an association is a sum of per-edge costs (each edge's devices, their links, that edge's
bandwidth) plus the cloud's part, so a move of device d from edge a to edge b (or a swap) re-prices edges a
and b only. :class:`EdgeSurrogate` is that decomposition for any recorded round (planning/tree/profile.py):

* the operating point is held fixed: every node keeps its clock and every link its transmit power (a
  device's uplink power and its edge's downlink power to it follow the device), and each edge server splits
  its bandwidth equally among its devices, ``W / |S_e|``;
* every event that does not run on a device-edge link (compute anywhere, backhaul, devices under the cloud)
  then costs exactly what it cost when recorded: it is priced once, by replaying the round through the
  system model;
* a device-edge transfer's time and energy depend only on its device, its edge and that edge's device count
  (distance, path gain, equal share, power): the per-edge part. A candidate re-prices the transfers of the
  devices on the edges it touches (:meth:`EdgeSurrogate.cost` ``touched``), nothing else;
* the round's energy is the sum of its events' (fixed part + per-edge parts); its delay is the virtual
  clock's (system/ledger.py) over the recorded batches with those durations, one vectorized pass per batch
  (for HierFAVG's round: the slowest edge's subtree plus the cloud's part; any algorithm's round in general).

The transfers follow the device, as :func:`~edgelearn.planning.tree.association.retarget` does (server work
stays where it was recorded), so the surrogate equals :meth:`RoundProfile.replay` of the re-targeted round on
the re-parented tree at the same point with equal shares: exact there (tested), and an approximation only of
what a re-planned round costs (the search re-solves its candidates exactly, association.py).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Literal

import numpy as np

from edgelearn.planning.tree.profile import RoundProfile
from edgelearn.system import OperatingPoint, SystemModel
from edgelearn.system.costs import BITS_PER_BYTE, db_to_linear, path_loss_db, shannon_rate
from edgelearn.system.ledger import VirtualClock

Hold = Literal["power", "time"]
"""What a device's link keeps when its edge or that edge's device count changes. ``power``: every sender at
the point's power (the round as a run at that point records it). ``time``: a link the point runs below p_max
had slack, so it keeps its duration at the power that needs (capped at p_max), and a link at p_max stays
there and gets faster with a larger share. At a planned optimum every device is on the critical path, so
under ``power`` almost any move slows some device; under ``time`` a move shows up as energy saved (which
the re-plan turns into delay) or as a straggler sped up."""
LN2 = math.log(2.0)
AT_PMAX_RTOL = 1e-3
"""A link within this (relative) of its sender's p_max runs flat out: ``time`` holds its power instead."""


class EdgeSurrogate:
    """A recorded round's energy and delay on any association of ``devices`` to ``edges`` at ``point``
    (None: full clock and p_max), every edge's bandwidth shared equally (module docstring)."""

    def __init__(
        self,
        system: SystemModel,
        profile: RoundProfile,
        point: OperatingPoint | None,
        devices: np.ndarray,
        edges: np.ndarray,
        distance: np.ndarray,
        hold: Hold = "power",
    ) -> None:
        """``distance[i, j]``: device ``devices[i]``'s distance (m) to edge ``edges[j]``; every device's
        recorded parent is one of ``edges``. ``hold``: what a moved link keeps (:data:`Hold`)."""
        self.hold = hold
        topo, channel = system.topology, system.channel
        self.devices, self.edges = np.asarray(devices, np.int64), np.asarray(edges, np.int64)
        self.home = np.searchsorted(self.edges, topo.parent_array[self.devices])  # recorded edge index
        fixed = None if point is None else replace(point, bandwidth_hz=None)
        scratch, _ = profile.charge(system, fixed)
        events = scratch.ledger.events(profile.round)
        self.num_nodes = topo.num_nodes
        spec = channel.spec
        loss = path_loss_db(np.asarray(distance, np.float64), spec.path_loss_a_db, spec.path_loss_b_db)
        fading = channel.fading(profile.round)[self.devices]
        self.gain = np.asarray(db_to_linear(-np.asarray(loss)), np.float64) * fading[:, None]
        self.noise = channel.noise_psd_w_per_hz
        self.width = spec.bandwidth_hz
        index = np.full(topo.num_nodes, -1)
        index[self.devices] = np.arange(self.devices.size)
        home_of = np.full(topo.num_nodes, -1)
        home_of[self.devices] = self.edges[self.home]
        self.batches: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        """Per batch: kind, nodes or src, dst, seconds, joules (as recorded at ``point``)."""
        link_ev, link_dev, link_up, link_bits, link_power, link_cap, link_t0 = [], [], [], [], [], [], []
        self.pmax_edge = system.p_max_w[self.edges]
        offset = 0
        for b in profile.batches:
            size = b.nodes.size if b.kind == "compute" else b.src.size
            seconds = events["seconds"][offset : offset + size].copy()
            joules = events["joules"][offset : offset + size].copy()
            if b.kind == "compute":
                self.batches.append(("compute", b.nodes, b.nodes, seconds, joules))
            else:
                up = (index[b.src] >= 0) & (b.dst == home_of[np.maximum(b.src, 0)])
                down = (index[b.dst] >= 0) & (b.src == home_of[np.maximum(b.dst, 0)])
                link = up | down
                dev = np.where(up, index[b.src], index[b.dst])[link]
                planned = None if fixed is None else np.where(up, fixed.uplink_power_w[b.src], np.nan)
                power = system.p_max_w[b.src]  # an uplink's; a downlink's follows its new edge (cost)
                if planned is not None:
                    power = np.where(np.isfinite(planned), np.minimum(planned, power), power)
                down_planned = np.full(b.dst.size, np.nan) if fixed is None else fixed.downlink_power_w[b.dst]
                cap = np.where(down, np.nan, system.p_max_w[b.src])  # NaN: the new edge's p_max
                power = np.where(down, down_planned, power)  # NaN: the new edge's p_max
                first = sum(x[3].size for x in self.batches)
                link_ev.append(first + np.flatnonzero(link))
                link_dev.append(dev)
                link_up.append(up[link])
                link_bits.append(BITS_PER_BYTE * b.nbytes[link])
                link_power.append(power[link])
                link_cap.append(cap[link])
                link_t0.append(seconds[link])
                self.batches.append(("transmit", b.src.copy(), b.dst.copy(), seconds, joules))
            offset += size
        self.link_ev = np.concatenate(link_ev) if link_ev else np.zeros(0, np.int64)
        self.link_dev = np.concatenate(link_dev) if link_dev else np.zeros(0, np.int64)
        self.link_up = np.concatenate(link_up) if link_up else np.zeros(0, bool)
        self.link_bits = np.concatenate(link_bits) if link_bits else np.zeros(0)
        self.link_power = np.concatenate(link_power) if link_power else np.zeros(0)
        self.link_cap = np.concatenate(link_cap) if link_cap else np.zeros(0)
        self.link_t0 = np.concatenate(link_t0) if link_t0 else np.zeros(0)
        at_max = np.isfinite(self.link_cap) & (self.link_power >= self.link_cap * (1 - AT_PMAX_RTOL))
        self.link_slack = ~at_max & np.isfinite(self.link_power)
        """Links the point runs below p_max (they had slack: ``time`` holds their duration)."""
        sizes = [x[3].size for x in self.batches]
        self.bounds = np.r_[0, np.cumsum(sizes)]
        self.seconds = np.concatenate([x[3] for x in self.batches]) if sizes else np.zeros(0)
        self.joules = np.concatenate([x[4] for x in self.batches]) if sizes else np.zeros(0)
        is_link = np.zeros(self.seconds.size, bool)
        is_link[self.link_ev] = True
        self.fixed_j = float(np.sum(self.joules[~is_link]))
        self._base: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def _links(self, assign: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Seconds and joules of link transfers ``which`` (indices into the link arrays) under ``assign``."""
        dev = self.link_dev[which]
        edge = assign[dev]
        count = np.bincount(assign, minlength=self.edges.size)
        share = self.width / count[edge]
        pmax = np.where(self.link_up[which], self.link_cap[which], self.pmax_edge[edge])
        power = self.link_power[which]
        power = np.where(np.isfinite(power), np.minimum(power, pmax), pmax)
        gain = self.gain[dev, edge]
        bits = self.link_bits[which]
        if (
            self.hold == "time"
        ):  # the power that keeps the recorded time: p = (N0 w / g)(2^(bits / (t w)) - 1)
            t0 = self.link_t0[which]
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                need = self.noise * share / gain * np.expm1(LN2 * bits / (t0 * share))
            held = (bits > 0) & (need <= pmax) & (self.link_slack[which])
            power = np.where(held, need, power)
        rate = np.asarray(shannon_rate(share, power, gain, self.noise), np.float64)
        seconds = np.divide(bits, rate, out=np.zeros_like(bits), where=bits > 0)
        return seconds, power * seconds

    def anchor(self, assign: np.ndarray) -> None:
        """Price every link under ``assign``: later :meth:`cost` calls with ``touched`` re-price only the
        links of the devices on those edges (the per-edge decomposition)."""
        assign = np.asarray(assign, np.int64)
        s, j = self._links(assign, np.arange(self.link_dev.size))
        self._base = (assign.copy(), s, j)

    def cost(self, assign: np.ndarray, touched: tuple[int, ...] | None = None) -> tuple[float, float]:
        """(energy J, delay s) of the round with device ``i`` on edge ``edges[assign[i]]``. ``touched``: the
        edge indices whose device sets differ from the :meth:`anchor`'s (None: price every link)."""
        assign = np.asarray(assign, np.int64)
        if touched is None or self._base is None:
            link_s, link_j = self._links(assign, np.arange(self.link_dev.size))
        else:
            _, link_s, link_j = self._base
            which = np.flatnonzero(np.isin(assign[self.link_dev], touched))
            link_s, link_j = link_s.copy(), link_j.copy()
            link_s[which], link_j[which] = self._links(assign, which)
        seconds = self.seconds.copy()
        seconds[self.link_ev] = link_s
        where = np.full(self.num_nodes, -1)
        where[self.devices] = self.edges[assign]
        home = np.full(self.num_nodes, -1)
        home[self.devices] = self.edges[self.home]
        clock = VirtualClock(self.num_nodes)
        for (kind, a, b, _, _), lo, hi in zip(self.batches, self.bounds[:-1], self.bounds[1:]):
            if kind == "compute":
                clock.compute(a, seconds[lo:hi])
                continue
            # a device's transfers with its recorded edge now run with its edge under ``assign``
            up = (where[a] >= 0) & (b == home[a])
            down = (where[b] >= 0) & (a == home[b])
            clock.transmit(np.where(down, where[b], a), np.where(up, where[a], b), seconds[lo:hi])
        return self.fixed_j + float(np.sum(link_j)), float(clock.ready.max())
