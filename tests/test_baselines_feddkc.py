"""FedDKC: KKR refinement against hand-computed values and its invariants, the KD loss to refined targets,
and two rounds on a tiny tree with FedGKT's payloads."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tiny import (
    TEST_COUNTS,
    constant_logits,
    labels_with_counts,
    one_class_logits,
    synthetic_context,
)

from edgelearn.algorithms.base import RunContext
from edgelearn.algorithms.feddkc.algorithm import TARGET_KEY, FedDKC, kkr_refine
from edgelearn.algorithms.feddkc.config import FedDKCConfig
from edgelearn.algorithms.kit.distill import ce_kd_loss, kd_to_targets
from edgelearn.algorithms.kit.nodes import SERVER
from edgelearn.algorithms.kit.split import PHASE_FEATURES_UP, PHASE_LOGITS_DOWN
from edgelearn.errors import ConfigError

TWO_EDGES = ["topology.devices=null", "topology.edges=2", "topology.devices_per_edge=3"]
MODELS: dict[str, Any] = {"device": {"name": "cnn_small"}, "cloud": {"name": "resnet8"}}


def make_ctx(executor: str = "serial") -> RunContext:
    """A tiny synthetic-image context (8x8, 10 classes, IID) on the CPU with the given executor."""
    return synthetic_context(TWO_EDGES, executor)


def make_algo(ctx: RunContext, **cfg: Any) -> FedDKC:
    """FedDKC with the test models and batch 16, initialised."""
    algo = FedDKC(
        ctx, FedDKCConfig.model_validate({"rounds": 2, "models": MODELS, "local": {"batch_size": 16}, **cfg})
    )
    algo.init()
    return algo


def test_config_defaults_are_fedaggs() -> None:
    cfg = FedDKCConfig()
    assert (cfg.beta, cfg.peak, cfg.T, cfg.logit_scale) == (1.5, 0.12, 3.0, 0.05)
    assert (cfg.local.lr, cfg.local.batch_size, cfg.server_loss) == (1e-3, 8, "paper")
    with pytest.raises(ValidationError):
        FedDKCConfig(peak=1.0)


def test_kkr_refinement_matches_hand_computed_values() -> None:
    # logits = log p with T = S = 1, so the softened vector is p itself (plus the code's 1e-7).
    p = torch.tensor([[0.2, 0.6, 0.2], [0.46, 0.44, 0.10]])
    got = kkr_refine(torch.log(p), 0.5, T=1.0, logit_scale=1.0)
    # C = 3, peak 0.5: p' = ((3 * 0.5 - 1) p + m - 0.5) / (3 m - 1)
    #   row 1 (m = 0.6): (0.5 p + 0.1) / 0.8  -> 0.25, 0.5, 0.25
    #   row 2 (m = 0.46): (0.5 p - 0.04) / 0.38 -> 0.5, 0.18 / 0.38, 0.01 / 0.38
    expected = torch.tensor([[0.25, 0.5, 0.25], [0.5, 0.18 / 0.38, 0.01 / 0.38]])
    assert torch.allclose(got, expected, atol=1e-6)


def test_kkr_falls_back_to_a_one_hot_like_vector() -> None:
    p = torch.tensor([[0.46, 0.44, 0.10]])
    # peak 0.6: (0.8 * 0.10 + 0.46 - 0.6) / (1.38 - 1) < 0, so the fallback: 0.6 at the argmax, 0.2 elsewhere.
    assert torch.allclose(kkr_refine(torch.log(p), 0.6, T=1.0), torch.tensor([[0.6, 0.2, 0.2]]), atol=1e-7)
    # A uniform vector has no linear map to the peak: fallback at its first class.
    uniform = kkr_refine(torch.zeros(1, 4), 0.4, T=3.0, logit_scale=0.05)
    assert torch.allclose(uniform, torch.tensor([[0.4, 0.2, 0.2, 0.2]]), atol=1e-7)


def test_kkr_softens_with_temperature_times_scale() -> None:
    z = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
    a = kkr_refine(z, 0.3, T=3.0, logit_scale=0.5)
    b = kkr_refine(z / 1.5, 0.3, T=1.0, logit_scale=1.0)
    assert torch.allclose(a, b, atol=1e-7)
    with pytest.raises(ValueError, match="peak"):
        kkr_refine(z, 0.25, T=1.0)  # not above 1/C


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-20, 20, allow_nan=False), min_size=3, max_size=12),
    st.floats(0.0, 1.0),
    st.floats(0.05, 5.0),
)
def test_kkr_rows_are_distributions_peaking_at_the_target(
    logits: list[float], share: float, scale: float
) -> None:
    c = len(logits)
    peak = 1.0 / c + share * (0.99 - 1.0 / c)
    if peak <= 1.0 / c + 1e-3:
        peak = 1.0 / c + 1e-3
    z = torch.tensor([logits], dtype=torch.float64)
    out = kkr_refine(z, peak, T=3.0, logit_scale=scale)[0]
    assert out.min() >= 0
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert out.max().item() == pytest.approx(peak, abs=1e-9)
    soft = torch.softmax(z[0] / (3.0 * scale), dim=0)
    # the refined peak sits on a most likely class (up to float rounding between near-tied classes)
    assert soft[out.argmax()].item() == pytest.approx(soft.max().item(), rel=1e-9)


def test_kd_to_targets_matches_hand_computed_values() -> None:
    student = torch.zeros(2, 3)  # softmax(0 / T) is uniform for any T
    targets = torch.tensor([[0.25, 0.5, 0.25], [1.0, 0.0, 0.0]])
    kl_1 = 0.25 * math.log(0.75) * 2 + 0.5 * math.log(1.5)  # sum t log(t / (1/3))
    kl_2 = math.log(3.0)  # 0 log 0 = 0
    got = kd_to_targets(student, targets, T=2.0)
    assert torch.allclose(got, torch.tensor([4 * kl_1, 4 * kl_2]), atol=1e-6)
    batch = {"x": student, "y": torch.tensor([1, 0]), TARGET_KEY: targets}
    loss = ce_kd_loss(2.0, 0.5, 2.0, kd=kd_to_targets, key=TARGET_KEY)(lambda x: x, batch)
    assert torch.allclose(loss, 2.0 * math.log(3.0) + 0.5 * got, atol=1e-6)


def test_two_rounds_distil_refined_client_knowledge_with_fedgkts_payloads() -> None:
    ctx = make_ctx()
    algo = make_algo(ctx)
    targets: list[torch.Tensor] = []
    train = ctx.executor.train

    def recording(cohort: Any, spec: Any) -> Any:
        if cohort.client_ids.tolist() == [SERVER]:
            targets.append(cohort.data[0].extra[TARGET_KEY])
        return train(cohort, spec)

    ctx.executor.train = recording  # type: ignore[method-assign]
    for r in (1, 2):
        stats = algo.run_round(r)
        ev = algo.evaluate()
        assert ev["accuracy_by_tier"]["edge"] is None
    n = sum(ctx.data_size(d) for d in ctx.topology.devices)
    assert stats["bytes_by_phase"] == {PHASE_FEATURES_UP: 2 * n * 1328, PHASE_LOGITS_DOWN: 2 * n * 40}
    assert len(targets) == 2
    for t in targets:
        assert t.shape == (n, 10)
        assert torch.allclose(t.max(dim=1).values, torch.full((n,), 0.12), atol=1e-6)
    # The server distils exactly the refined logits its clients uploaded in the round.
    ctx.executor.train = train  # type: ignore[method-assign]
    logits = torch.cat([algo.extract(d, ctx.client_data[ctx.ordinal(d)].x)[1] for d in algo.devices])
    data = algo.server_data(torch.zeros(n, 1), torch.zeros(n, dtype=torch.long), logits)
    assert torch.equal(data.extra[TARGET_KEY], kkr_refine(logits, 0.12, T=3.0, logit_scale=0.05))
    # evaluated as FedGKT is (extractor + server): exact on a constructed case, the server outputting constant
    # logits log p with p = 1/2 on class 3 (classifier weight zeroed), test labels TEST_COUNTS (4 of class 3)
    algo.models.states[SERVER] = constant_logits(algo.models.states[SERVER], one_class_logits(3))
    ctx.test_y = labels_with_counts(TEST_COUNTS)
    ev = algo.evaluate()
    assert ev["accuracy"] == 4 / 40  # an integer count over n: exact
    # log 2 on the 4 class-3 samples, log 18 on the 36 others; 1e-6: float32 logits and cross-entropy
    assert ev["loss"] == pytest.approx((4 * math.log(2) + 36 * math.log(18)) / 40, rel=1e-6)


def test_peak_must_exceed_one_over_the_classes() -> None:
    with pytest.raises(ConfigError, match="peak"):
        make_algo(make_ctx(), peak=0.05)  # 10 classes


def test_no_parameter_is_shared_between_nodes() -> None:
    algo = make_algo(make_ctx())
    algo.run_round(1)
    ptrs = [t.untyped_storage().data_ptr() for s in algo.models.states.values() for t in s.values()]
    assert len(set(ptrs)) == len(ptrs)
    assert np.isfinite(algo.evaluate()["loss"])


def test_vmap_executor_trains_split_clients_and_the_refined_server_loss_like_serial() -> None:
    runs = {}
    for executor in ("serial", "vmap"):
        algo = make_algo(make_ctx(executor))
        algo.run_round(1)
        algo.run_round(2)
        runs[executor] = algo.models.states
    for node, state in runs["serial"].items():
        for k, v in state.items():
            assert torch.allclose(v, runs["vmap"][node][k], atol=1e-5), (node, k)
