"""The node tree: one cloud at the root, edge servers below it (any depth), devices at the leaves.

Node ids equal their index in ``Topology.nodes``; node 0 is always the cloud. Devices keep the position they
were created in (``device_ordinal``), which is what indexes the data partition, even after reparenting.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from edgelearn.errors import ConfigError

ROOT_ID = 0
"""The cloud is always node 0."""

SPEC_KEYS = frozenset({"name", "devices", "children"})
"""Keys allowed in a ``Topology.from_spec`` node."""

DEFAULT_SPEC_PATH = "topology.tree"
"""Where a nested spec lives in a run config; prefixes the paths named in error messages."""


class Tier(str, Enum):
    """The three tiers of the hierarchy."""

    CLOUD = "cloud"
    EDGE = "edge"
    DEVICE = "device"


TIER_ORDER: tuple[Tier, ...] = (Tier.CLOUD, Tier.EDGE, Tier.DEVICE)
"""Integer code of a tier = its index here (used by the columnar ledger and vectorized lookups)."""

TIER_CODE: dict[Tier, int] = {t: i for i, t in enumerate(TIER_ORDER)}


@dataclass(frozen=True)
class Node:
    """One node of the tree; ``parent`` is None only for the cloud."""

    id: int
    name: str
    tier: Tier
    parent: int | None


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


class Topology:
    """A cloud-rooted tree of edge servers and devices, with O(1) parent/children lookups.

    Children lists are kept sorted by node id, so the tree has one canonical form (and ``to_dict`` /
    ``from_dict`` round-trip exactly, reparenting included).
    """

    def __init__(self, nodes: Sequence[Node]) -> None:
        nodes = list(nodes)
        if not nodes:
            raise ConfigError("topology: no nodes", hint="build one with Topology.flat(devices=10)")
        for i, node in enumerate(nodes):
            if node.id != i:
                raise ConfigError(f"topology: node at index {i} has id {node.id}; ids must equal positions")
            if not isinstance(node.tier, Tier):
                raise ConfigError(f"topology: node {i} has tier {node.tier!r}; use one of {list(Tier)}")
        root = nodes[ROOT_ID]
        if root.tier is not Tier.CLOUD or root.parent is not None:
            raise ConfigError("topology: node 0 must be the cloud with no parent")
        for node in nodes[1:]:
            if node.tier is Tier.CLOUD:
                raise ConfigError(f"topology: node {node.id} is a second cloud; only node 0 may be the cloud")
            self._check_parent(nodes, node.id, node.parent)
        self._nodes = nodes
        self._children: list[list[int]] = [[] for _ in nodes]
        for node in nodes[1:]:
            assert node.parent is not None
            self._children[node.parent].append(node.id)
        for node in nodes:
            self._check_reaches_root(node.id)
        self._devices = [n.id for n in nodes if n.tier is Tier.DEVICE]
        if not self._devices:
            raise ConfigError(
                "topology: the tree has no devices", hint="give at least one node `devices: 1` or more"
            )
        self._edges = [n.id for n in nodes if n.tier is Tier.EDGE]
        self._ordinal = {node_id: k for k, node_id in enumerate(self._devices)}
        self.version = 0
        """Bumped on every reparent, so caches (channel shares, arrays) know to refresh."""
        self._cache: dict[str, np.ndarray] = {}
        self._cache_version = -1

    # ----------------------------------------------------------------- constructors
    @classmethod
    def flat(cls, devices: int) -> Topology:
        """Devices directly under the cloud (classic single-server federated learning)."""
        if not _is_int(devices) or devices < 1:
            raise ConfigError(
                f"topology.devices: got {devices!r}; need an integer >= 1", hint="e.g. Topology.flat(10)"
            )
        return cls.from_spec({"devices": int(devices)}, path="topology")

    @classmethod
    def hierarchical(
        cls, edges: int, devices_per_edge: int | Sequence[int], cloud_devices: int = 0
    ) -> Topology:
        """Cloud -> ``edges`` edge servers -> devices; equivalent to the matching ``from_spec`` tree.

        ``devices_per_edge`` is one count for all edges or a list with one count per edge. Ids follow
        ``from_spec``: the cloud's own devices first, then each edge followed by its devices.
        """
        if not _is_int(edges) or edges < 1:
            raise ConfigError(
                f"topology.edges: got {edges!r}; need an integer >= 1",
                hint="use Topology.flat(...) for a tree without edge servers",
            )
        if _is_int(devices_per_edge):
            counts: list[Any] = [devices_per_edge] * int(edges)
        elif isinstance(devices_per_edge, Sequence) and not isinstance(devices_per_edge, str):
            counts = list(devices_per_edge)
            if len(counts) != edges:
                raise ConfigError(
                    f"topology.devices_per_edge: got {len(counts)} counts for {edges} edges",
                    hint="give one count per edge, or a single integer for all",
                )
        else:
            raise ConfigError(
                f"topology.devices_per_edge: got {devices_per_edge!r}; need an int or a list of ints"
            )
        for i, count in enumerate(counts):
            if not _is_int(count) or count < 1:
                raise ConfigError(
                    f"topology.devices_per_edge[{i}]: got {count!r}; every edge needs an integer >= 1 devices"
                )
        spec = {"devices": cloud_devices, "children": [{"devices": int(c)} for c in counts]}
        return cls.from_spec(spec, path="topology")

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, path: str = DEFAULT_SPEC_PATH) -> Topology:
        """Build a tree of any depth from a nested spec (root = the cloud).

        A spec node is a dict with optional keys ``name`` (str), ``devices`` (int >= 0 device leaves
        directly under it) and ``children`` (list of spec nodes, each an edge server). Nodes are created
        depth-first: a node's own devices first, then its children in order. Default names are ``cloud``,
        ``edge0, edge1, ...`` and ``dev0, dev1, ...``, numbered globally in creation order. Every edge must
        have at least one device somewhere below it. Errors name the offending path, e.g.
        ``topology.tree.children[1].devices``.
        """
        nodes: list[Node] = []
        counters = {Tier.EDGE: 0, Tier.DEVICE: 0}
        names: dict[str, str] = {}

        def add(tier: Tier, parent: int | None, name: str | None, where: str) -> int:
            if name is None:
                prefix = "edge" if tier is Tier.EDGE else "dev"
                name = "cloud" if tier is Tier.CLOUD else f"{prefix}{counters[tier]}"
            if tier in counters:
                counters[tier] += 1
            if name in names:
                raise ConfigError(
                    f"{where}: node name {name!r} is already used by {names[name]}",
                    hint="give every node a unique name (default names are cloud, edgeN and devN)",
                )
            names[name] = where
            nodes.append(Node(len(nodes), name, tier, parent))
            return len(nodes) - 1

        def visit(node_spec: Any, tier: Tier, parent: int | None, where: str) -> int:
            if not isinstance(node_spec, Mapping):
                raise ConfigError(
                    f"{where}: expected a mapping with keys {sorted(SPEC_KEYS)}, "
                    f"got {type(node_spec).__name__}"
                )
            unknown = sorted(set(map(str, node_spec)) - SPEC_KEYS)
            if unknown:
                raise ConfigError(
                    f"{where}: unknown key(s) {unknown}", hint=f"allowed keys are {sorted(SPEC_KEYS)}"
                )
            name = node_spec.get("name")
            if name is not None and (not isinstance(name, str) or not name):
                raise ConfigError(f"{where}.name: got {name!r}; need a non-empty string")
            n_dev = node_spec.get("devices", 0)
            if not _is_int(n_dev) or n_dev < 0:
                raise ConfigError(f"{where}.devices: got {n_dev!r}; need an integer >= 0")
            children = node_spec.get("children", [])
            if not isinstance(children, Sequence) or isinstance(children, (str, bytes)):
                raise ConfigError(f"{where}.children: got {children!r}; need a list of spec nodes")
            node_id = add(tier, parent, name, where)
            before = counters[Tier.DEVICE]
            for _ in range(int(n_dev)):
                add(Tier.DEVICE, node_id, None, f"{where}.devices")
            for j, child in enumerate(children):
                visit(child, Tier.EDGE, node_id, f"{where}.children[{j}]")
            if tier is Tier.EDGE and counters[Tier.DEVICE] == before:
                raise ConfigError(
                    f"{where}: this edge server has no devices below it",
                    hint=f"set {where}.devices to 1 or more, or remove this edge",
                )
            return node_id

        visit(spec, Tier.CLOUD, None, path)
        if counters[Tier.DEVICE] == 0:
            raise ConfigError(f"{path}: the tree has no devices", hint=f"set {path}.devices to 1 or more")
        return cls(nodes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Topology:
        """Inverse of ``to_dict`` (e.g. to restore a reparented tree from a checkpoint)."""
        try:
            nodes = [
                Node(
                    int(n["id"]),
                    str(n["name"]),
                    Tier(n["tier"]),
                    None if n["parent"] is None else int(n["parent"]),
                )
                for n in data["nodes"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"topology dict: malformed ({exc!r})",
                hint="expected {'nodes': [{'id', 'name', 'tier', 'parent'}, ...]} as written by to_dict()",
            ) from exc
        return cls(nodes)

    # ----------------------------------------------------------------- queries
    @property
    def nodes(self) -> list[Node]:
        """All nodes, indexed by id (a copy)."""
        return list(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def num_nodes(self) -> int:
        """Number of nodes, cloud included."""
        return len(self._nodes)

    @property
    def num_devices(self) -> int:
        """Number of devices K."""
        return len(self._devices)

    @property
    def devices(self) -> list[int]:
        """Device node ids in creation order (position k = device ordinal k)."""
        return list(self._devices)

    @property
    def edges(self) -> list[int]:
        """Edge-server node ids in creation order."""
        return list(self._edges)

    def node(self, i: int) -> Node:
        """The node with id ``i``."""
        return self._nodes[self._check_id(i)]

    def parent(self, i: int) -> int | None:
        """Parent id of node ``i`` (None for the cloud)."""
        return self._nodes[self._check_id(i)].parent

    def children(self, i: int) -> list[int]:
        """Child ids of node ``i``, sorted by id."""
        return list(self._children[self._check_id(i)])

    def tier(self, i: int) -> Tier:
        """Tier of node ``i``."""
        return self._nodes[self._check_id(i)].tier

    def device_ordinal(self, node_id: int) -> int:
        """Position 0..K-1 of a device in ``devices``; this indexes the data partition."""
        try:
            return self._ordinal[int(node_id)]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"node {node_id!r} is not a device") from None

    def depth(self, i: int) -> int:
        """Number of hops from node ``i`` up to the cloud (the cloud has depth 0)."""
        return len(self.path_to_root(i)) - 1

    def path_to_root(self, i: int) -> list[int]:
        """``[i, parent(i), ..., 0]``."""
        path = [self._check_id(i)]
        while (p := self._nodes[path[-1]].parent) is not None:
            path.append(p)
        return path

    def subtree_devices(self, i: int) -> list[int]:
        """Device ids in the subtree rooted at ``i`` (``[i]`` for a device), sorted by id."""
        stack, found = [self._check_id(i)], []
        while stack:
            j = stack.pop()
            if self._nodes[j].tier is Tier.DEVICE:
                found.append(j)
            stack.extend(self._children[j])
        return sorted(found)

    # ----------------------------------------------------------------- vectorized views
    def _arrays(self) -> dict[str, np.ndarray]:
        if self._cache_version != self.version:
            n = len(self._nodes)
            parents = np.array([-1 if x.parent is None else x.parent for x in self._nodes], dtype=np.int64)
            tiers = np.array([TIER_CODE[x.tier] for x in self._nodes], dtype=np.int8)
            ordinals = np.full(n, -1, dtype=np.int64)
            ordinals[self._devices] = np.arange(len(self._devices))
            device_ids = np.array(self._devices, dtype=np.int64)
            depths = np.zeros(n, dtype=np.int64)
            above = parents.copy()
            while np.any(has := above >= 0):  # one pass per tree level
                depths[has] += 1
                above[has] = parents[above[has]]
            for arr in (parents, tiers, ordinals, device_ids, depths):
                arr.flags.writeable = False
            self._cache = {
                "parents": parents,
                "tiers": tiers,
                "ordinals": ordinals,
                "device_ids": device_ids,
                "depths": depths,
            }
            self._cache_version = self.version
        return self._cache

    @property
    def parent_array(self) -> np.ndarray:
        """Read-only int64 array: parent id per node, -1 for the cloud."""
        return self._arrays()["parents"]

    @property
    def depth_array(self) -> np.ndarray:
        """Read-only int64 array: ``depth`` per node (hops up to the cloud, 0 for the cloud)."""
        return self._arrays()["depths"]

    @property
    def tier_codes(self) -> np.ndarray:
        """Read-only int8 array: ``TIER_CODE`` per node."""
        return self._arrays()["tiers"]

    @property
    def device_ids(self) -> np.ndarray:
        """Read-only int64 array of ``devices``."""
        return self._arrays()["device_ids"]

    def device_ordinals(self, node_ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Vectorized ``device_ordinal``; raises ValueError if any id is not a device."""
        ids = np.asarray(node_ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self._nodes)):
            raise ValueError(f"node ids out of range 0..{len(self._nodes) - 1}")
        ords = self._arrays()["ordinals"][ids]
        if np.any(ords < 0):
            raise ValueError(f"nodes {ids[ords < 0].tolist()[:5]} are not devices")
        return ords

    # ----------------------------------------------------------------- mutation
    def reparent(self, node_id: int, new_parent: int) -> None:
        """Move a device or edge (with its subtree) under another cloud/edge node (mobility, re-clustering).

        Rejects moving the cloud, a device as the new parent, and cycles (a node under its own subtree),
        with ConfigError.
        """
        node_id, new_parent = self._check_id(node_id), self._check_id(new_parent)
        if node_id == ROOT_ID:
            raise ConfigError("topology.reparent: the cloud (node 0) cannot be moved")
        self._check_parent(self._nodes, node_id, new_parent)
        old = self._nodes[node_id]
        if old.parent == new_parent:
            return
        if node_id in self.path_to_root(new_parent):
            raise ConfigError(
                f"topology.reparent: moving node {node_id} under node {new_parent} would create a cycle",
                hint="a node cannot be moved below itself or one of its descendants",
            )
        assert old.parent is not None
        self._children[old.parent].remove(node_id)
        bisect.insort(self._children[new_parent], node_id)
        self._nodes[node_id] = Node(old.id, old.name, old.tier, new_parent)
        self.version += 1

    def load_dict(self, data: Mapping[str, Any]) -> None:
        """Adopt the parents stored by ``to_dict`` (same nodes, possibly reparented), in place."""
        other = Topology.from_dict(data)
        mine = [(n.id, n.name, n.tier) for n in self._nodes]
        if [(n.id, n.name, n.tier) for n in other._nodes] != mine:
            raise ConfigError(
                "topology dict: its nodes (ids, names, tiers) differ from this topology's",
                hint="restore a checkpoint into the same topology it was written from",
            )
        self._nodes, self._children = other._nodes, other._children
        self.version += 1

    # ----------------------------------------------------------------- export
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form: ``{"nodes": [{"id", "name", "tier", "parent"}, ...]}``."""
        return {
            "nodes": [
                {"id": n.id, "name": n.name, "tier": n.tier.value, "parent": n.parent} for n in self._nodes
            ]
        }

    def __repr__(self) -> str:
        return f"Topology(nodes={len(self._nodes)}, edges={len(self._edges)}, devices={len(self._devices)})"

    # ----------------------------------------------------------------- helpers
    def _check_id(self, i: int) -> int:
        if not _is_int(i) or not 0 <= i < len(self._nodes):
            raise ValueError(f"node id {i!r} is not in 0..{len(self._nodes) - 1}")
        return int(i)

    @staticmethod
    def _check_parent(nodes: Sequence[Node], node_id: int, parent: int | None) -> None:
        if parent is None or not _is_int(parent) or not 0 <= parent < len(nodes):
            raise ConfigError(f"topology: node {node_id} has invalid parent {parent!r}")
        if parent == node_id:
            raise ConfigError(f"topology: node {node_id} cannot be its own parent")
        if nodes[parent].tier is Tier.DEVICE:
            raise ConfigError(
                f"topology: node {parent} is a device and cannot be the parent of node {node_id}",
                hint="only the cloud or an edge server can have children",
            )

    def _check_reaches_root(self, i: int) -> None:
        seen: set[int] = set()
        j: int | None = i
        while j is not None:
            if j in seen:
                raise ConfigError(f"topology: node {i} is on a cycle and never reaches the cloud")
            seen.add(j)
            j = self._nodes[j].parent
