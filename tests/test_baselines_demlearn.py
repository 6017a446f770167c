"""DemLearn: the dendrogram cut into levels on hand-made parameter vectors, generalization and specialization
against hand-computed values, the round's ledger per hop, per-node storage and checkpoints."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from tiny import (
    TEST_COUNTS,
    TIER_COUNTS,
    constant_logits,
    labels_with_counts,
    one_class_logits,
    synthetic_context,
)

from edgelearn.algorithms.base import RunContext
from edgelearn.algorithms.demlearn.algorithm import (
    DISTANCE_FLOPS_PER_DIM,
    PHASE_BROADCAST,
    PHASE_CLUSTER,
    PHASE_DOWNLOAD,
    PHASE_GENERALIZE,
    PHASE_UPLOAD,
    DemLearn,
    DemLearnConfig,
    Group,
    build_hierarchy,
    generalize,
    number_groups,
    parents,
    specialize,
)
from edgelearn.algorithms.kit.comm import AGG_FLOPS_PER_PARAM
from edgelearn.checkpoint import decode, encode
from edgelearn.engine import average_states
from edgelearn.errors import DataError

TWO_EDGES = ["topology.devices=null", "topology.edges=2", "topology.devices_per_edge=3"]
DEVICE_MODEL: dict[str, Any] = {"device": {"name": "mlp", "options": {"hidden": [16]}}}


def make_ctx(*overrides: str) -> RunContext:
    """A tiny synthetic-image context (8x8, 10 classes, IID) on the CPU with the serial executor."""
    return synthetic_context(overrides or TWO_EDGES)


def make_algo(ctx: RunContext, **cfg: Any) -> DemLearn:
    """DemLearn on a small MLP with batch 16, initialised."""
    settings = {"rounds": 2, "models": DEVICE_MODEL, "local": {"batch_size": 16, "lr": 0.05}, **cfg}
    algo = DemLearn(ctx, DemLearnConfig.model_validate(settings))
    algo.init()
    return algo


def canon(node: Group | int) -> Any:
    """An order-free form of a hierarchy: (level, sorted children) for groups, the id for devices."""
    if isinstance(node, Group):
        return (node.level, tuple(sorted((canon(c) for c in node.children), key=repr)))
    return node


# Six devices on a line: pairs at distance 1; {ab}-{cd} average distance 10, {cd}-{ef} 20, so the last merge
# joins {a, b, c, d} with {e, f}.
LINE = np.array([[0.0], [1.0], [10.0], [11.0], [30.0], [31.0]])
IDS = [5, 6, 7, 8, 9, 10]


def test_config_defaults_and_validation() -> None:
    cfg = DemLearnConfig()
    assert (cfg.levels, cfg.alpha, cfg.local.epochs, cfg.mu, cfg.local.momentum) == (3, 0.7, 2, 0.0, 0.0)
    assert (cfg.local.lr, cfg.local.batch_size, cfg.linkage, cfg.metric, cfg.recluster_every) == (
        0.001, 8, "average", "euclidean", 1,
    )  # fmt: skip
    with pytest.raises(ValidationError, match="ward"):
        DemLearnConfig(linkage="ward", metric="cosine")
    with pytest.raises(ValidationError):
        DemLearnConfig(alpha=1.5)


def test_dendrogram_cut_into_levels_on_hand_made_vectors() -> None:
    two = build_hierarchy(LINE, IDS, 2)
    assert canon(two) == canon(Group(3, [Group(2, [Group(1, [5, 6]), Group(1, [7, 8])]), Group(2, [9, 10])]))
    one = build_hierarchy(LINE, IDS, 1)
    assert canon(one) == canon(Group(2, [Group(1, [5, 6, 7, 8]), Group(1, [9, 10])]))
    three = build_hierarchy(LINE, IDS, 3)  # single devices hang at whatever level they appear
    assert canon(three) == canon(
        Group(4, [Group(3, [Group(2, [5, 6]), Group(2, [7, 8])]), Group(3, [9, 10])])
    )
    assert sorted(two.members()) == IDS
    assert [g.index for g in two.groups()] == list(range(5))
    assert build_hierarchy(LINE[:1], [42], 3) == Group(4, [42])


def test_cosine_metric_groups_by_direction() -> None:
    vectors = np.array([[1.0, 0.0], [9.0, 0.5], [0.0, 1.0], [0.4, 8.0]])
    assert canon(build_hierarchy(vectors, [1, 2, 3, 4], 1, metric="cosine")) == canon(
        Group(2, [Group(1, [1, 2]), Group(1, [3, 4])])
    )
    # Euclidean: 1-3 merge first (1.41); 4 joins them at mean(8.02, 7.01) = 7.5 before 2 at mean(8.02, 9.01).
    assert canon(build_hierarchy(vectors, [1, 2, 3, 4], 1)) == canon(Group(2, [Group(1, [1, 3, 4]), 2]))


def test_bad_vectors_raise_data_errors() -> None:
    with pytest.raises(DataError, match="non-finite"):
        build_hierarchy(np.array([[0.0], [np.nan]]), [1, 2], 2)
    with pytest.raises(DataError, match="one vector per device"):
        build_hierarchy(LINE, IDS[:3], 2)
    with pytest.raises(DataError, match="cosine"):
        build_hierarchy(np.array([[0.0, 0.0], [1.0, 0.0]]), [1, 2], 1, metric="cosine")


def test_generalization_and_specialization_by_hand() -> None:
    # root -> [G1(a, b), c] with one scalar parameter: a = 1, b = 3, c = 8.
    root = number_groups(Group(2, [Group(1, [1, 2]), 3]))
    states = {1: {"w": torch.tensor([1.0])}, 2: {"w": torch.tensor([3.0])}, 3: {"w": torch.tensor([8.0])}}
    general = generalize(root, states)
    assert [g["w"].item() for g in general] == [4.0, 2.0]  # root: (2 * 2 + 1 * 8) / 3; G1: (1 + 3) / 2
    groups, devices = specialize(root, general, states, 0.5)
    assert [g["w"].item() for g in groups] == [4.0, 3.0]  # the root keeps its model; G1: (2 + 4) / 2
    assert {d: s["w"].item() for d, s in devices.items()} == {1: 2.0, 2: 3.0, 3: 6.0}
    assert {d: g.index for d, g in parents(root).items()} == {1: 1, 2: 1, 3: 0}


def test_round_ledger_per_hop() -> None:
    ctx = make_ctx()
    algo = make_algo(ctx)
    topo = ctx.topology
    stats = algo.run_round(1)
    p, nbytes = algo.arch.info.params, algo.arch.info.param_bytes
    events = ctx.system.ledger.events(1)

    def link_bytes(phase: str, src: int, dst: int) -> float:
        sel = (events["phase"] == phase) & (events["src"] == src) & (events["dst"] == dst)
        return float(events["bytes"][sel].sum())

    owner = parents(algo.root)
    for e in topo.edges:
        kids = topo.children(e)
        assert link_bytes(PHASE_UPLOAD, e, 0) == len(kids) * nbytes  # the edge relays every model
        assert link_bytes(PHASE_BROADCAST, 0, e) == nbytes  # one initial model per backhaul
        # Each distinct parent-group model crosses the backhaul once.
        assert link_bytes(PHASE_DOWNLOAD, 0, e) == len({owner[d].index for d in kids}) * nbytes
        for d in kids:
            for phase, src, dst in ((PHASE_UPLOAD, d, e), (PHASE_BROADCAST, e, d), (PHASE_DOWNLOAD, e, d)):
                assert link_bytes(phase, src, dst) == nbytes
    n = len(algo.devices)
    cluster = events["flops"][events["phase"] == PHASE_CLUSTER].sum()
    assert cluster == DISTANCE_FLOPS_PER_DIM * p * n * (n - 1) / 2
    children = sum(len(g.children) for g in algo.root.groups())
    assert events["flops"][events["phase"] == PHASE_GENERALIZE].sum() == AGG_FLOPS_PER_PARAM * p * children
    assert set(stats["bytes_by_phase"]) == {PHASE_BROADCAST, PHASE_UPLOAD, PHASE_DOWNLOAD}
    assert sum(stats["groups_by_level"].values()) == len(list(algo.root.groups()))
    algo.run_round(2)
    assert PHASE_BROADCAST not in algo.run_round(3)["bytes_by_phase"]


def test_alpha_zero_root_is_the_device_mean_and_alpha_one_collapses_to_it() -> None:
    keep = make_algo(make_ctx(), alpha=0.0)
    keep.run_round(1)
    states = [keep.device_states[d] for d in keep.devices]
    mean = average_states(states, [1.0] * len(states))
    assert all(torch.allclose(keep.cloud_state[k], mean[k], atol=1e-6) for k in mean)
    assert not torch.equal(states[0]["net.1.weight"], states[1]["net.1.weight"])  # devices kept their own
    merge = make_algo(make_ctx(), alpha=1.0)
    merge.run_round(1)
    for d in merge.devices:
        assert all(torch.allclose(merge.device_states[d][k], merge.cloud_state[k], atol=1e-6) for k in mean)


def test_two_rounds_report_root_and_device_accuracy() -> None:
    algo = make_algo(make_ctx(), levels=2)
    for r in (1, 2):
        algo.run_round(r)
        ev = algo.evaluate()
        tiers = ev["accuracy_by_tier"]
        assert set(tiers) == {"cloud", "edge", "device"} and tiers["edge"] is None
        assert tiers["cloud"] == ev["accuracy"]
    assert sorted(algo.root.members()) == sorted(algo.devices)
    assert algo.delivered_state() is algo.cloud_state
    # Exact on a constructed case: the root and the evaluated devices output constant logits log p (classifier
    # weight zeroed), p = 1/2 on a favourite class: the root class 0 on test labels TEST_COUNTS = (16, 8, 6,
    # 4, ...), devices classes 1, 2, 3, ... on a tier subset with TIER_COUNTS = (10, 5, 5, 2, 2, 1, 0, ...).
    algo.cloud_state = constant_logits(algo.cloud_state, one_class_logits(0))
    algo.ctx.test_y = labels_with_counts(TEST_COUNTS)
    algo.tier_test = (algo.tier_test[0][:25], labels_with_counts(TIER_COUNTS))  # constant models: any inputs
    favourite = {d: 1 + j for j, d in enumerate(algo.eval_devices)}
    for d, cls in favourite.items():
        algo.device_states[d] = constant_logits(algo.device_states[d], one_class_logits(cls))
    ev = algo.evaluate()
    assert ev["accuracy"] == 16 / 40  # an integer count over n: exact
    hits = [TIER_COUNTS[cls] for cls in favourite.values()]
    assert ev["accuracy_by_tier"]["device"] == pytest.approx(sum(hits) / len(hits) / 25, rel=1e-15)
    # log 2 on the 16 class-0 samples, log 18 on the 24 others; 1e-6: float32 logits and cross-entropy
    assert ev["loss"] == pytest.approx((16 * math.log(2) + 24 * math.log(18)) / 40, rel=1e-6)


def test_no_parameter_is_shared_between_nodes() -> None:
    algo = make_algo(make_ctx())

    def storages() -> list[int]:
        nodes = [*algo.device_states.values(), *algo.group_states]
        return [t.untyped_storage().data_ptr() for s in nodes for t in s.values()]

    assert len(set(storages())) == len(storages())
    algo.run_round(1)
    algo.run_round(2)
    assert len(set(storages())) == len(storages())


def test_checkpoint_round_trip_keeps_the_hierarchy() -> None:
    first = make_algo(make_ctx(), recluster_every=5)
    first.run_round(1)
    saved = decode(encode(first.state_dict()))  # string keys, as a checkpoint file gives back
    first.run_round(2)
    resumed = make_algo(make_ctx(), recluster_every=5)
    resumed.load_state_dict(saved)
    assert resumed.root == first.root  # round 2 does not re-cluster: the tree must survive the checkpoint
    resumed.run_round(2)
    for d, state in first.device_states.items():
        assert all(torch.equal(state[k], resumed.device_states[d][k]) for k in state)
    assert all(torch.equal(first.cloud_state[k], resumed.cloud_state[k]) for k in first.cloud_state)
    with pytest.raises(DataError, match="device states"):
        resumed.load_state_dict({**saved, "device_states": {}})
