"""Moving models along the tree: downlink broadcasts and uplink relays, priced by the system model."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from edgelearn.system import SystemModel

# A weighted sum of n models costs one multiply and one add per parameter per model.
AGG_FLOPS_PER_PARAM = 2


def _node_ids(system: SystemModel, nodes: Iterable[int]) -> np.ndarray:
    """Node ids as an int64 array, rejecting ids outside the tree as ``Topology`` does."""
    if isinstance(nodes, np.ndarray):
        ids = nodes.astype(np.int64).reshape(-1)
    else:
        ids = np.array([int(n) for n in nodes], dtype=np.int64)
    bad = (ids < 0) | (ids >= system.topology.num_nodes)
    if bad.any():
        raise ValueError(f"node id {int(ids[np.argmax(bad)])!r} is not in 0..{system.topology.num_nodes - 1}")
    return ids


def _hops_below(system: SystemModel, ids: np.ndarray, top: int) -> np.ndarray:
    """The child end of every link on the paths from each node up to ``top`` (one entry per node and link).

    Walks all paths at once, one tree level per step, so a cohort costs a few array operations per level.
    """
    topo = system.topology
    parents, depth = topo.parent_array, topo.depth_array
    if not 0 <= int(top) < topo.num_nodes:
        raise ValueError(f"node {int(ids[0])} is not below node {top}")
    top_depth = depth[int(top)]
    cur = ids.copy()
    hops: list[np.ndarray] = []
    while np.any(move := depth[cur] > top_depth):
        hops.append(cur[move])
        cur[move] = parents[cur[move]]
    bad = cur != int(top)
    if bad.any():
        raise ValueError(f"node {int(ids[np.argmax(bad)])} is not below node {top}")
    return np.concatenate(hops) if hops else np.zeros(0, dtype=np.int64)


def send_down(
    system: SystemModel, targets: Iterable[int], nbytes: int, *, source: int = 0, phase: str
) -> None:
    """Send one model from ``source`` down to each target, hop by hop; every link carries it once."""
    ids = _node_ids(system, targets)
    if not ids.size:
        return
    child = np.unique(_hops_below(system, ids, source))
    parent = system.topology.parent_array[child]
    order = np.lexsort((child, parent))  # (parent, child) order within each level
    child, parent = child[order], parent[order]
    level = system.topology.depth_array[parent]
    for d in np.unique(level).tolist():  # top level first
        at = level == d
        system.transmit(parent[at], child[at], nbytes, phase=phase)


def send_up(system: SystemModel, sources: Iterable[int], nbytes: int, *, target: int = 0, phase: str) -> None:
    """Each source sends ``nbytes`` up to ``target``; intermediate nodes relay everything from below."""
    ids = _node_ids(system, sources)
    if not ids.size:
        return
    child, load = np.unique(_hops_below(system, ids, target), return_counts=True)
    parent = system.topology.parent_array[child]
    level = system.topology.depth_array[child]
    for d in np.unique(level)[::-1].tolist():  # deepest links first
        at = level == d
        system.transmit(child[at], parent[at], np.asarray(nbytes * load[at]).astype(np.int64), phase=phase)


def aggregate_cost(
    system: SystemModel, node: int, num_models: int, params: int, *, phase: str = "aggregate"
) -> None:
    """Charge a server the FLOPs of a weighted average of ``num_models`` models."""
    if num_models > 0:
        system.compute(node, float(AGG_FLOPS_PER_PARAM * params * num_models), phase=phase)


def planned_samples(sizes: np.ndarray, local: Any) -> np.ndarray:
    """Samples each device will process in local training, as ``engine.batches.batch_schedule`` walks them.

    ``epochs`` passes touch every sample that often; ``steps`` batches hold ``min(batch_size, n)`` each.
    Used to predict training time before training (round deadlines) and to charge stragglers.
    """
    n = np.asarray(sizes, dtype=np.int64)
    if local.steps is not None:
        return np.where(n > 0, int(local.steps) * np.minimum(int(local.batch_size), n), 0)
    return int(local.epochs) * n
