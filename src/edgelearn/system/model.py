"""``SystemModel``: the facade algorithms use to charge compute and transmissions to the ledger and clock.

Algorithms never compute physics themselves: they say "node i ran F FLOPs" or "node i sent B bytes to its
parent", and the system model turns that into seconds and joules: compute by the node's hardware kind
(``system/hardware.py``: the DVFS CPU model of Lyu et al., arXiv:2404.00836, or an accelerator's FLOP/s
and power), transmissions by the channel's Shannon rate (the same paper's system model).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgelearn.errors import ConfigError
from edgelearn.seeding import Seeds
from edgelearn.system.catalog import sample_profiles
from edgelearn.system.channel import Channel, ChannelSpec
from edgelearn.system.costs import BITS_PER_BYTE, compute_cost, transmit_delay, transmit_energy
from edgelearn.system.faults import FaultModel
from edgelearn.system.hardware import (
    ACCELERATOR,
    DVFS,
    HardwareProfile,
    HardwareSpec,
    profile_arrays,
)
from edgelearn.system.ledger import Ledger, VirtualClock
from edgelearn.system.topology import Tier, Topology

NodeIds = int | Sequence[int] | np.ndarray
Values = float | Sequence[float] | np.ndarray

LIMIT_RTOL = 1e-12
"""Relative slack when checking a requested frequency/power against its limit (float round-off only)."""

DISTANCE_STREAM = 0
FADING_STREAM = 1
PAIR_STREAM = 2
"""Sub-keys of the ``"channel"`` seed purpose: distances are drawn once, fading once per round, and a
device's distance to an edge server other than its first parent once per (device, server) pair."""

MIN_LINK_RATE_BPS = 1.0
"""Slowest link accepted at build time (bit/s, at full power): below it a model upload takes years and
summed delays overflow. Extreme bandwidths, powers, noise, path loss or distances land here (a rate of
0 or inf) instead of running with overflow warnings and inf/nan delays."""

MAX_SECONDS_PER_FLOP = 1.0
"""Slowest compute accepted (cycles_per_flop / f_max or 1 / flops_per_s, s): a 1 Hz clock; slower
overflows delay sums."""

MAX_JOULES_PER_FLOP = 1.0
"""Most energy per FLOP accepted at full speed (kappa x cycles_per_flop x f_max^2 or power_w / flops_per_s,
J); real chips: 1e-12 to 1e-9."""


@dataclass(frozen=True)
class OperatingPoint:
    """Per-node clocks and per-link transmit powers chosen by a resource plan (NaN: full speed / p_max).

    ``freq_hz[n]`` is DVFS node n's clock; ``uplink_power_w[n]`` the power node n sends to its parent with,
    ``downlink_power_w[n]`` the power its parent sends to it with (links are named by their child node).
    """

    freq_hz: np.ndarray
    uplink_power_w: np.ndarray
    downlink_power_w: np.ndarray
    bandwidth_hz: np.ndarray | None = None
    """Each wireless link's share of its server's bandwidth (both directions; NaN: the equal share; None:
    the point does not set shares, the channel keeps the ones it has)."""

    @classmethod
    def full_speed(cls, num_nodes: int) -> OperatingPoint:
        """Every node at full clock, every link at p_max and equal bandwidth shares (what no plan means)."""
        nan = np.full(int(num_nodes), np.nan)
        return cls(nan.copy(), nan.copy(), nan.copy(), nan.copy())


PRICED_BY: dict[str, tuple[str, ...]] = {
    DVFS: ("f_max_hz", "cycles_per_flop", "kappa"),
    ACCELERATOR: ("flops_per_s", "power_w"),
}
"""The hardware keys that set a node's time and energy per FLOP, by kind (named when they are absurd)."""


