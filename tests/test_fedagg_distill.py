"""FedAgg's KD loss against hand-computed values and the official batchmean form; leaf/non-leaf losses;
eval-mode no-grad teacher inference; the teacher-logit cache and its background prefetch, alone and inside
FedAgg rounds (reused and prefetched logits leave every model bit-identical)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny import FEDAGG_HOLDOUT, synthetic_context, tiny_fedagg
from torch import nn

from edgelearn.algorithms.fedagg import bsbodp
from edgelearn.algorithms.fedagg.algorithm import FedAgg
from edgelearn.algorithms.kit import distill
from edgelearn.algorithms.kit.distill import (
    BRIDGE_KEY,
    KD_EPS,
    TEACHER_KEY,
    LogitCache,
    kd_loss,
    kd_per_sample,
    leaf_loss,
    non_leaf_loss,
    spare_cpu_core,
    teacher_logits,
)
from edgelearn.engine.infer import InferCohort, InferResult, InferSpec
from edgelearn.engine.serial import SerialExecutor


def _hand_kd(p: list[float], q: list[float], T: float) -> float:
    """T^2 * sum_c (p_c + eps) * log((p_c + eps) / q_c), written out."""
    return T * T * sum((pc + KD_EPS) * math.log((pc + KD_EPS) / qc) for pc, qc in zip(p, q))


def test_kd_matches_hand_computed_value() -> None:
    T = 2.0
    # Student logits (0, 0) -> q = (1/2, 1/2); teacher (2 ln 3, 0) / T = (ln 3, 0) -> p = (3/4, 1/4).
    s = torch.tensor([[0.0, 0.0], [math.log(2.0) * T, 0.0]], dtype=torch.float64)
    z = torch.tensor([[2 * math.log(3.0), 0.0], [0.0, 0.0]], dtype=torch.float64)
    first = _hand_kd([0.75, 0.25], [0.5, 0.5], T)  # = 4 * (0.75 ln 1.5 + 0.25 ln 0.5) ~ 0.523248
    second = _hand_kd([0.5, 0.5], [2 / 3, 1 / 3], T)  # student (ln 2, 0) -> q = (2/3, 1/3)
    assert first == pytest.approx(0.5232481, abs=1e-6)
    per = kd_per_sample(s, z, T)
    assert per.tolist() == pytest.approx([first, second], rel=1e-12)
    assert float(kd_loss(s, z, T)) == pytest.approx((first + second) / 2, rel=1e-12)


@given(
    seed=st.integers(0, 10_000),
    batch=st.integers(1, 6),
    classes=st.integers(2, 7),
    T=st.floats(0.5, 5.0),
)
@settings(max_examples=50, deadline=None)
def test_kd_equals_the_official_kldiv_batchmean_form(seed: int, batch: int, classes: int, T: float) -> None:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(batch, classes, generator=g, dtype=torch.float64) * 3
    z = torch.randn(batch, classes, generator=g, dtype=torch.float64) * 3
    official = nn.KLDivLoss(reduction="batchmean")(
        F.log_softmax(s / T, dim=1), F.softmax(z / T, dim=1) + KD_EPS
    ) * (T * T)
    assert float(kd_loss(s, z, T)) == pytest.approx(float(official), rel=1e-9, abs=1e-12)
    # identical logits: only the epsilon remains, T^2 * sum_c (p_c + eps) * log((p_c + eps) / p_c)
    p = F.softmax(s / T, dim=1)
    eps_only = (T * T) * ((p + KD_EPS) * torch.log((p + KD_EPS) / p)).sum(dim=1)
    assert torch.allclose(kd_per_sample(s, s, T), eps_only, rtol=1e-6, atol=1e-15)


def test_kd_gradient_flows_to_the_student_only() -> None:
    s = torch.tensor([[1.0, -1.0]], requires_grad=True)
    z = torch.tensor([[0.0, 2.0]], requires_grad=True)
    kd_loss(s, z, 3.0).backward()
    assert s.grad is not None and float(s.grad.abs().sum()) > 0
    assert z.grad is None


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def test_non_leaf_loss_is_ce_plus_beta_kd() -> None:
    T, beta = 2.0, 10.0
    batch = {
        "x": torch.tensor([[0.0, 0.0]], dtype=torch.float64),
        "y": torch.tensor([0]),
        TEACHER_KEY: torch.tensor([[2 * math.log(3.0), 0.0]], dtype=torch.float64),
    }
    out = non_leaf_loss(beta, T)(_identity, batch)
    assert out.shape == (1,)
    assert float(out[0]) == pytest.approx(math.log(2.0) + beta * _hand_kd([0.75, 0.25], [0.5, 0.5], T))


@pytest.mark.parametrize("joint", [True, False])
def test_leaf_loss_is_real_ce_plus_gamma_times_bridge_terms(joint: bool) -> None:
    T, gamma, beta_leaf = 2.0, 0.5, 3.0
    batch = {
        "x": torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64),  # real: p(y=0) = 3/4
        BRIDGE_KEY: torch.tensor([[0.0, 0.0]], dtype=torch.float64),  # bridge: p(y=0) = 1/2
        "y": torch.tensor([0]),
        TEACHER_KEY: torch.tensor([[2 * math.log(3.0), 0.0]], dtype=torch.float64),
    }
    out = leaf_loss(gamma, beta_leaf, T, joint_forward=joint)(_identity, batch)
    expected = math.log(4 / 3) + gamma * (math.log(2.0) + beta_leaf * _hand_kd([0.75, 0.25], [0.5, 0.5], T))
    assert float(out[0]) == pytest.approx(expected, rel=1e-12)


def test_teacher_logits_eval_mode_no_grad_and_batch_size_invariant() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    module.train()
    for _ in range(3):  # give BatchNorm non-trivial running statistics
        module(torch.randn(16, 4))
    before = module[1].running_mean.clone()
    x = torch.randn(37, 4)
    big = teacher_logits(module, x, batch_size=1024)
    small = teacher_logits(module, x, batch_size=5)
    assert not big.requires_grad and big.shape == (37, 3)
    assert torch.allclose(big, small, atol=1e-6)  # eval mode: running statistics, no batch dependence
    assert torch.equal(module[1].running_mean, before)
    assert not module.training
    teacher_logits(module, x, batch_size=8, train_mode=True)  # the demo's quirk mutates running stats
    assert not torch.equal(module[1].running_mean, before)
    with pytest.raises(ValueError):
        teacher_logits(module, x[:0])


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_logit_cache_hits_only_the_same_state_object_and_rows() -> None:
    cache = LogitCache(batch_size=4, background=False)
    state, logits = {"w": torch.ones(1)}, torch.randn(3, 2)
    assert cache.lookup(7, state, (0, 1)) is None
    cache.store(7, state, (0, 1), logits)
    hit = cache.lookup(7, state, (0, 1))
    assert hit is not None and hit[0] is logits and hit[1] == 0.0
    assert cache.lookup(7, {"w": torch.ones(1)}, (0, 1)) is None  # an equal but replaced state misses
    assert cache.lookup(7, state, (0,)) is None and cache.lookup(8, state, (0, 1)) is None
    cache.forget([7])
    assert cache.lookup(7, state, (0, 1)) is None
    assert not cache.background
    assert not cache.prefetch(7, state, (0, 1), "a", lambda: nn.Identity(), lambda: logits)


def test_prefetch_returns_exactly_the_foreground_logits() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    state, x = _state(module), torch.randn(37, 4)
    cache = LogitCache(batch_size=5, background=True)
    template = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))  # other weights: state is loaded
    assert cache.prefetch(1, state, (0, 2), "mlp", lambda: template, lambda: x)
    assert not cache.prefetch(1, state, (0, 2), "mlp", lambda: template, lambda: x)  # already under way
    hit = cache.lookup(1, state, (0, 2))
    assert hit is not None and hit[1] > 0
    assert torch.equal(hit[0], teacher_logits(module, x, batch_size=5))
    assert not any(torch.equal(a, b) for a, b in zip(template.state_dict().values(), state.values()))


def test_spare_core_needs_a_cpu_with_more_cores_than_torch_threads() -> None:
    assert not spare_cpu_core(torch.device("meta"))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1024)
        assert not spare_cpu_core(torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)


class _NoReuse(LogitCache):
    """A cache that never hits: every teacher infers afresh, as before logits were reused."""

    def lookup(self, *args: object, **kwargs: object) -> None:
        return None


def _fedagg(cache: LogitCache) -> FedAgg:
    """A tiny two-edge FedAgg (synthetic 8x8 images, serial executor) with the given teacher-logit cache."""
    overrides = ["topology.devices=null", "topology.edges=2", "topology.devices_per_edge=2"]
    algo = tiny_fedagg(
        synthetic_context([FEDAGG_HOLDOUT, *overrides]),
        teacher_batch_size=8,
        autoencoder={"epochs": 1, "max_samples": 32, "batch_size": 16},
    )
    algo._logits = cache
    return algo


def test_fedagg_reuse_and_prefetch_leave_every_model_bit_identical(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = _fedagg(_NoReuse(batch_size=8, background=False))
    cached = _fedagg(LogitCache(batch_size=8, background=True))
    calls: list[int] = []  # one entry per teacher inference: foreground (executor) or background (prefetch)
    original = distill.teacher_logits

    def counting(module: nn.Module, x: torch.Tensor, **kwargs: object) -> torch.Tensor:
        calls.append(x.shape[0])
        return original(module, x, **kwargs)  # type: ignore[arg-type]

    def counting_infer(executor: SerialExecutor) -> Callable[[InferCohort, InferSpec], InferResult]:
        def infer(cohort: InferCohort, spec: InferSpec) -> InferResult:
            calls.extend(int(n) for n in cohort.sizes())
            return SerialExecutor.infer(executor, cohort, spec)

        return infer

    monkeypatch.setattr(bsbodp, "teacher_logits", counting)
    monkeypatch.setattr(distill, "teacher_logits", counting)
    for algo in (fresh, cached):
        assert isinstance(algo.ctx.executor, SerialExecutor)
        monkeypatch.setattr(algo.ctx.executor, "infer", counting_infer(algo.ctx.executor))
    for r in (1, 2):
        calls.clear()
        fresh.run_round(r)
        assert len(calls) == 2 + 4 + 1 + 2  # edges down, devices up, cloud down, edges up
        calls.clear()
        cached.run_round(r)
        # Round 2 reuses the edges' logits from round 1's upward step; the cloud's are prefetched.
        assert len(calls) == (9 if r == 1 else 7)
        assert cached.trace == fresh.trace
    for n, state in fresh.models.states.items():
        other = cached.models.states[n]
        assert all(torch.equal(state[k], other[k]) for k in state), n
