"""FedAgg's views of the tree (Wu et al., INFOCOM 2024, §IV): which devices and how many bridge samples each
node's subtree holds, recomputed only when the tree changes (a migration bumps ``Topology.version``)."""

from __future__ import annotations

from collections.abc import Sequence

from edgelearn.algorithms.base import RunContext
from edgelearn.algorithms.fedagg.bridge import BridgeStore
from edgelearn.system import Tier


class SubtreeViews:
    """Per-node subtree ordinals and bridge-sample counts for a FedAgg-like algorithm.

    Expects ``ctx`` (the run context), ``store`` (the :class:`BridgeStore`), ``_idle`` (devices sitting the
    current round out) and ``_cache_version`` (-1 to force a refresh) on the instance.
    """

    ctx: RunContext
    store: BridgeStore
    _idle: frozenset[int]
    _cache_version: int

    def _refresh(self) -> None:
        topo = self.ctx.topology
        if self._cache_version == topo.version:
            return
        self._ordinals: dict[int, list[int]] = {}
        self._counts: dict[int, int] = {}
        for n in range(topo.num_nodes):
            ords = [self.ctx.ordinal(d) for d in topo.subtree_devices(n)]
            self._ordinals[n] = ords
            self._counts[n] = sum(self.store.count(k) for k in ords)
        self._cache_version = topo.version

    def count(self, node: int) -> int:
        """Samples (bridge samples) in ``node``'s subtree; a device's own sample count, 0 while it sits the
        round out (so the schedules skip its pair; its ancestors keep the bridge samples they store)."""
        self._refresh()
        if node in self._idle:
            return 0
        return self._counts[int(node)]

    def ordinals(self, node: int) -> list[int]:
        """Device ordinals of ``node``'s subtree, in node-id order (the row order of its bridge samples)."""
        self._refresh()
        return self._ordinals[int(node)]

    def is_leaf(self, node: int) -> bool:
        """True for devices (the leaves of the tree)."""
        return self.ctx.topology.tier(int(node)) is Tier.DEVICE

    def _rows(self, ordinals: Sequence[int]) -> tuple[int, ...]:
        """The device ordinals that hold samples, in order: the key of a set of bridge rows."""
        return tuple(int(k) for k in ordinals if self.store.count(int(k)) > 0)
