"""FedAgg end to end on tiny synthetic images: per-node models, INIT bytes, BSBODP order, ledger charges,
migration, trees of any depth and per-tier metrics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from tiny import (
    FEDAGG_HOLDOUT,
    FEDAGG_MODELS,
    TEST_COUNTS,
    TIER_COUNTS,
    constant_logits,
    labels_with_counts,
    one_class_logits,
    synthetic_config,
    synthetic_context,
    tiny_fedagg,
)

from edgelearn.algorithms.base import RunContext
from edgelearn.algorithms.fedagg.algorithm import (
    PHASE_INIT_DECODE,
    PHASE_INIT_EMBED,
    PHASE_INIT_ENCODE,
    FedAgg,
)
from edgelearn.algorithms.fedagg.bsbodp import (
    DOWN,
    PHASE_LOGITS_DOWN,
    PHASE_LOGITS_UP,
    PHASE_STUDENT,
    PHASE_TEACHER,
    UP,
)
from edgelearn.algorithms.fedagg.config import FedAggConfig
from edgelearn.algorithms.fedagg.failover import PHASE_MIGRATE_DECODE, PHASE_MIGRATE_EMBED
from edgelearn.algorithms.kit.distill import BRIDGE_KEY, TEACHER_KEY
from edgelearn.algorithms.kit.tiers import TIERS, default_tier_models
from edgelearn.data.dataset import index_digest
from edgelearn.engine import evaluate_state
from edgelearn.errors import ConfigError, DataError
from edgelearn.models import build_model, num_params
from edgelearn.models.autoencoder import save_autoencoder
from edgelearn.system import Tier

TWO_EDGES = ["topology.devices=null", "topology.edges=2", "topology.devices_per_edge=2"]
TEST_MODELS = FEDAGG_MODELS


def make_ctx(*overrides: str, num_train: int = 96) -> RunContext:
    """A tiny synthetic-image context (8x8, IID split) on the CPU with the serial executor."""
    return synthetic_context([f"data.num_train={num_train}", FEDAGG_HOLDOUT, *(overrides or TWO_EDGES)])


make_algo = tiny_fedagg


def phase_sum(ctx: RunContext, phase: str, column: str, round_: int | None = None) -> float:
    """Total of one ledger column over the events of one phase (optionally of one round)."""
    events = ctx.system.ledger.events(round_)
    return float(events[column][events["phase"] == phase].sum())


def test_config_defaults_are_the_papers_and_unknown_keys_fail() -> None:
    cfg = FedAggConfig()
    assert (cfg.beta, cfg.beta_leaf, cfg.gamma, cfg.T) == (10.0, 1.0, 1.0, 3.0)
    assert (cfg.local.lr, cfg.local.momentum, cfg.local.batch_size, cfg.schedule) == (
        0.001,
        0.9,
        8,
        "parallel",
    )
    with pytest.raises(ValidationError):
        FedAggConfig.model_validate({"betta": 1})
    with pytest.raises(ValidationError):
        FedAggConfig(beta=-1.0)


def test_default_models_grow_toward_the_cloud_and_fit_the_image_size() -> None:
    for shape in ((1, 8, 8), (1, 28, 28), (3, 32, 32)):
        models = default_tier_models(shape)
        params = [num_params(build_model(models[t].name, shape, 10, **models[t].options)) for t in TIERS]
        assert params == sorted(params) and len(set(params)) == 3
    assert default_tier_models((1, 8, 8))["cloud"].options == {"width": 2}
    assert default_tier_models((3, 32, 32))["cloud"].name == "resnet20"


def test_every_node_owns_a_tier_model_and_no_storage_is_shared() -> None:
    ctx = make_ctx()
    algo = make_algo(ctx)
    topo = ctx.topology
    params = {t: set() for t in Tier}
    for n in topo.nodes:
        params[n.tier].add(algo.models.arch(n.id).info.params)
    assert len(params[Tier.DEVICE]) == len(params[Tier.EDGE]) == len(params[Tier.CLOUD]) == 1
    assert min(params[Tier.DEVICE]) < min(params[Tier.EDGE]) < min(params[Tier.CLOUD])

    def storages() -> list[int]:
        return [t.untyped_storage().data_ptr() for s in algo.models.states.values() for t in s.values()]

    assert len(set(storages())) == len(storages())
    algo.run_round(1)
    assert len(set(storages())) == len(storages())
    # Training one device changes that device only.
    before = {n: {k: v.clone() for k, v in s.items()} for n, s in algo.models.states.items()}
    edge, device = topo.edges[0], topo.children(topo.edges[0])[0]
    algo._down([(edge, device)], 2)
    changed = [
        n for n, s in algo.models.states.items() if any(not torch.equal(s[k], before[n][k]) for k in s)
    ]
    assert changed == [device]


def test_device_mix_switches_a_seeded_share_of_devices() -> None:
    ctx = make_ctx("topology.devices=null", "topology.edges=2", "topology.devices_per_edge=4")
    algo = make_algo(ctx, device_mix={"share": 0.25, "model": {"name": "cnn_small"}})
    names = [algo.models.arch(d).name for d in ctx.topology.devices]
    assert names.count("cnn_small") == 2 and names.count("mlp") == 6
    algo.run_round(1)  # leaf cohorts of both device architectures train


def test_init_embedding_bytes_are_size_times_samples_times_hops() -> None:
    ctx = make_ctx(
        "topology.devices=null",
        "topology.edges=2",
        "topology.devices_per_edge=[2, 1]",
        "topology.cloud_devices=1",
    )
    algo = make_algo(ctx)
    topo = ctx.topology
    per_sample = algo.autoencoder.embed_numel * 4 + 8  # float32 embedding + int64 label
    assert algo.bytes_per_sample == per_sample == 4 * 4 * 4 * 4 + 8
    sizes = {d: len(ctx.client_data[ctx.ordinal(d)]) for d in topo.devices}
    hops = {d: topo.depth(d) for d in topo.devices}
    assert sorted(hops.values()) == [1, 2, 2, 2]  # one device under the cloud, three under edges
    expected = sum(per_sample * sizes[d] * hops[d] for d in topo.devices)
    assert phase_sum(ctx, PHASE_INIT_EMBED, "bytes", 0) == expected
    events = ctx.system.ledger.events(0)
    up = events[events["phase"] == PHASE_INIT_EMBED]
    for e in topo.edges:  # the edge relays exactly its subtree's payload
        assert up["bytes"][(up["src"] == e) & (up["dst"] == 0)].sum() == per_sample * algo.count(e)
    enc, dec = algo.enc_flops, algo.dec_flops
    n = sum(sizes.values())
    assert phase_sum(ctx, PHASE_INIT_ENCODE, "flops", 0) == enc * n
    # Devices decode their own samples, each edge its subtree, the cloud everything.
    decoded = n + sum(algo.count(e) for e in topo.edges) + n
    assert phase_sum(ctx, PHASE_INIT_DECODE, "flops", 0) == dec * decoded


def _expected_trace(schedule: str) -> list[tuple[int, int, int]]:
    # Tree: 0 cloud; 1 edge0 (devices 2, 3); 4 edge1 (devices 5, 6).
    if schedule == "sequential":  # the official demo: device by device, then the edge with the cloud
        return [
            (DOWN, 2, 1), (UP, 1, 2), (DOWN, 3, 1), (UP, 1, 3), (DOWN, 1, 0), (UP, 0, 1),
            (DOWN, 5, 4), (UP, 4, 5), (DOWN, 6, 4), (UP, 4, 6), (DOWN, 4, 0), (UP, 0, 4),
        ]  # fmt: skip
    return [  # Algorithm 2 with children in parallel: a level at a time, downward then upward
        (DOWN, 2, 1), (DOWN, 3, 1), (DOWN, 5, 4), (DOWN, 6, 4),
        (UP, 1, 2), (UP, 1, 3), (UP, 4, 5), (UP, 4, 6),
        (DOWN, 1, 0), (DOWN, 4, 0), (UP, 0, 1), (UP, 0, 4),
    ]  # fmt: skip


@pytest.mark.parametrize("schedule", ["parallel", "sequential"])
def test_bsbodp_order_of_operations_on_a_two_edge_tree(schedule: str) -> None:
    ctx = make_ctx()
    algo = make_algo(ctx, schedule=schedule)
    calls: list[tuple[list[int], bool]] = []
    train = ctx.executor.train

    def recording(cohort: Any, spec: Any) -> Any:
        calls.append((cohort.client_ids.tolist(), BRIDGE_KEY in cohort.data[0].extra))
        return train(cohort, spec)

    ctx.executor.train = recording  # type: ignore[method-assign]
    algo.run_round(1)
    assert algo.trace == _expected_trace(schedule)
    if schedule == "parallel":  # devices in one leaf cohort, edges twice in one cohort, the cloud last
        assert calls == [([2, 3, 5, 6], True), ([1, 4], False), ([1, 4], False), ([0], False)]
    else:
        assert [c[0] for c in calls] == [[2], [1], [3], [1], [1], [0], [5], [4], [6], [4], [4], [0]]


def test_upward_teachers_are_the_children_after_their_downward_step() -> None:
    ctx = make_ctx()
    algo = make_algo(ctx)
    seen: list[Any] = []
    train = ctx.executor.train

    def recording(cohort: Any, spec: Any) -> Any:
        result = train(cohort, spec)
        seen.append((cohort, result))
        return result

    ctx.executor.train = recording  # type: ignore[method-assign]
    algo.run_round(1)
    (devices, dev_result), (edges_up, _) = seen[0], seen[1]
    module = algo.models.arch(2).model_fn()
    for i, d in enumerate(devices.client_ids.tolist()[:2]):  # edge 1's children, in order
        module.load_state_dict(dev_result.client_states[i])
        module.eval()
        with torch.no_grad():
            expected = module(algo.store.bridges[algo.store.span(ctx.ordinal(d))])
        start = sum(algo.count(c) for c in devices.client_ids.tolist()[:i])
        got = edges_up.data[0].extra[TEACHER_KEY][start : start + algo.count(d)]
        assert torch.allclose(got, expected, atol=1e-6)
    # The devices' downward teacher was edge 1 before it trained: its logits on the device's bridges.
    edge_module = algo.models.arch(1).model_fn()
    edge_module.load_state_dict(_initial_state(ctx, algo, 1))
    edge_module.eval()
    with torch.no_grad():
        expected = edge_module(algo.store.bridges[algo.store.span(ctx.ordinal(2))])
    assert torch.allclose(devices.data[0].extra[TEACHER_KEY], expected, atol=1e-6)


def _initial_state(ctx: RunContext, algo: FedAgg, node: int) -> dict[str, torch.Tensor]:
    """The seeded initial weights of ``node`` (as FedAgg.init draws them)."""
    torch.manual_seed(ctx.seeds.int_seed("init", node))
    return algo.models.arch(node).model_fn().state_dict()


def test_round_ledger_charges_logits_per_hop_and_every_forward_and_student_pass() -> None:
    ctx = make_ctx()
    algo = make_algo(ctx)
    stats = algo.run_round(1)
    n, classes = algo.count(0), ctx.bundle.num_classes
    # Level 1: each device's samples once per direction; level 0: each edge's subtree once per direction.
    assert phase_sum(ctx, PHASE_LOGITS_DOWN, "bytes", 1) == 2 * 4 * classes * n
    assert phase_sum(ctx, PHASE_LOGITS_UP, "bytes", 1) == 2 * 4 * classes * n
    assert stats["bytes_by_phase"] == {PHASE_LOGITS_DOWN: 8 * classes * n, PHASE_LOGITS_UP: 8 * classes * n}
    dev, edge, cloud = (algo.models.arch(x).info for x in (2, 1, 0))
    teacher = (2 * edge.flops_forward + dev.flops_forward + cloud.flops_forward) * n
    assert phase_sum(ctx, PHASE_TEACHER, "flops", 1) == teacher
    student = (2 * dev.flops_train + 2 * edge.flops_train + cloud.flops_train) * n
    assert phase_sum(ctx, PHASE_STUDENT, "flops", 1) == student
    assert np.isfinite(stats["train_loss"])
    assert set(stats["train_loss_by_tier"]) == {"cloud", "edge", "device"}


def test_same_seed_same_cloud_model() -> None:
    states = []
    for _ in range(2):
        algo = make_algo(make_ctx())
        algo.run_round(1)
        states.append(algo.delivered_state())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_deeper_trees_and_devices_under_the_cloud() -> None:
    tree = "{devices: 1, children: [{devices: 1, children: [{devices: 2}]}, {devices: 2}]}"
    ctx = make_ctx("topology.devices=null", f"topology.tree={tree}")
    topo = ctx.topology
    algo = make_algo(ctx)
    depths = [[topo.depth(p) for p, _ in level] for level in algo.levels()]
    assert depths == [[2, 2], [1, 1, 1, 1], [0, 0, 0]]  # deepest parents first
    per_sample = algo.bytes_per_sample
    expected = sum(per_sample * algo.count(d) * topo.depth(d) for d in topo.devices)
    assert phase_sum(ctx, PHASE_INIT_EMBED, "bytes", 0) == expected
    assert max(topo.depth(d) for d in topo.devices) == 3
    algo.run_round(1)
    cloud_device = topo.children(0)[0]
    assert topo.tier(cloud_device) is Tier.DEVICE
    assert (DOWN, cloud_device, 0) in algo.trace and (UP, 0, cloud_device) in algo.trace
    other = make_algo(make_ctx("topology.devices=null", f"topology.tree={tree}"), schedule="sequential")
    other.run_round(1)
    assert sorted(other.trace) == sorted(algo.trace) and other.trace != algo.trace  # same pairs, other order


def test_migration_resends_embeddings_along_the_new_path_only() -> None:
    ctx = make_ctx()
    algo = make_algo(ctx)
    algo.run_round(1)
    topo = ctx.topology
    device, old_edge, new_edge = 2, 1, 4
    n = algo.count(device)
    load = algo.migrate(device, new_edge)
    assert topo.parent(device) == new_edge
    assert load == {(device, new_edge): float(n * algo.bytes_per_sample)}  # the cloud already holds them
    assert phase_sum(ctx, PHASE_MIGRATE_EMBED, "bytes") == n * algo.bytes_per_sample
    assert phase_sum(ctx, PHASE_MIGRATE_DECODE, "flops") == algo.dec_flops * n
    assert algo.count(new_edge) == algo.count(5) + algo.count(6) + n and algo.count(old_edge) == algo.count(3)
    algo.trace.clear()
    algo.run_round(2)
    assert (DOWN, device, new_edge) in algo.trace and (UP, new_edge, device) in algo.trace
    assert not any(old_edge in step[1:] and device in step[1:] for step in algo.trace)
    assert algo.migrate(device, 0) == {}  # moving up to a holder costs nothing
    assert topo.parent(device) == 0


def test_configured_migration_by_name_happens_at_the_start_of_its_round() -> None:
    ctx = make_ctx()
    algo = make_algo(ctx, migrations=[{"round": 2, "node": "dev1", "new_parent": "edge1"}])
    algo.run_round(1)
    assert ctx.topology.parent(3) == 1
    algo.run_round(2)
    assert ctx.topology.parent(3) == 4
    assert phase_sum(ctx, PHASE_MIGRATE_EMBED, "bytes", 2) == algo.count(3) * algo.bytes_per_sample
    bad = make_algo(make_ctx(), migrations=[{"round": 1, "node": "nobody", "new_parent": 1}])
    with pytest.raises(ConfigError, match="nobody"):
        bad.run_round(1)


def test_evaluate_reports_every_tier() -> None:
    ctx = make_ctx()
    algo = make_algo(ctx, eval_devices=3, tier_eval_samples=25)
    algo.run_round(1)
    ev = algo.evaluate()
    assert set(ev["accuracy_by_tier"]) == {"cloud", "edge", "device"}
    module = algo.models.arch(0).model_fn()
    acc, loss = evaluate_state(module, algo.delivered_state(), ctx.test_x, ctx.test_y, 64)
    assert ev["accuracy"] == ev["accuracy_by_tier"]["cloud"] == pytest.approx(acc)
    assert ev["loss"] == pytest.approx(loss)
    assert len(algo.eval_devices) == 3 and len(algo.tier_test[1]) == 25
    x, y = algo.tier_test
    edge_acc = [evaluate_state(algo.models.module(e), None, x, y, 64)[0] for e in ctx.topology.edges]
    assert ev["accuracy_by_tier"]["edge"] == pytest.approx(float(np.mean(edge_acc)))


def test_evaluate_gives_exact_tier_accuracies_on_a_constructed_case() -> None:
    # Every model outputs constant logits log p (classifier weight zeroed), p = 1/2 on a favourite class, so
    # it predicts that class for every sample; the test labels have TEST_COUNTS = (16, 8, 6, 4, 2, 2, 1, 1,
    # 0, 0) per class and the tier subset TIER_COUNTS = (10, 5, 5, 2, 2, 1, 0, ...) of 25.
    ctx = make_ctx()
    algo = make_algo(ctx, eval_devices=3, tier_eval_samples=25)
    ctx.test_y = labels_with_counts(TEST_COUNTS)
    algo.tier_test = (algo.tier_test[0], labels_with_counts(TIER_COUNTS))
    favourite = {0: 0, **dict(zip(ctx.topology.edges, (1, 2))), **dict(zip(algo.eval_devices, (1, 3, 5)))}
    for node, cls in favourite.items():
        algo.models.states[node] = constant_logits(algo.models.states[node], one_class_logits(cls))
    ev = algo.evaluate()
    assert ev["accuracy"] == ev["accuracy_by_tier"]["cloud"] == 16 / 40  # an integer count over n: exact
    # means of exact fractions: 1e-15 covers the mean's last-bit rounding
    assert ev["accuracy_by_tier"]["edge"] == pytest.approx((5 + 5) / 2 / 25, rel=1e-15)
    assert ev["accuracy_by_tier"]["device"] == pytest.approx((5 + 2 + 1) / 3 / 25, rel=1e-15)
    # cross-entropy log 2 on the 16 class-0 samples, log 18 on the 24 others; 1e-6: float32 logits and
    # per-batch float32 cross-entropy (~1e-7 relative), summed in float64
    assert ev["loss"] == pytest.approx((16 * math.log(2) + 24 * math.log(18)) / 40, rel=1e-6)


def test_demo_compat_teachers_run_in_train_mode() -> None:
    models = {**TEST_MODELS, "cloud": {"name": "resnet8", "options": {"width": 0.5, "norm": "batch"}}}
    ctx = make_ctx()
    algo = make_algo(ctx, models=models, demo_compat=True)
    before = {k: v.clone() for k, v in algo.models.states[0].items()}
    algo._teach(0, algo.ordinals(0))
    assert any(not torch.equal(before[k], v) for k, v in algo.models.states[0].items() if "running" in k)
    eval_algo = make_algo(make_ctx(), models=models)
    frozen = {k: v.clone() for k, v in eval_algo.models.states[0].items()}
    eval_algo._teach(0, eval_algo.ordinals(0))
    assert all(torch.equal(frozen[k], v) for k, v in eval_algo.models.states[0].items())


def test_bad_inputs_raise_readable_errors(tmp_path: Path) -> None:
    flat = make_ctx("data.input_shape=[16]", *TWO_EDGES)
    with pytest.raises(ConfigError, match="image data"):
        make_algo(flat)
    wrong = tmp_path / "ae.pt"
    from edgelearn.models.autoencoder import build_autoencoder

    save_autoencoder(wrong, build_autoencoder((3, 32, 32)).state_dict(), {"input_shape": [3, 32, 32]})
    with pytest.raises(ConfigError, match="input shape"):  # a config/file mismatch (names both values)
        make_algo(make_ctx(), autoencoder={"path": str(wrong)})
    right = tmp_path / "ok.pt"
    ctx = make_ctx()
    clean = {
        "input_shape": [1, 8, 8],
        "source": "holdout",
        "split": "train",
        "dataset": ctx.bundle.name,
        "train_indices": ctx.bundle.holdout.index.tolist(),
        "indices_sha256": index_digest(ctx.bundle.holdout.index),
    }
    save_autoencoder(right, build_autoencoder((1, 8, 8)).state_dict(), clean)
    make_algo(ctx, autoencoder={"path": str(right)})
    # Files whose pre-training data could be evaluation data or a device's data are refused, by name.
    device_rows = ctx.bundle.train.index[ctx.parts[0][:3]].tolist()
    for meta, match in [
        ({**clean, "source": "test"}, "test split"),
        ({"input_shape": [1, 8, 8]}, "does not record which training samples"),
        ({**clean, "dataset": "digits"}, "dataset 'digits'"),
        ({**clean, "train_indices": device_rows}, "3 of its pre-training samples are also devices'"),
    ]:
        bad = tmp_path / "bad.pt"
        save_autoencoder(bad, build_autoencoder((1, 8, 8)).state_dict(), meta)
        with pytest.raises((ConfigError, DataError), match=match):
            make_algo(make_ctx(), autoencoder={"path": str(bad)})
    ctx = make_ctx()
    with pytest.raises(ConfigError, match="FedAggConfig"):
        FedAgg(ctx)  # the context's algorithm section is FedAvg's


def test_pretrain_file_reproduces_pretraining_at_init(tmp_path: Path) -> None:
    from edgelearn.commands.pretrain import pretrain_autoencoder_file

    cfg = synthetic_config([FEDAGG_HOLDOUT, *TWO_EDGES])
    info = pretrain_autoencoder_file(cfg, tmp_path / "ae.pt")
    assert info["source"] == "holdout" and info["samples"] == 32 and info["input_shape"] == [1, 8, 8]
    assert info["train_indices"] == make_ctx().bundle.holdout.index.tolist()  # the run's own hold-out
    assert len(info["sha256"]) == 64 and info["mse"] > 0
    at_init = make_algo(make_ctx(), autoencoder={})
    from_file = make_algo(make_ctx(), autoencoder={"path": str(tmp_path / "ae.pt")})
    assert torch.equal(at_init.store.bridges, from_file.store.bridges)


def test_flat_topology_pairs_every_device_with_the_cloud() -> None:
    ctx = make_ctx("topology.devices=3")
    algo = make_algo(ctx)
    algo.run_round(1)
    assert algo.trace == [(DOWN, 1, 0), (DOWN, 2, 0), (DOWN, 3, 0), (UP, 0, 1), (UP, 0, 2), (UP, 0, 3)]
    ev = algo.evaluate()
    assert ev["accuracy_by_tier"]["edge"] is None and ev["accuracy_by_tier"]["device"] is not None


def test_checkpoint_state_restores_every_node_exactly() -> None:
    first = make_algo(make_ctx())
    first.run_round(1)
    saved = first.state_dict()
    first.run_round(2)
    resumed = make_algo(make_ctx())
    resumed.load_state_dict(saved)
    resumed.run_round(2)
    for n, state in first.models.states.items():
        assert all(torch.equal(state[k], resumed.models.states[n][k]) for k in state)
    with pytest.raises(DataError, match="node states"):
        resumed.load_state_dict({"node_states": {0: saved["node_states"][0]}})


def test_divergence_names_the_round_and_node() -> None:
    from edgelearn.errors import DivergenceError

    algo = make_algo(make_ctx(), local={"lr": 1e12, "momentum": 0.0, "batch_size": 16})
    with pytest.raises(DivergenceError, match="round"):
        for r in range(1, 4):
            algo.run_round(r)


def test_summary_extras_describe_tiers_and_payloads() -> None:
    algo = make_algo(make_ctx())
    extras = algo.summary_extras()
    assert extras["models_by_tier"]["device"]["mlp"]["nodes"] == 4
    assert extras["models_by_tier"]["cloud"]["resnet8"]["nodes"] == 1
    assert extras["bridge"]["bytes_per_sample"] == algo.bytes_per_sample
