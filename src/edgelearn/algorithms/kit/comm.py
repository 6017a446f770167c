"""Moving payloads along the tree, priced by the system model: one hop-by-hop router (:func:`route`) for
model broadcasts, relayed uploads and per-flow payloads (logits, features, embeddings), plus aggregation cost,
planned local work and the round's fault counters."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

from edgelearn.system import SystemModel

# A weighted sum of n models costs one multiply and one add per parameter per model.
AGG_FLOPS_PER_PARAM = 2
FLOAT_BYTES = 4
"""Embeddings, features and logits travel as float32."""
LABEL_BYTES = 8
"""A label travels as one int64, as FedAgg's official demo keeps labels (torch's default integer tensor)."""


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


def _hops(system: SystemModel, ids: np.ndarray, tops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every link on the path from each node up to its top, as (child end of the link, index of the node).

    Walks all paths at once, one tree level per step, so a cohort costs a few array operations per level.
    """
    topo = system.topology
    parents, depth = topo.parent_array, topo.depth_array
    bad_top = (tops < 0) | (tops >= topo.num_nodes)
    if bad_top.any():
        raise ValueError(
            f"node {int(ids[np.argmax(bad_top)])} is not below node {int(tops[np.argmax(bad_top)])}"
        )
    top_depth = depth[tops]
    cur, owner = ids.copy(), np.arange(ids.size)
    hops: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    while np.any(move := depth[cur] > top_depth):
        hops.append(cur[move])
        owners.append(owner[move])
        cur[move] = parents[cur[move]]
    bad = cur != tops
    if bad.any():
        raise ValueError(f"node {int(ids[np.argmax(bad)])} is not below node {int(tops[np.argmax(bad)])}")
    if not hops:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(hops), np.concatenate(owners)


def route(
    system: SystemModel,
    ends: Iterable[int],
    nbytes: float | Sequence[float] | np.ndarray,
    *,
    top: int | Sequence[int] | np.ndarray = 0,
    direction: Literal["up", "down"],
    phase: str,
    multicast: bool = False,
) -> dict[tuple[int, int], float]:
    """Move payloads hop by hop between each node of ``ends`` and its ``top`` (an ancestor: one for all, or
    one per end), and charge every link: the one router of the tree algorithms.

    ``nbytes`` is one size for every end or one per end (per-flow payloads: each device's own logits or
    embeddings). ``direction="up"`` sends from the ends to the top; links go one tree level at a time,
    deepest first, so a relay forwards only after it has received, and loads of flows sharing a link add up.
    ``direction="down"`` sends from the top to the ends, top level first. With ``multicast`` (one model
    broadcast to many, a uniform ``nbytes``) every link carries the payload once however many ends lie
    below it. Returns the bytes charged per link, keyed (sender, receiver).
    """
    ids = _node_ids(system, ends)
    sizes = np.broadcast_to(np.asarray(nbytes, dtype=np.float64), ids.shape)
    if multicast and np.ndim(nbytes) != 0:
        raise ValueError("route: a multicast carries one payload; give nbytes as a single size")
    if not ids.size:
        return {}
    tops = np.broadcast_to(np.asarray(top, dtype=np.int64), ids.shape)
    child_of_hop, owner = _hops(system, ids, tops)
    child, index = np.unique(child_of_hop, return_inverse=True)
    if multicast:
        load = np.full(child.shape, float(nbytes), dtype=np.float64)  # type: ignore[arg-type]
    else:
        load = np.bincount(index, weights=sizes[owner], minlength=child.size)
    parent = system.topology.parent_array[child]
    level = system.topology.depth_array[child]
    # up: deepest level first, by child; down: top level first, by (parent, child) (as the ledger always had)
    order = np.lexsort((child, parent, level)) if direction == "down" else np.lexsort((child, -level))
    child, parent, load, level = child[order], parent[order], load[order], level[order]
    out: dict[tuple[int, int], float] = {}
    for d in dict.fromkeys(level.tolist()):  # levels in charging order
        at = level == d
        src, dst = (child[at], parent[at]) if direction == "up" else (parent[at], child[at])
        system.transmit(src, dst, load[at], phase=phase)
        out.update(zip(zip(src.tolist(), dst.tolist()), load[at].tolist()))
    return out


def send_down(
    system: SystemModel, targets: Iterable[int], nbytes: int, *, source: int = 0, phase: str
) -> None:
    """Broadcast one model from ``source`` down to each target (:func:`route`, multicast)."""
    route(system, targets, nbytes, top=source, direction="down", phase=phase, multicast=True)


def send_up(system: SystemModel, sources: Iterable[int], nbytes: int, *, target: int = 0, phase: str) -> None:
    """Each source sends ``nbytes`` up to ``target``; intermediate nodes relay everything from below."""
    route(system, sources, nbytes, top=target, direction="up", phase=phase)


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
