"""FedAgg under faults and migrations (Wu et al., INFOCOM 2024, Theorem 1: a node may re-parent mid-run).

Faults (``faults`` config, system/faults.py), applied at the start of each round after the configured
migrations:

* **Edge outage: failover and failback.** Every child (device or live sub-edge) of an edge that
  :meth:`FaultModel.failed_edges` reports down is re-parented with :meth:`FedAgg.migrate`, one child at a time
  in id order, deepest failed edge first, to :meth:`FedAgg.failover_target`: walking up from the failed
  edge's parent, the first ancestor that has a live edge child (no failed edge on its path to the cloud) gives
  the live edge with the fewest devices at that moment (ties: lowest id), so the children spread evenly;
  with no live edge left they go directly under the cloud. The failed edge, left without children, neither
  trains nor teaches while down; its model and stored bridge samples are frozen, not lost. A moved node
  remembers its home edge; in the first round its home is reachable again it migrates back. Every node that
  ever received a device's embeddings keeps them, so a migration sends them only to nodes on the new path that
  never held them (the failover costs one hop, charged as ``migrate_embed`` / ``migrate_decode``; the way
  back, and a repeated failover to the same edge, cost nothing). A configured migration of a displaced node
  makes its new parent its home.
* **Devices.** A device that is unavailable (dropout, trace) sits the round out: no logits reach it, it does
  not train and does not teach its parent. A straggler past the round deadline receives its teacher's logits
  and is cut off at the deadline (charged as system/faults.py documents; its partial training is discarded).
  A lost upload (its logits to its parent) is charged in full (``lost_upload``) after the device trained on
  its parent's logits; its parent learns from the children whose logits arrived. Edge-cloud pairs distil on
  the bridge samples the edges already store, so a device sitting out does not shrink them, and the cloud
  keeps learning from live edges even in a round where no device upload arrives. Both schedules honour lost
  uploads (the ``sequential`` one runs each pair's two directions through the same :meth:`FedAgg._step`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from edgelearn.algorithms.fedagg.bridge import logit_bytes
from edgelearn.algorithms.fedagg.bsbodp import LEAF_STEP_PASSES, PHASE_LOGITS_DOWN, PHASE_TEACHER
from edgelearn.algorithms.fedagg.config import FedAggConfig
from edgelearn.algorithms.fedagg.subtree import SubtreeViews
from edgelearn.algorithms.kit.comm import route
from edgelearn.algorithms.kit.nodes import NodeModels
from edgelearn.errors import ConfigError, DataError
from edgelearn.system import Tier
from edgelearn.system.faults import PHASE_LOST_UPLOAD
from edgelearn.system.screen import RoundScreen
from edgelearn.system.topology import ROOT_ID

PHASE_MIGRATE_EMBED = "migrate_embed"
PHASE_MIGRATE_DECODE = "migrate_decode"


class Failover(SubtreeViews):
    """Migrations, edge failover and failback, and device faults for :class:`~edgelearn.algorithms.fedagg.
    algorithm.FedAgg`; expects its attributes (``cfg``, ``models``, ``num_classes``, ``bytes_per_sample``,
    ``dec_flops``, ``holders``, ``displaced``, ``_moved``, ``_lost``) besides :class:`SubtreeViews`'."""

    cfg: FedAggConfig
    models: NodeModels
    num_classes: int
    bytes_per_sample: int
    dec_flops: float
    holders: dict[int, set[int]]
    displaced: dict[int, int]
    _moved: int
    _lost: frozenset[int]

    def _apply_faults(self, round_: int) -> RoundScreen:
        """Failback, failover, then which devices sit the round out (the unavailable, those cut off and the
        stragglers: ``_idle``) or lose their upload (``_lost``); stragglers are charged now, lost uploads by
        :meth:`_charge_lost_logits` when their pair distils. Returns the round's screen, closed at its end."""
        ctx, system = self.ctx, self.ctx.system
        self._moved = self._failback(round_) + self._failover(round_)
        devices = np.array(
            [d for d in ctx.topology.devices if self.store.count(ctx.ordinal(d)) > 0], dtype=np.int64
        )
        screen = RoundScreen.open(system, round_, devices)
        active = screen.active
        samples = np.array([self.store.count(ctx.ordinal(int(d))) for d in active], dtype=np.float64)
        per_sample = np.array(
            [
                LEAF_STEP_PASSES * info.flops_train + info.flops_forward
                for info in (self.models.arch(int(d)).info for d in active)
            ],
            dtype=np.float64,
        )
        flops = samples * per_sample  # a leaf step on every sample, then teaching its parent
        nbytes = np.asarray(logit_bytes(self.num_classes, samples), dtype=np.float64)
        screen.screen(flops, nbytes)
        self._charge_stragglers(screen)
        self._idle = frozenset(int(d) for d in screen.sitting_out) | frozenset(
            int(d) for d in screen.stragglers
        )
        self._lost = frozenset(int(d) for d in screen.lost)
        return screen

    def _failback(self, round_: int) -> int:
        """Displaced nodes whose home edge is reachable again move back under it; returns how many."""
        faults = self.ctx.system.faults
        moved = 0
        for node, home in sorted(self.displaced.items()):
            if bool(faults.reachable(round_, [home])[0]):
                del self.displaced[node]
                self.migrate(node, home)
                moved += 1
        return moved

    def _failover(self, round_: int) -> int:
        """Children of every failed edge (deepest first) move to :meth:`failover_target`; returns how many."""
        topo = self.ctx.topology
        failed = self.ctx.system.faults.failed_edges(round_)
        down = set(failed)
        moved = 0
        for edge in sorted(failed, key=lambda e: (-topo.depth(e), e)):
            for child in list(topo.children(edge)):
                if child in down:
                    continue  # a failed sub-edge was emptied first; it stays where it is
                self.displaced.setdefault(child, edge)  # a node displaced twice keeps its first home
                self.migrate(child, self.failover_target(edge, round_))
                moved += 1
        return moved

    def failover_target(self, edge: int, round_: int) -> int:
        """Where a child of failed ``edge`` goes in ``round_``: walking up from the edge's parent, the first
        ancestor with a live edge child gives the live edge with the fewest devices (ties: lowest id); an
        ancestor without one takes the child itself if it is reachable (the cloud always is)."""
        topo = self.ctx.topology
        faults = self.ctx.system.faults

        def live(node: int) -> bool:
            return bool(faults.reachable(round_, [node])[0])

        for ancestor in topo.path_to_root(edge)[1:]:
            edges = [c for c in topo.children(ancestor) if topo.tier(c) is Tier.EDGE and live(c)]
            if edges:
                return min(edges, key=lambda e: (len(topo.subtree_devices(e)), e))
            if live(ancestor):
                return ancestor
        return ROOT_ID

    def _charge_lost_logits(self, devices: Sequence[int]) -> None:
        """Each device inferred its logits and sent them up, but they were lost: inference + full upload."""
        system = self.ctx.system
        nodes = np.asarray(devices, dtype=np.int64)
        samples = np.array([self.count(int(d)) for d in nodes], dtype=np.float64)
        forward = np.array([self.models.arch(int(d)).info.flops_forward for d in nodes], dtype=np.float64)
        system.compute(nodes, samples * forward, phase=PHASE_TEACHER)
        system.transmit(
            nodes,
            system.topology.parent_array[nodes],
            np.asarray(logit_bytes(self.num_classes, samples), dtype=np.float64),
            phase=PHASE_LOST_UPLOAD,
        )

    def _charge_stragglers(self, screen: RoundScreen) -> None:
        """Stragglers received their teacher's logits (its inference and the transfer are charged), then are
        charged what they spent until the deadline (system/faults.py)."""
        nodes = screen.stragglers
        if not nodes.size:
            return
        system = self.ctx.system
        parents = system.topology.parent_array[nodes]
        samples = np.array([self.store.count(self.ctx.ordinal(int(d))) for d in nodes], dtype=np.float64)
        forward = np.array([self.models.arch(int(p)).info.flops_forward for p in parents], dtype=np.float64)
        system.compute(parents, samples * forward, phase=PHASE_TEACHER)
        system.transmit(
            parents,
            nodes,
            np.asarray(logit_bytes(self.num_classes, samples), dtype=np.float64),
            phase=PHASE_LOGITS_DOWN,
        )
        screen.charge(lost=False)  # lost uploads are charged when their pair distils (_charge_lost_logits)

    def _node_id(self, ref: int | str) -> int:
        topo = self.ctx.topology
        if isinstance(ref, str):
            for n in topo.nodes:
                if n.name == ref:
                    return n.id
            raise ConfigError(
                f"algorithm.migrations: no node named {ref!r}",
                hint="use a node id or a default name such as edge0 or dev3",
            )
        if not 0 <= int(ref) < topo.num_nodes:
            raise ConfigError(f"algorithm.migrations: node id {ref} is not in 0..{topo.num_nodes - 1}")
        return int(ref)

    def migrate(self, node: int, new_parent: int) -> dict[tuple[int, int], float]:
        """Re-parent ``node`` (with its subtree) under ``new_parent`` (Theorem 1) and send each subtree
        device's embeddings + labels hop by hop up the new path, to just below the first node that already
        holds them; each new holder decodes them once. Holders keep what they received (at INIT a device's
        ancestors, later the nodes migrations sent it to), so moving a device between two edges costs one hop
        the first time, and moving it back, or up to a node that holds its data, costs nothing.

        Charged to the system's current round; returns the bytes per (child, parent) link.
        """
        topo, system = self.ctx.topology, self.ctx.system
        old_path = topo.path_to_root(node)
        system.reparent(node, new_parent)
        new_path = topo.path_to_root(node)
        if new_path == old_path:
            return {}
        ends: list[int] = []
        tops: list[int] = []
        sizes: list[float] = []
        decoded: dict[int, int] = defaultdict(int)
        for device in topo.subtree_devices(node):
            held = self.holders[device]
            stop = next(i for i, n in enumerate(new_path) if i > 0 and n in held)  # the cloud holds all
            receivers = new_path[1:stop]
            held.update(receivers)
            samples = self.store.count(self.ctx.ordinal(device))
            if receivers and samples:
                ends.append(device)
                tops.append(new_path[stop - 1])  # the last node on the path that receives them
                sizes.append(float(samples * self.bytes_per_sample))
                for r in receivers:
                    decoded[r] += samples
        load = route(system, ends, sizes, top=tops, direction="up", phase=PHASE_MIGRATE_EMBED)
        if decoded:
            work = [float(self.dec_flops * k) for k in decoded.values()]
            system.compute(list(decoded), work, phase=PHASE_MIGRATE_DECODE)
        return load

    def _restore_parents(self, parents: np.ndarray) -> None:
        """Adopt a saved parent per node (-1 for the cloud) into this run's tree."""
        topo = self.ctx.topology
        if parents.shape != (topo.num_nodes,):
            raise DataError(
                f"FedAgg checkpoint: {parents.shape} parents for a tree of {topo.num_nodes} nodes",
                hint="resume with the config the checkpoint was written by",
            )
        if np.array_equal(parents, topo.parent_array):
            return
        tree = topo.to_dict()
        for entry in tree["nodes"]:
            parent = int(parents[entry["id"]])
            entry["parent"] = None if parent < 0 else parent
        topo.load_dict(tree)
        self.ctx.system.channel.refresh()
