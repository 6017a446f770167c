"""Links between each node and its parent: wireless (devices, FDMA + path loss + optional Rayleigh fading,
Shannon rate) or wired backhaul (server to server, fixed rate). Defaults: the two-stage setting (Lyu et al.,
arXiv:2404.00836), with the usual FEEL values where its own were not available to us.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgelearn.errors import ConfigError
from edgelearn.system.costs import (
    PATH_LOSS_A_DB,
    PATH_LOSS_B_DB,
    db_to_linear,
    dbm_to_w,
    path_loss_db,
    shannon_rate,
)
from edgelearn.system.topology import ROOT_ID, TIER_CODE, Tier, Topology

Range = tuple[float, float]
NodeIds = int | Sequence[int] | np.ndarray

BANDWIDTH_HZ = 1e6
"""Total bandwidth W = 1 MHz per parent server, split equally over its wireless children (FDMA)."""

NOISE_PSD_DBM_PER_HZ = -174.0
"""Noise power spectral density N0 = -174 dBm/Hz (thermal noise at room temperature)."""

DEVICE_DISTANCE_M: Range = (50.0, 250.0)
"""Device to edge-server distance d ~ U[50, 250] m (a usual FEEL small-cell setting)."""

DEVICE_TO_CLOUD_DISTANCE_M: Range = (200.0, 500.0)
"""Distance of a device attached straight to the cloud's base station. A project choice (macro cell,
further away than an edge small cell); set it to (50, 250) to mimic the two-stage single-server setting."""

BACKHAUL_RATE_BPS = 1e8
"""Wired server-to-server link, 100 Mbit/s. A project choice (the two-stage model has no backhaul)."""

FADING_CACHE_ROUNDS = 4
"""How many rounds of fading draws are kept in memory (older rounds are redrawn on demand, identically)."""

EdgeDistances = Literal["per_node", "per_pair"]
FadingKind = Literal["none", "rayleigh"]
FADING_KINDS: tuple[str, ...] = ("none", "rayleigh")


@dataclass(frozen=True)
class ChannelSpec:
    """Radio and backhaul parameters; distances are a fixed value or a ``(low, high)`` uniform range."""

    bandwidth_hz: float = BANDWIDTH_HZ
    noise_psd_dbm_per_hz: float = NOISE_PSD_DBM_PER_HZ
    path_loss_a_db: float = PATH_LOSS_A_DB
    path_loss_b_db: float = PATH_LOSS_B_DB
    distance_m: float | Range = DEVICE_DISTANCE_M
    fading: FadingKind = "none"
    backhaul_rate_bps: float = BACKHAUL_RATE_BPS
    device_to_cloud_distance_m: float | Range = DEVICE_TO_CLOUD_DISTANCE_M
    edge_distances: EdgeDistances = "per_node"
    """``per_node``: a device is at one distance from whichever edge server it hangs under (the default);
    ``per_pair``: at its own distance from every edge server (drawn per pair from a separate seed stream;
    its first parent keeps the per-node draw), so which edge it attaches to matters (edge association)."""

    def __post_init__(self) -> None:
        for name in ("bandwidth_hz", "backhaul_rate_bps"):
            value = getattr(self, name)
            if not _is_number(value) or not np.isfinite(value) or value <= 0:
                raise ConfigError(f"channel.{name}: got {value!r}; need a finite number > 0")
        for name in ("noise_psd_dbm_per_hz", "path_loss_a_db", "path_loss_b_db"):
            value = getattr(self, name)
            if not _is_number(value) or not np.isfinite(value):
                raise ConfigError(f"channel.{name}: got {value!r}; need a finite number")
        for name in ("distance_m", "device_to_cloud_distance_m"):
            object.__setattr__(self, name, _check_distance(getattr(self, name), f"channel.{name}"))
        if self.edge_distances not in ("per_node", "per_pair"):
            raise ConfigError(
                f"channel.edge_distances: got {self.edge_distances!r}; use per_node or per_pair"
            )
        if self.fading not in FADING_KINDS:
            raise ConfigError(f"channel.fading: got {self.fading!r}; use one of {list(FADING_KINDS)}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check_distance(value: object, where: str) -> float | Range:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or not all(_is_number(v) and np.isfinite(v) and v > 0 for v in value):
            raise ConfigError(f"{where}: got {value!r}; a range must be [low, high] with 0 < low")
        low, high = float(value[0]), float(value[1])
        if low > high:
            raise ConfigError(f"{where}: range [{low}, {high}] has low > high", hint="swap the two values")
        return (low, high)
    if not _is_number(value) or not np.isfinite(value) or value <= 0:  # type: ignore[arg-type]
        raise ConfigError(f"{where}: got {value!r}; need metres > 0 or a [low, high] range")
    return float(value)  # type: ignore[arg-type]


def _draw(value: float | Range, size: int, rng: np.random.Generator) -> np.ndarray:
    if isinstance(value, tuple):
        return rng.uniform(value[0], value[1], size=size)
    return np.full(size, float(value))


BANDWIDTH_RTOL = 1e-9
"""Relative slack when checking a server's bandwidth shares against its total (float round-off only)."""


