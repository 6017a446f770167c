"""Bound-constant estimators (torch.func) against direct autograd computations on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from edgelearn.errors import DataError
from edgelearn.models.zoo import MLP
from edgelearn.planning.constants import estimate_constants, pilot_run, pl_constant

N_SAMPLES = 64
FEATURES = (8,)
CLASSES = 3


def tiny() -> tuple[MLP, tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Logistic regression (MLP without hidden layers) and two seeded 64-sample data sets (task, general)."""
    torch.manual_seed(0)
    model = MLP(FEATURES, CLASSES, hidden=())
    gen = torch.Generator().manual_seed(1)
    task = (
        torch.randn(N_SAMPLES, *FEATURES, generator=gen),
        torch.randint(0, CLASSES, (N_SAMPLES,), generator=gen),
    )
    general = (
        torch.randn(N_SAMPLES, *FEATURES, generator=gen) + 1.0,
        torch.randint(0, CLASSES, (N_SAMPLES,), generator=gen),
    )
    return model, task, general


def full(model: MLP, **kwargs: object) -> dict[str, object]:
    """Estimator options that use every sample (so results can be compared with exact computations)."""
    return dict(variance_samples=N_SAMPLES, gradient_samples=N_SAMPLES, hessian_samples=N_SAMPLES, **kwargs)


def flat_grad(model: MLP, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()  # type: ignore[union-attr]


def test_matches_direct_autograd() -> None:
    model, task, general = tiny()
    est = estimate_constants(model, task, general, power_iterations=60, **full(model))  # type: ignore[arg-type]
    x, y = task
    # L: largest Hessian eigenvalue of the mean task loss (cross-entropy Hessians are PSD)
    params = [p for p in model.parameters()]
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]

    def loss_flat(theta: torch.Tensor) -> torch.Tensor:
        chunks = torch.split(theta, sizes)
        weight, bias = (c.reshape(s) for c, s in zip(chunks, shapes))
        return F.cross_entropy(torch.flatten(x, 1) @ weight.T + bias, y)

    theta = torch.cat([p.detach().reshape(-1) for p in params])
    hessian = torch.autograd.functional.hessian(loss_flat, theta)
    assert est.L == pytest.approx(float(torch.linalg.eigvalsh(hessian.double()).max()), rel=1e-3)
    # sigma^2: mean squared deviation of per-sample gradients, by an explicit loop
    per_sample = torch.stack([flat_grad(model, x[i : i + 1], y[i : i + 1]) for i in range(N_SAMPLES)])
    expected = float(((per_sample - per_sample.mean(0)) ** 2).sum(1).mean())
    assert est.sigma2_task == pytest.approx(expected, rel=1e-5)
    # Delta: the initial task loss; delta: the full-batch gradient gap; loss gap: |F - F~|
    with torch.no_grad():
        assert est.Delta == pytest.approx(float(F.cross_entropy(model(x), y)), rel=1e-6)
        gap = abs(float(F.cross_entropy(model(x), y)) - float(F.cross_entropy(model(general[0]), general[1])))
    assert est.loss_gap == pytest.approx(gap, rel=1e-5)
    shift = float(torch.linalg.vector_norm(flat_grad(model, *task) - flat_grad(model, *general)))
    assert est.delta == pytest.approx(shift, rel=1e-5)


def test_same_distribution_has_no_shift_and_seed_is_deterministic() -> None:
    model, task, _ = tiny()
    est = estimate_constants(model, task, task, seed=3, **full(model))  # type: ignore[arg-type]
    assert est.delta < 1e-6 and est.loss_gap is not None and est.loss_gap < 1e-6
    assert est.sigma2_general == pytest.approx(est.sigma2_task, rel=1e-6)
    again = estimate_constants(model, task, task, seed=3, **full(model))  # type: ignore[arg-type]
    assert again == est


def test_checkpoints_take_the_maximum_and_mode_is_restored() -> None:
    model, task, general = tiny()
    model.train()
    base = estimate_constants(model, task, general, **full(model))  # type: ignore[arg-type]
    far = {k: 3.0 * v for k, v in model.state_dict().items()}
    both = estimate_constants(
        model,
        task,
        general,
        checkpoints=[far],
        **full(model),  # type: ignore[arg-type]
    )
    assert both.L >= base.L * (1 - 1e-6) and both.delta >= base.delta * (1 - 1e-9)
    assert both.sigma2_task == base.sigma2_task and both.Delta == base.Delta  # measured at the state only
    assert model.training


def test_bad_inputs_raise_data_errors() -> None:
    model, task, general = tiny()
    with pytest.raises(DataError, match="task has 64 inputs and 10 labels"):
        estimate_constants(model, (task[0], task[1][:10]), general)
    with pytest.raises(DataError, match="pair"):
        estimate_constants(model, task[0], general)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="state lacks"):
        estimate_constants(model, task, general, state={})
    with pytest.raises(DataError, match="power_iterations"):
        estimate_constants(model, task, general, power_iterations=0)


def test_pl_constant_recovers_an_exact_geometric_rate() -> None:
    # F_m = 2.0 * (1 - mu lr)^m with mu = 0.4, lr = 0.05: the fit through the first point is exact
    steps = [0, 10, 20, 40]
    losses = [2.0 * (1 - 0.4 * 0.05) ** m for m in steps]
    assert pl_constant(steps, losses, lr=0.05) == pytest.approx(0.4, rel=1e-9)
    assert pl_constant([0, 10], [1.0, 1.5], lr=0.05) is None  # no progress, no rate
    assert pl_constant([0], [1.0], lr=0.05) is None


def test_pilot_run_is_seeded_leaves_the_model_alone_and_lowers_the_general_loss() -> None:
    model, _, (x, _) = tiny()
    general = (x, x[:, :CLASSES].argmax(dim=1))  # learnable labels, so SGD makes progress
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = pilot_run(model, general, steps=40, batch_size=16, lr=0.2, count=4, seed=3)
    b = pilot_run(model, general, steps=40, batch_size=16, lr=0.2, count=4, seed=3)
    assert a.steps == [0, 10, 20, 30, 40] and len(a.states) == 4
    assert a.losses == b.losses
    assert a.losses[-1] < a.losses[0]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert math.isfinite(pl_constant(a.steps, a.losses, lr=0.2) or math.nan)
    with pytest.raises(DataError, match="need >= 1"):
        pilot_run(model, general, steps=0, batch_size=16, lr=0.5, count=4)
