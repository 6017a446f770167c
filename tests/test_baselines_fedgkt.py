"""FedGKT on tiny synthetic images: split client models, the round's transfers per hop, both KD directions,
the delivered extractor + server model, per-node storage and checkpoints."""

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
from edgelearn.algorithms.fedavg.config import FedAvgConfig
from edgelearn.algorithms.fedgkt.algorithm import FedGKT
from edgelearn.algorithms.fedgkt.config import FedGKTConfig
from edgelearn.algorithms.kit.distill import TEACHER_KEY, ce_kd_loss, teacher_logits
from edgelearn.algorithms.kit.nodes import SERVER
from edgelearn.algorithms.kit.split import (
    PHASE_CLIENT_EXTRACT,
    PHASE_CLIENT_TRAIN,
    PHASE_FEATURES_UP,
    PHASE_LOGITS_DOWN,
    PHASE_SERVER_LOGITS,
    PHASE_SERVER_TRAIN,
    SplitModel,
    split_model,
)
from edgelearn.checkpoint import decode, encode
from edgelearn.errors import ConfigError, DataError
from edgelearn.models import build_model

TWO_EDGES = ["topology.devices=null", "topology.edges=2", "topology.devices_per_edge=3"]
MODELS: dict[str, Any] = {"device": {"name": "cnn_small"}, "cloud": {"name": "resnet8"}}
NUM_CLASSES = 10
FEATURES = 20 * 4 * 4  # cnn_small on 1x8x8: 5x5 'valid' conv -> 4x4, then a 'same' conv; 20 channels


def make_ctx(*overrides: str) -> RunContext:
    """A tiny synthetic-image context (8x8, 10 classes, IID) on the CPU with the serial executor."""
    return synthetic_context(overrides or TWO_EDGES)


def make_algo(ctx: RunContext, **cfg: Any) -> FedGKT:
    """FedGKT with the test models and batch 16, initialised."""
    algo = FedGKT(
        ctx, FedGKTConfig.model_validate({"rounds": 2, "models": MODELS, "local": {"batch_size": 16}, **cfg})
    )
    algo.init()
    return algo


def phase_events(ctx: RunContext, phase: str, round_: int) -> np.ndarray:
    """Ledger events of one phase in one round."""
    events = ctx.system.ledger.events(round_)
    return events[events["phase"] == phase]


def test_config_defaults_and_validation() -> None:
    cfg = FedGKTConfig()
    assert (cfg.beta, cfg.T, cfg.local.lr, cfg.local.batch_size, cfg.local.momentum) == (
        1.5,
        3.0,
        0.001,
        8,
        0.9,
    )
    assert (cfg.local.epochs, cfg.server_epochs, cfg.server_loss) == (1, 1, "paper")
    with pytest.raises(ValidationError):
        FedGKTConfig.model_validate({"betta": 1})
    with pytest.raises(ValidationError):
        FedGKTConfig(server_loss="other")
    ctx = make_ctx()
    assert isinstance(ctx.cfg.algorithm, FedAvgConfig)
    with pytest.raises(ConfigError, match="FedGKTConfig"):
        FedGKT(ctx)  # the context's own algorithm section is FedAvg's


@pytest.mark.parametrize(
    ("name", "options"),
    [("cnn_small", {}), ("cnn_medium", {}), ("resnet8", {}), ("mlp", {"hidden": [16]})],
)
def test_split_model_computes_exactly_the_whole_model(name: str, options: dict[str, Any]) -> None:
    torch.manual_seed(0)
    module = build_model(name, (1, 8, 8), NUM_CLASSES, **options)
    x = torch.randn(5, 1, 8, 8)
    expected = module(x)
    split = SplitModel(*split_model(module, name))
    assert torch.equal(split(x), expected)
    assert sum(p.numel() for p in split.parameters()) == sum(p.numel() for p in module.parameters())


def test_split_model_needs_a_hidden_layer() -> None:
    with pytest.raises(ConfigError, match="cannot be split"):
        split_model(build_model("mlp", (1, 8, 8), NUM_CLASSES, hidden=[]), "mlp")


def test_ce_kd_loss_matches_a_hand_computed_value() -> None:
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # softmax = (0.75, 0.25) at T = 1
    batch = {"x": student, "y": torch.tensor([0]), TEACHER_KEY: teacher}
    ce = math.log(2.0)
    p = (0.75 + 1e-7, 0.25 + 1e-7)  # the official KL_Loss adds 1e-7 to the teacher's probabilities
    kd = sum(pi * (math.log(pi) - math.log(0.5)) for pi in p)
    got = ce_kd_loss(2.0, 3.0, 1.0)(lambda x: x, batch)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(2.0 * ce + 3.0 * kd, rel=1e-6)