class Channel:
    """Per-link gains and rates for a topology.

    Every non-root node has one link to its parent: wireless if the node is a device, wired backhaul
    otherwise. The channel is symmetric: the downlink parent -> node uses the same gain and bandwidth share
    as the uplink, at the parent's transmit power. Distances are drawn once from ``rng`` (both a distance to
    an edge server and one to the cloud's base station for every node, so reparenting a device picks the
    matching one without new draws). Rayleigh fading (power gain ~ Exp(1)) is drawn per round for all
    nodes at once from ``rng_factory(round)``, so gains do not depend on call order.
    """

    def __init__(
        self,
        topology: Topology,
        spec: ChannelSpec,
        *,
        rng: np.random.Generator,
        rng_factory: Callable[[int], np.random.Generator],
        pair_rng: Callable[[int, int], np.random.Generator] | None = None,
    ) -> None:
        self.topology = topology
        self.spec = spec
        self._rng_factory = rng_factory
        self._pair_rng = pair_rng
        self._home = topology.parent_array.copy()
        """Each node's first parent: its per-node edge distance is to that server."""
        self._pair: dict[tuple[int, int], float] = {}
        n = topology.num_nodes
        self._dist_edge = _draw(spec.distance_m, n, rng)
        self._dist_cloud = _draw(spec.device_to_cloud_distance_m, n, rng)
        self.noise_psd_w_per_hz = float(dbm_to_w(spec.noise_psd_dbm_per_hz))
        self._fading: OrderedDict[int, np.ndarray] = OrderedDict()
        self._version = -1
        self.refresh()

    def refresh(self) -> None:
        """Recompute link kinds, distances, path gains and bandwidth shares from the current tree."""
        topo = self.topology
        parents = topo.parent_array
        is_device = topo.tier_codes == TIER_CODE[Tier.DEVICE]
        n = topo.num_nodes
        self._parents = parents
        self._wireless = is_device.copy()
        self._wireless[ROOT_ID] = False
        wireless_children = np.bincount(parents[is_device], minlength=n)
        self._distance = np.where(parents == ROOT_ID, self._dist_cloud, self._dist_edge)
        if self.spec.edge_distances == "per_pair":
            moved = np.flatnonzero(self._wireless & (parents != ROOT_ID) & (parents != self._home))
            self._distance[moved] = [self._pair_distance(int(d), int(parents[d])) for d in moved]
        self._distance[~self._wireless] = np.nan
        with np.errstate(invalid="ignore"):
            loss = path_loss_db(self._distance, self.spec.path_loss_a_db, self.spec.path_loss_b_db)
        self._path_gain = np.asarray(db_to_linear(-np.asarray(loss)), dtype=np.float64)
        self._bandwidth = np.full(n, np.nan)
        dev = np.flatnonzero(self._wireless)
        self._bandwidth[dev] = self.spec.bandwidth_hz / wireless_children[parents[dev]]
        self._equal_share = self._bandwidth.copy()
        self._version = topo.version

    def _pair_distance(self, device: int, server: int) -> float:
        """``device``'s distance to edge server ``server`` under ``per_pair`` edge distances."""
        if server == self._home[device]:
            return float(self._dist_edge[device])
        key = (device, server)
        if key not in self._pair:
            if self._pair_rng is None:
                raise ValueError("channel: per_pair edge distances need a pair_rng")
            self._pair[key] = float(_draw(self.spec.distance_m, 1, self._pair_rng(device, server))[0])
        return self._pair[key]

    def distance_to(self, device: int, server: int) -> float:
        """The distance (m) ``device``'s link would have under ``server`` (the cloud, or an edge server: the
        same for every edge with ``per_node`` edge distances)."""
        if server == ROOT_ID:
            return float(self._dist_cloud[device])
        if self.spec.edge_distances == "per_pair":
            return self._pair_distance(int(device), int(server))
        return float(self._dist_edge[device])

    def _sync(self) -> None:
        if self._version != self.topology.version:
            self.refresh()

    def _ids(self, nodes: NodeIds) -> np.ndarray:
        ids = np.asarray(nodes, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.topology.num_nodes):
            raise ValueError(f"node ids out of range 0..{self.topology.num_nodes - 1}")
        if np.any(ids == ROOT_ID):
            raise ValueError("the cloud (node 0) has no parent link")
        return ids

    def fading(self, round_: int) -> np.ndarray:
        """Small-scale power gain per node for ``round_`` (all ones without fading; Exp(1) for Rayleigh)."""
        n = self.topology.num_nodes
        if self.spec.fading == "none":
            return np.ones(n)
        if round_ not in self._fading:
            self._fading[round_] = self._rng_factory(int(round_)).exponential(1.0, size=n)
            while len(self._fading) > FADING_CACHE_ROUNDS:
                self._fading.popitem(last=False)
        return self._fading[round_]

    def is_wireless(self, nodes: NodeIds) -> np.ndarray | bool:
        """Whether each node's link to its parent is wireless (devices) rather than wired backhaul."""
        self._sync()
        out = self._wireless[self._ids(nodes)]
        return bool(out) if out.ndim == 0 else out

    def distance(self, nodes: NodeIds) -> np.ndarray | float:
        """Link distance in metres (nan for wired links)."""
        self._sync()
        return _scalar(self._distance[self._ids(nodes)])

    def gain(self, nodes: NodeIds, round_: int) -> np.ndarray | float:
        """Channel power gain (path loss x fading) of each node's link in ``round_``; nan for wired links."""
        self._sync()
        ids = self._ids(nodes)
        return _scalar(self._path_gain[ids] * self.fading(round_)[ids])

    def set_bandwidth(self, hz: np.ndarray | None) -> None:
        """Give each wireless link its own bandwidth (Hz, one entry per node; NaN keeps the equal share; a
        resource plan's FDMA split), or None for equal shares again. Each server's links may not add up to
        more than ``bandwidth_hz``. A re-parenting (migration) restores equal shares under every server."""
        self._sync()
        if hz is None:
            self._bandwidth = self._equal_share.copy()
            return
        given = np.asarray(hz, dtype=np.float64)
        n = self.topology.num_nodes
        if given.shape != (n,):
            raise ValueError(f"set_bandwidth: {given.shape} values for a tree of {n} nodes")
        chosen = np.isfinite(given)
        if np.any(chosen & ~self._wireless):
            raise ValueError("set_bandwidth: only wireless (device) links have a bandwidth share")
        if np.any(given[chosen] <= 0):
            raise ValueError("set_bandwidth: every bandwidth share must be positive")
        share = np.where(chosen, given, self._equal_share)
        used = np.bincount(self._parents[self._wireless], weights=share[self._wireless], minlength=n)
        over = used > self.spec.bandwidth_hz * (1 + BANDWIDTH_RTOL)
        if over.any():
            server = int(np.flatnonzero(over)[0])
            raise ValueError(
                f"set_bandwidth: node {server}'s links share {used[server]:.6g} Hz, more than the "
                f"{self.spec.bandwidth_hz:.6g} Hz it has"
            )
        self._bandwidth = share

    def clone(self, topology: Topology | None = None) -> Channel:
        """A copy with its own bandwidth shares that shares the distances and fading draws, over the same
        tree or over ``topology`` (a copy of it with devices re-parented: a candidate edge association)."""
        twin = copy.copy(self)
        twin._bandwidth = self._bandwidth.copy()
        if topology is not None:
            twin.topology = topology
            twin.refresh()
        return twin

    def bandwidth(self, nodes: NodeIds) -> np.ndarray | float:
        """Bandwidth share in Hz: W / (number of wireless children of the node's parent), unless
        :meth:`set_bandwidth` gave the link its own; nan for wired."""
        self._sync()
        return _scalar(self._bandwidth[self._ids(nodes)])

    def rate(self, nodes: NodeIds, round_: int, power_w: float | np.ndarray) -> np.ndarray | float:
        """Link rate in bit/s at power ``power_w``: Shannon for wireless links, the backhaul rate for wired.

        Used for both directions (symmetric channel): pass the child's power for the uplink and the
        parent's power for the downlink.
        """
        self._sync()
        ids = self._ids(nodes)
        wireless = self._wireless[ids]
        gains = self._path_gain[ids] * self.fading(round_)[ids]
        with np.errstate(invalid="ignore"):
            radio = shannon_rate(self._bandwidth[ids], power_w, gains, self.noise_psd_w_per_hz)
        return _scalar(np.where(wireless, radio, self.spec.backhaul_rate_bps))


def _scalar(x: np.ndarray) -> np.ndarray | float:
    return float(x) if np.ndim(x) == 0 else x
