"""Moving models along the tree: downlink broadcasts and uplink relays, priced by the system model."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

from edgelearn.system import SystemModel
from edgelearn.system.faults import FaultModel

# A weighted sum of n models costs one multiply and one add per parameter per model.
AGG_FLOPS_PER_PARAM = 2


def send_down(
    system: SystemModel, targets: Iterable[int], nbytes: int, *, source: int = 0, phase: str
) -> None:
    """Send one model from ``source`` down to each target, hop by hop; every link carries it once."""
    hops: set[tuple[int, int]] = set()
    for node in targets:
        path = system.topology.path_to_root(int(node))
        if source not in path:
            raise ValueError(f"node {node} is not below node {source}")
        below = path[: path.index(source) + 1]
        hops.update(zip(below[1:], below[:-1]))  # (parent, child) pairs
    _transmit_by_depth(system, sorted(hops), nbytes, phase, downward=True)


def send_up(system: SystemModel, sources: Iterable[int], nbytes: int, *, target: int = 0, phase: str) -> None:
    """Each source sends ``nbytes`` up to ``target``; intermediate nodes relay everything from below."""
    load: Counter[tuple[int, int]] = Counter()
    for node in sources:
        path = system.topology.path_to_root(int(node))
        if target not in path:
            raise ValueError(f"node {node} is not below node {target}")
        above = path[: path.index(target) + 1]
        for child, parent in zip(above[:-1], above[1:]):
            load[(child, parent)] += 1
    hops = sorted(load)
    depth = system.topology.depth
    for d in sorted({depth(c) for c, _ in hops}, reverse=True):
        level = [(c, p) for c, p in hops if depth(c) == d]
        system.transmit(
            np.array([c for c, _ in level]),
            np.array([p for _, p in level]),
            np.array([nbytes * load[h] for h in level], dtype=np.int64),
            phase=phase,
        )


def _transmit_by_depth(
    system: SystemModel, hops: list[tuple[int, int]], nbytes: int, phase: str, *, downward: bool
) -> None:
    depth = system.topology.depth
    levels = sorted({depth(p) for p, _ in hops}, reverse=not downward)
    for d in levels:
        level = [(p, c) for p, c in hops if depth(p) == d]
        system.transmit(np.array([p for p, _ in level]), np.array([c for _, c in level]), nbytes, phase=phase)


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


def fault_stats(faults: FaultModel, round_: int) -> dict[str, Any]:
    """The round's fault counters for its stats (``kept_previous_model`` when nothing arrived)."""
    counts = faults.round_counts(round_)
    empty = bool(counts.pop("empty"))
    return {**counts, "kept_previous_model": empty}