def test_server_loss_weights_follow_the_paper_or_fedml() -> None:
    ctx = make_ctx()
    assert make_algo(ctx, beta=1.5).server_weights() == (1.0, 1.5)
    assert make_algo(make_ctx(), beta=1.5, server_loss="fedml").server_weights() == (1.5, 1.0)


def test_round_ledger_features_up_and_logits_down_per_hop() -> None:
    ctx = make_ctx()
    algo = make_algo(ctx)
    topo = ctx.topology
    assert algo.feature_shape == (20, 4, 4)
    per_up = 4 * FEATURES + 4 * NUM_CLASSES + 8  # float32 features + float32 logits + int64 label
    per_down = 4 * NUM_CLASSES
    assert (algo.up_bytes_per_sample, algo.down_bytes_per_sample) == (per_up, per_down) == (1328, 40)
    stats = algo.run_round(1)
    sizes = {d: ctx.data_size(d) for d in topo.devices}
    n = sum(sizes.values())
    assert n == 96
    assert stats["bytes_by_phase"] == {PHASE_FEATURES_UP: 2 * n * per_up, PHASE_LOGITS_DOWN: 2 * n * per_down}
    up, down = phase_events(ctx, PHASE_FEATURES_UP, 1), phase_events(ctx, PHASE_LOGITS_DOWN, 1)
    for d, k in sizes.items():
        parent = topo.parent(d)
        assert up["bytes"][(up["src"] == d) & (up["dst"] == parent)].sum() == k * per_up
        assert down["bytes"][(down["src"] == parent) & (down["dst"] == d)].sum() == k * per_down
    for e in topo.edges:  # each backhaul carries exactly its devices' payloads, once per direction
        below = sum(sizes[d] for d in topo.children(e))
        assert up["bytes"][(up["src"] == e) & (up["dst"] == 0)].sum() == below * per_up
        assert down["bytes"][(down["src"] == 0) & (down["dst"] == e)].sum() == below * per_down
    client, server = algo.client.info, algo.server.info
    flops = {p: phase_events(ctx, p, 1)["flops"].sum() for p in (PHASE_CLIENT_TRAIN, PHASE_CLIENT_EXTRACT)}
    assert flops[PHASE_CLIENT_TRAIN] == n * client.flops_train  # one local epoch
    assert flops[PHASE_CLIENT_EXTRACT] == n * client.flops_forward
    assert phase_events(ctx, PHASE_SERVER_TRAIN, 1)["node"].tolist() == [SERVER]
    assert phase_events(ctx, PHASE_SERVER_TRAIN, 1)["flops"].sum() == n * server.flops_train
    assert phase_events(ctx, PHASE_SERVER_LOGITS, 1)["flops"].sum() == n * server.flops_forward


def test_server_logits_are_the_trained_server_on_each_clients_features() -> None:
    ctx = make_ctx()
    algo = make_algo(ctx)
    assert algo.server_logits == {}
    algo.run_round(1)
    for d in algo.devices:
        feats, _ = algo.extract(d, ctx.client_data[ctx.ordinal(d)].x)
        expected = teacher_logits(algo.models.module(SERVER), feats)
        assert algo.server_logits[d].shape == (ctx.data_size(d), NUM_CLASSES)
        assert torch.allclose(algo.server_logits[d], expected, atol=1e-6)


def test_clients_distil_only_once_server_logits_exist() -> None:
    ctx = make_ctx()
    algo = make_algo(ctx)
    seen: list[tuple[str, bool]] = []
    train = ctx.executor.train

    def recording(cohort: Any, spec: Any) -> Any:
        seen.append((cohort.arch_key, TEACHER_KEY in cohort.data[0].extra))
        return train(cohort, spec)

    ctx.executor.train = recording  # type: ignore[method-assign]
    algo.run_round(1)
    algo.run_round(2)
    client, server = algo.client.key, algo.server.key
    # Round 1: clients on CE only, then the server with client logits; round 2: both distil.
    assert seen == [(client, False), (server, True), (client, True), (server, True)]