class SystemModel:
    """Topology + per-node hardware + channel + ledger + virtual clock, behind a few vectorized calls.

    Usage per synchronous round: ``begin_round(r)``, then ``transmit``/``compute`` calls in causal order
    (batches are vectorized), then ``end_round()`` returns the round's delay.
    """

    def __init__(
        self,
        topology: Topology,
        profiles: Sequence[HardwareProfile],
        channel: Channel,
        ledger: Ledger | None = None,
        clock: VirtualClock | None = None,
        faults: FaultModel | None = None,
    ) -> None:
        if len(profiles) != topology.num_nodes:
            raise ConfigError(f"system: {len(profiles)} hardware profiles for {topology.num_nodes} nodes")
        self.topology = topology
        self.profiles = list(profiles)
        self.channel = channel
        self.ledger = ledger if ledger is not None else Ledger([n.tier for n in topology.nodes])
        self.clock = clock if clock is not None else VirtualClock(topology.num_nodes)
        arrays = profile_arrays(self.profiles)
        self.dvfs = arrays["dvfs"]
        """Per-node flag: priced by the DVFS CPU model (True) or as an accelerator (False)."""
        self.f_max_hz = arrays["f_max_hz"]
        """Per-node CPU limit (Hz); like ``kappa`` and ``cycles_per_flop``, NaN on accelerator nodes."""
        self.kappa = arrays["kappa"]
        self.cycles_per_flop = arrays["cycles_per_flop"]
        self.flops_per_s = arrays["flops_per_s"]
        """Per-node sustained FLOP/s; like ``power_w``, NaN on DVFS nodes."""
        self.power_w = arrays["power_w"]
        self.p_max_w = arrays["p_max_w"]
        self.seconds_per_flop = arrays["seconds_per_flop"]
        """Per-node seconds per FLOP at full speed (either kind)."""
        self.joules_per_flop = arrays["joules_per_flop"]
        """Per-node joules per FLOP at full speed (either kind)."""
        # One compute path for both kinds: work = FLOPs x work_per_flop (cycles on DVFS nodes, the FLOPs
        # themselves on accelerators) done at a rate (the clock, or the sustained FLOP/s).
        self._work_per_flop = np.where(self.dvfs, self.cycles_per_flop, 1.0)
        self._full_rate = np.where(self.dvfs, self.f_max_hz, self.flops_per_s)
        for arr in (*arrays.values(), self._work_per_flop, self._full_rate):
            arr.flags.writeable = False
        self.faults = faults if faults is not None else FaultModel(topology)
        """Device, link and edge faults (system/faults.py); the default injects none."""
        self.round = 0
        self._round_start = 0.0
        self.operating_point: OperatingPoint | None = None
        """Clocks and transmit powers a resource plan chose (:meth:`set_operating_point`): used wherever an
        algorithm charges work without naming a clock or a power; None = full clock and p_max."""

    @classmethod
    def build(
        cls,
        topology: Topology,
        hardware_specs: Mapping[Tier | str, HardwareSpec] | None,
        channel_spec: ChannelSpec | None,
        seeds: Seeds,
    ) -> SystemModel:
        """Sample hardware (seed purpose ``"hardware"``) and the channel (purpose ``"channel"``); wire up."""
        profiles = sample_profiles(topology, hardware_specs, seeds.rng("hardware"))
        with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
            channel = Channel(
                topology,
                channel_spec if channel_spec is not None else ChannelSpec(),
                rng=seeds.rng("channel", DISTANCE_STREAM),
                rng_factory=lambda r: seeds.rng("channel", FADING_STREAM, r),
                pair_rng=lambda d, s: seeds.rng("channel", PAIR_STREAM, d, s),
            )
            system = cls(topology, profiles, channel)
            system.check_physics()
        return system

    def check_physics(self) -> None:
        """ConfigError naming the keys to fix when a node's compute or a link is physically absurd.

        One check covers every physics field: a rate, time or energy that comes out 0, inf or nan (or
        beyond :data:`MIN_LINK_RATE_BPS`, :data:`MAX_SECONDS_PER_FLOP`, :data:`MAX_JOULES_PER_FLOP`),
        whatever extreme bandwidth, power, noise, path loss, distance, clock, kappa, FLOP/s or compute power
        caused it, fails here at build time instead of as overflow warnings and inf/nan delays and energies
        during the run.
        """
        tiers = [n.tier.value for n in self.topology.nodes]
        sec, joules = self.seconds_per_flop, self.joules_per_flop
        for i in range(self.topology.num_nodes):
            bad_time = not (np.isfinite(sec[i]) and 0 < sec[i] <= MAX_SECONDS_PER_FLOP)
            bad_energy = not (np.isfinite(joules[i]) and 0 <= joules[i] <= MAX_JOULES_PER_FLOP)
            if bad_time or bad_energy:
                what = f"{sec[i]:.3g} s" if bad_time else f"{joules[i]:.3g} J"
                limit = f"<= {MAX_SECONDS_PER_FLOP:g} s" if bad_time else f"<= {MAX_JOULES_PER_FLOP:g} J"
                t = tiers[i]
                keys = PRICED_BY[DVFS if self.dvfs[i] else ACCELERATOR]
                values = ", ".join(f"{k}={getattr(self, k)[i]:.3g}" for k in keys)
                raise ConfigError(
                    f"system: a FLOP on {t} node {i} would take {what} (need a finite value {limit}): "
                    + values,
                    hint="fix " + " or ".join(f"hardware.{t}.{k}" for k in keys),
                )
        parents = self.topology.parent_array
        ids = np.flatnonzero(parents >= 0)
        if not ids.size:
            return
        spec = self.channel.spec
        for direction, power in (("uplink", self.p_max_w[ids]), ("downlink", self.p_max_w[parents[ids]])):
            rate = np.asarray(self.channel.rate(ids, 0, power), dtype=np.float64) * np.ones(ids.shape)
            bad = ~(np.isfinite(rate) & (rate >= MIN_LINK_RATE_BPS))
            if not bad.any():
                continue
            i = int(ids[np.argmax(bad)])
            wired = not bool(self.channel.is_wireless(i))
            sender = i if direction == "uplink" else int(parents[i])
            keys = (
                f"channel.backhaul_rate_bps ({spec.backhaul_rate_bps:.3g})"
                if wired
                else f"channel.bandwidth_hz ({spec.bandwidth_hz:.3g}), channel.noise_psd_dbm_per_hz "
                f"({spec.noise_psd_dbm_per_hz:.3g}), channel.path_loss_a_db ({spec.path_loss_a_db:.3g}), "
                f"channel.path_loss_b_db ({spec.path_loss_b_db:.3g}), channel.distance_m / "
                f"device_to_cloud_distance_m, hardware.{tiers[sender]}.p_max_w ({self.p_max_w[sender]:.3g})"
            )
            raise ConfigError(
                f"system: the {direction} of node {i} ({tiers[i]}) would run at {float(rate[bad][0]):.3g} "
                f"bit/s (need a finite rate >= {MIN_LINK_RATE_BPS:g} bit/s)",
                hint=f"bring these to physical values: {keys}",
            )

    # ------------------------------------------------------------------ rounds
    def begin_round(self, round_: int) -> None:
        """Start synchronous round ``round_`` (>= 0): all nodes wait for the slowest (clock barrier)."""
        if isinstance(round_, bool) or not isinstance(round_, (int, np.integer)) or round_ < 0:
            raise ValueError(f"round must be an integer >= 0, got {round_!r}")
        self.clock.sync()
        self.round = int(round_)
        self._round_start = self.clock.now

    def end_round(self) -> float:
        """Delay of the current round: virtual time from ``begin_round`` to the last event's end."""
        return self.clock.now - self._round_start

    @property
    def now(self) -> float:
        """Virtual time since the start of the run (seconds)."""
        return self.clock.now

    # ------------------------------------------------------------------ events
    def _ids(self, nodes: NodeIds, what: str) -> np.ndarray:
        ids = np.asarray(nodes)
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"{what}: node ids must be integers, got dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.topology.num_nodes):
            raise ValueError(f"{what}: node ids must lie in 0..{self.topology.num_nodes - 1}")
        return ids

    @staticmethod
    def _check_limit(value: np.ndarray, limit: np.ndarray, ids: np.ndarray, what: str, field: str) -> None:
        bad = ~((value > 0) & (value <= limit * (1 + LIMIT_RTOL)))
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise ConfigError(
                f"system.{what}: {field}={float(value[i])!r} for node {int(ids[i])} is outside "
                f"(0, {float(limit[i])!r}]",
                hint=f"request a {field} above 0 and at most the node's limit (hardware profile)",
            )

    def compute(
        self, nodes: NodeIds, flops: Values, *, freq_hz: Values | None = None, phase: str = "train"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Charge ``flops`` of work on each node at full speed, or on DVFS nodes at clock ``freq_hz``.

        A clock applies to DVFS nodes only: requesting one for an accelerator node is a ConfigError (it
        runs at its sustained FLOP/s). Returns (seconds, joules) shaped like the broadcast inputs; repeated
        nodes run back to back.
        """
        ids, work = np.broadcast_arrays(self._ids(nodes, "compute"), np.asarray(flops, dtype=np.float64))
        shape = ids.shape
        ids, work = ids.ravel(), work.ravel()
        if np.any(~np.isfinite(work) | (work < 0)):
            raise ValueError("compute: flops must be finite and >= 0")
        if freq_hz is None:
            rate = self._full_rate[ids]
            if self.operating_point is not None:
                planned = self.operating_point.freq_hz[ids]
                rate = np.where(np.isfinite(planned), planned, rate)
        else:
            self.require_dvfs(ids, "a CPU clock (freq_hz)")
            rate = np.broadcast_to(np.asarray(freq_hz, dtype=np.float64), shape).ravel()
            self._check_limit(rate, self.f_max_hz[ids], ids, "compute", "freq_hz")
        seconds, joules = compute_cost(
            work, self._work_per_flop[ids], rate, self.kappa[ids], self.power_w[ids], self.dvfs[ids]
        )
        start, end = self.clock.compute(ids, seconds)
        self.ledger.record_compute(
            round=self.round, node=ids, flops=work, seconds=seconds, joules=joules,
            t_start=start, t_end=end, phase=phase,
        )  # fmt: skip
        return seconds.reshape(shape), joules.reshape(shape)

    def transmit(
        self,
        src: NodeIds,
        dst: NodeIds,
        nbytes: Values,
        *,
        power_w: Values | None = None,
        phase: str = "train",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Send ``nbytes`` over each parent-child link ``src -> dst`` (either direction) in the current round.

        Power defaults to the sender's p_max; the rate comes from the channel (symmetric: the downlink uses
        the child's link at the parent's power); energy is charged to the sender. A batch is concurrent.
        Returns (seconds, joules) shaped like the broadcast inputs.
        """
        s, d, size = np.broadcast_arrays(
            self._ids(src, "transmit"), self._ids(dst, "transmit"), np.asarray(nbytes, dtype=np.float64)
        )
        shape = s.shape
        s, d, size = s.ravel(), d.ravel(), size.ravel()
        if np.any(~np.isfinite(size) | (size < 0)):
            raise ValueError("transmit: nbytes must be finite and >= 0")
        parents = self.topology.parent_array
        up = parents[s] == d
        down = parents[d] == s
        if np.any(~(up | down)):
            i = int(np.flatnonzero(~(up | down))[0])
            raise ValueError(f"transmit: nodes {int(s[i])} -> {int(d[i])} are not a parent-child link")
        if power_w is None:
            power = self.p_max_w[s]
            if self.operating_point is not None:
                op = self.operating_point
                planned = np.where(up, op.uplink_power_w[s], op.downlink_power_w[d])
                # a link the plan did not know (a migration re-parented it) falls back to p_max
                power = np.where(np.isfinite(planned), np.minimum(planned, power), power)
        else:
            power = np.broadcast_to(np.asarray(power_w, dtype=np.float64), shape).ravel()
            self._check_limit(power, self.p_max_w[s], s, "transmit", "power_w")
        link = np.where(up, s, d)
        rate = np.asarray(self.channel.rate(link, self.round, power), dtype=np.float64)
        seconds = np.asarray(transmit_delay(BITS_PER_BYTE * size, rate), dtype=np.float64)
        joules = np.asarray(transmit_energy(power, seconds), dtype=np.float64)
        start, end = self.clock.transmit(s, d, seconds)
        self.ledger.record_transmit(
            round=self.round, src=s, dst=d, direction=np.where(up, "up", "down"), nbytes=size,
            seconds=seconds, joules=joules, t_start=start, t_end=end, phase=phase,
        )  # fmt: skip
        return seconds.reshape(shape), joules.reshape(shape)

    # ------------------------------------------------------------------ helpers
    def set_operating_point(self, point: OperatingPoint | None) -> None:
        """Charge later work at ``point``'s clocks and powers wherever an algorithm names none (None: full
        clock and p_max again). Every setting must be within its node's limits: a clock only on a DVFS node,
        in (0, f_max]; a power in (0, p_max] of the sender (the node for its uplink, its parent for its
        downlink); bandwidth shares of a server's links adding up to at most its bandwidth (Channel.
        set_bandwidth). NaN leaves a node or link at full speed, p_max or its equal share."""
        if point is None:
            self.operating_point = None
            self.channel.set_bandwidth(None)
            return
        n = self.topology.num_nodes
        arrays = {}
        for name in ("freq_hz", "uplink_power_w", "downlink_power_w"):
            value = np.asarray(getattr(point, name), dtype=np.float64)
            if value.shape != (n,):
                raise ValueError(f"operating point: {name} has shape {value.shape}, the tree has {n} nodes")
            arrays[name] = value
        ids = np.arange(n)
        freq = arrays["freq_hz"]
        set_freq = np.isfinite(freq)
        if set_freq.any():
            self.require_dvfs(ids[set_freq], "a planned clock")
            self._check_limit(
                freq[set_freq], self.f_max_hz[set_freq], ids[set_freq], "operating point", "freq_hz"
            )
        parents = np.where(self.topology.parent_array >= 0, self.topology.parent_array, 0)
        for name, sender in (("uplink_power_w", ids), ("downlink_power_w", parents)):
            power, given = arrays[name], np.isfinite(arrays[name])
            if given.any():
                self._check_limit(
                    power[given], self.p_max_w[sender[given]], ids[given], "operating point", name
                )
        bandwidth = None if point.bandwidth_hz is None else np.asarray(point.bandwidth_hz, dtype=np.float64)
        if bandwidth is not None:
            try:
                self.channel.set_bandwidth(bandwidth)
            except ValueError as exc:
                raise ConfigError(f"system.operating point: {exc}") from None
        self.operating_point = OperatingPoint(**arrays, bandwidth_hz=bandwidth)

    def attach_faults(self, faults: FaultModel) -> None:
        """Use ``faults`` from now on (built from the ``faults`` config section)."""
        if faults.topology is not self.topology:
            raise ValueError("attach_faults: the fault model was built for another topology")
        self.faults = faults

    def require_dvfs(self, nodes: NodeIds, what: str) -> None:
        """ConfigError naming the tier's hardware keys when any of ``nodes`` is not a DVFS CPU (``what``
        needs a clock to set: a requested frequency, the two-stage planner's clocks)."""
        ids = np.atleast_1d(self._ids(nodes, "require_dvfs"))
        bad = ids[~self.dvfs[ids]]
        if bad.size:
            i = int(bad[0])
            t = self.topology.nodes[i].tier.value
            raise ConfigError(
                f"system: {what} applies to DVFS CPUs only, but {t} node {i} is an accelerator "
                f"(hardware.{t}.kind: accelerator; it runs at its sustained flops_per_s)",
                hint=f"give hardware.{t} a DVFS profile (e.g. hardware.{t}.profile=paper_edge) or "
                f"hardware.{t}.kind=dvfs with f_max_hz",
            )

    def predict_compute_seconds(self, nodes: NodeIds, flops: Values) -> np.ndarray:
        """Seconds each node would need for ``flops`` at full speed, without charging anything."""
        ids, work = np.broadcast_arrays(self._ids(nodes, "predict"), np.asarray(flops, dtype=np.float64))
        return np.asarray(work * self._work_per_flop[ids] / self._full_rate[ids], dtype=np.float64)

    def predict_upload_seconds(self, nodes: NodeIds, nbytes: Values) -> np.ndarray:
        """Seconds each node would need to send ``nbytes`` to its parent this round at p_max (no charge)."""
        ids = self._ids(nodes, "predict")
        if not ids.size:
            return np.zeros(ids.shape)
        rate = np.asarray(self.uplink_rate(ids), dtype=np.float64)
        size = np.asarray(nbytes, dtype=np.float64)
        return np.asarray(transmit_delay(BITS_PER_BYTE * size, rate), dtype=np.float64) * np.ones(ids.shape)

    def uplink_rate(self, nodes: NodeIds, power_w: Values | None = None) -> np.ndarray | float:
        """Bit/s of each node's link to its parent in the current round at ``power_w`` (default p_max)."""
        ids = self._ids(nodes, "uplink_rate")
        power = self.p_max_w[ids] if power_w is None else power_w
        return self.channel.rate(ids, self.round, power)

    def reparent(self, node: int, new_parent: int) -> None:
        """Move ``node`` under ``new_parent`` and refresh the channel's bandwidth shares and distances."""
        self.topology.reparent(node, new_parent)
        self.channel.refresh()

    def totals(self) -> dict[str, Any]:
        """Shortcut for ``ledger.totals()``."""
        return self.ledger.totals()

    def state_dict(self) -> dict[str, Any]:
        """Checkpointable state: ledger, clock, current round and the (possibly reparented) tree."""
        return {
            "round": self.round,
            "round_start": self._round_start,
            "clock": self.clock.state_dict(),
            "ledger": self.ledger.state_dict(),
            "topology": self.topology.to_dict(),
            "faults": self.faults.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict`` output into a model built from the same config and seed."""
        self.topology.load_dict(state["topology"])
        self.channel.refresh()
        self.clock.load_state_dict(state["clock"])
        self.ledger.load_state_dict(state["ledger"])
        self.round = int(state["round"])
        self._round_start = float(state["round_start"])
        if "faults" in state:  # absent from checkpoints written before fault models existed
            self.faults.load_state_dict(state["faults"])
