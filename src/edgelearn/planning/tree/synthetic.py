"""A dry-run round: the work of one hierarchical FL round charged straight to a system model, without
training, so the planner can be exercised (tests, the scaling benchmark) on any tree in milliseconds.

The round is HierFAVG's shape (Liu et al., ICC 2020) with one edge aggregation per cloud round: the cloud
broadcasts the model to its edges, each edge to its devices; every device trains (``device_flops``) and
uploads its model; each edge averages (``edge_flops``) and uploads to the cloud, which averages
(``cloud_flops``). Devices attached to the cloud directly train and upload to it.
"""

from __future__ import annotations

import numpy as np

from edgelearn.planning.tree.profile import RoundProfile
from edgelearn.system import SystemModel
from edgelearn.system.topology import ROOT_ID, Tier

PHASE_DOWN, PHASE_TRAIN, PHASE_UP, PHASE_AGGREGATE = "broadcast", "train", "upload", "aggregate"


def hierarchical_round(
    system: SystemModel,
    *,
    model_bytes: float,
    device_flops: np.ndarray | float,
    edge_flops: float,
    cloud_flops: float,
    round_: int = 1,
) -> RoundProfile:
    """Charge one round to ``system`` (its ledger records it) and return its profile."""
    topo = system.topology
    devices = np.asarray(topo.devices, dtype=np.int64)
    edges = np.asarray(topo.edges, dtype=np.int64)
    parents = topo.parent_array
    work = np.broadcast_to(np.asarray(device_flops, dtype=np.float64), devices.shape)
    system.begin_round(round_)
    for depth in sorted({topo.depth(int(n)) for n in range(1, topo.num_nodes)}):  # top level first
        below = np.array([n for n in range(1, topo.num_nodes) if topo.depth(n) == depth], dtype=np.int64)
        system.transmit(parents[below], below, model_bytes, phase=PHASE_DOWN)
    system.compute(devices, work, phase=PHASE_TRAIN)
    system.transmit(devices, parents[devices], model_bytes, phase=PHASE_UP)
    for depth in sorted({topo.depth(int(e)) for e in edges}, reverse=True):  # deepest edges first
        level = np.array([e for e in edges if topo.depth(int(e)) == depth], dtype=np.int64)
        system.compute(level, edge_flops, phase=PHASE_AGGREGATE)
        system.transmit(level, parents[level], model_bytes, phase=PHASE_UP)
    system.compute(ROOT_ID, cloud_flops, phase=PHASE_AGGREGATE)
    system.end_round()
    assert all(topo.tier(int(d)) is Tier.DEVICE for d in devices)
    return RoundProfile.from_ledger(system.ledger, round_, topo.num_nodes)