def test_two_rounds_report_accuracy_of_extractor_plus_server() -> None:
    ctx = make_ctx()
    algo = make_algo(ctx, eval_devices=1, tier_eval_samples=10)
    for r in (1, 2):
        algo.run_round(r)
        ev = algo.evaluate()
        assert set(ev["accuracy_by_tier"]) == {"cloud", "edge", "device"}
        assert ev["accuracy_by_tier"]["edge"] is None
        assert ev["accuracy_by_tier"]["cloud"] == ev["accuracy"]
        (d,) = algo.eval_devices
        x, y = algo.tier_test
        right = int((teacher_logits(algo.models.module(d), x).argmax(1) == y).sum())
        assert ev["accuracy_by_tier"]["device"] == right / len(y)  # one evaluated device: its own accuracy
    # With one evaluated device, the delivered model is that device's extractor followed by the server.
    (d,) = algo.eval_devices
    feats, _ = algo.extract(d, ctx.test_x)
    logits = teacher_logits(algo.models.module(SERVER), feats)
    assert ev["accuracy"] == pytest.approx(float((logits.argmax(1) == ctx.test_y).float().mean()))
    loss = torch.nn.functional.cross_entropy(logits, ctx.test_y).item()
    assert ev["loss"] == pytest.approx(loss, rel=1e-5)


def test_evaluate_gives_exact_accuracies_on_a_constructed_case() -> None:
    # The server and the evaluated devices' own models output constant logits log p (classifier weight
    # zeroed), p = 1/2 on a favourite class: the server class 0 whatever features the extractors send it,
    # the devices classes 1 and 3. Test labels: TEST_COUNTS = (16, 8, 6, 4, ...) per class; tier subset:
    # TIER_COUNTS = (10, 5, 5, 2, ...) of 25.
    ctx = make_ctx()
    algo = make_algo(ctx, eval_devices=2, tier_eval_samples=25)
    algo.run_round(1)
    ctx.test_y = labels_with_counts(TEST_COUNTS)
    algo.tier_test = (algo.tier_test[0], labels_with_counts(TIER_COUNTS))
    favourite = {SERVER: 0, **dict(zip(algo.eval_devices, (1, 3)))}
    for node, cls in favourite.items():
        algo.models.states[node] = constant_logits(algo.models.states[node], one_class_logits(cls))
    ev = algo.evaluate()
    assert ev["accuracy"] == ev["accuracy_by_tier"]["cloud"] == 16 / 40  # an integer count over n: exact
    assert ev["accuracy_by_tier"]["device"] == pytest.approx((5 + 2) / 2 / 25, rel=1e-15)  # a mean's rounding
    # log 2 on the 16 class-0 samples, log 18 on the 24 others; 1e-6: float32 logits and cross-entropy
    assert ev["loss"] == pytest.approx((16 * math.log(2) + 24 * math.log(18)) / 40, rel=1e-6)


def test_no_parameter_is_shared_between_nodes() -> None:
    algo = make_algo(make_ctx())

    def storages() -> list[int]:
        return [t.untyped_storage().data_ptr() for s in algo.models.states.values() for t in s.values()]

    assert set(algo.models.states) == {SERVER, *algo.devices}
    assert len(set(storages())) == len(storages())
    algo.run_round(1)
    algo.run_round(2)
    assert len(set(storages())) == len(storages())


def test_same_seed_same_models_and_checkpoint_round_trip() -> None:
    first = make_algo(make_ctx())
    first.run_round(1)
    saved = decode(encode(first.state_dict()))  # what a checkpoint file gives back
    first.run_round(2)
    resumed = make_algo(make_ctx())
    resumed.load_state_dict(saved)
    resumed.run_round(2)
    for n, state in first.models.states.items():
        assert all(torch.equal(state[k], resumed.models.states[n][k]) for k in state)
    with pytest.raises(DataError, match="node states"):
        resumed.load_state_dict({"node_states": {0: saved["node_states"][0]}})


def test_devices_under_the_cloud_send_over_one_hop() -> None:
    ctx = make_ctx(*TWO_EDGES, "topology.cloud_devices=1")
    algo = make_algo(ctx)
    algo.run_round(1)
    topo = ctx.topology
    direct = [d for d in topo.devices if topo.parent(d) == 0]
    assert len(direct) == 1
    up = phase_events(ctx, PHASE_FEATURES_UP, 1)
    n = sum(ctx.data_size(d) for d in topo.devices)
    relayed = n - ctx.data_size(direct[0])
    assert up["bytes"].sum() == (n + relayed) * algo.up_bytes_per_sample
