"""Engine: batch schedules, streaming averages, and the serial executor against a hand-written loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgelearn.engine import (
    ClientData,
    Cohort,
    LocalSpec,
    SerialExecutor,
    WeightedMean,
    average_states,
    batch_schedule,
    evaluate_state,
)


@given(n=st.integers(1, 60), b=st.integers(1, 20), epochs=st.integers(1, 3), seed=st.integers(0, 2**31))
@settings(max_examples=50, deadline=None)
def test_epoch_schedule_covers_each_sample_once_per_epoch(n: int, b: int, epochs: int, seed: int) -> None:
    batches = batch_schedule(n, b, seed=seed, epochs=epochs)
    flat = np.concatenate(batches)
    assert len(flat) == n * epochs
    for e in range(epochs):
        per_epoch = -(-n // b)
        chunk = np.concatenate(batches[e * per_epoch : (e + 1) * per_epoch])
        assert sorted(chunk.tolist()) == list(range(n))
    assert all(len(x) <= b for x in batches)


@given(n=st.integers(1, 60), b=st.integers(1, 20), steps=st.integers(1, 30), seed=st.integers(0, 2**31))
@settings(max_examples=50, deadline=None)
def test_step_schedule_has_exact_steps_of_distinct_samples(n: int, b: int, steps: int, seed: int) -> None:
    batches = batch_schedule(n, b, seed=seed, steps=steps)
    assert len(batches) == steps
    for x in batches:
        assert len(x) == min(b, n)
        assert len(set(x.tolist())) == len(x)


def test_schedule_is_deterministic_per_seed() -> None:
    a = batch_schedule(50, 8, seed=3, epochs=2)
    b = batch_schedule(50, 8, seed=3, epochs=2)
    c = batch_schedule(50, 8, seed=4, epochs=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_weighted_mean_by_hand() -> None:
    s1 = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    s2 = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(5)}
    out = average_states([s1, s2], [1.0, 3.0])
    assert torch.allclose(out["w"], torch.tensor([2.5, 5.0]))  # (1*1 + 3*3)/4, (2 + 18)/4
    assert int(out["n"]) == 5 and out["n"].dtype == s1["n"].dtype


def test_weighted_mean_stacked_matches_one_by_one() -> None:
    g = torch.Generator().manual_seed(0)
    states = [{"w": torch.randn(3, 2, generator=g)} for _ in range(4)]
    weights = torch.tensor([1.0, 2.0, 0.5, 4.0])
    a = WeightedMean()
    a.add_stacked({"w": torch.stack([s["w"] for s in states])}, weights)
    b = average_states(states, weights.tolist())
    assert torch.allclose(a.result(states[0])["w"], b["w"], atol=1e-6)


def test_weighted_mean_rejects_empty() -> None:
    with pytest.raises(ValueError):
        WeightedMean().result({"w": torch.zeros(1)})


def _model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


def _clients(sizes: list[int]) -> list[ClientData]:
    g = torch.Generator().manual_seed(1)
    return [ClientData(torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)) for n in sizes]


def test_serial_executor_matches_manual_loop() -> None:
    torch.manual_seed(0)
    start = {k: v.clone() for k, v in _model().state_dict().items()}
    data = _clients([7, 12, 5])
    spec = LocalSpec(lr=0.1, batch_size=4, epochs=2, momentum=0.5, weight_decay=1e-3)
    seeds = np.array([11, 12, 13])
    cohort = Cohort(
        model_fn=_model,
        arch_key="lin",
        data=data,
        starts=[start],
        start_of=np.zeros(3, int),
        group_of=np.array([0, 1, 0]),
        num_groups=2,
        weights=np.array([7.0, 12.0, 5.0]),
        seeds=seeds,
        keep_states=True,
    )
    res = SerialExecutor(torch.device("cpu")).train(cohort, spec)

    finals = []
    for i, d in enumerate(data):
        m = _model()
        m.load_state_dict(start)
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.5, weight_decay=1e-3)
        for idx in batch_schedule(len(d), 4, seed=int(seeds[i]), epochs=2):
            loss = nn.functional.cross_entropy(m(d.x[idx]), d.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        finals.append(m.state_dict())
    for got, want in zip(res.client_states, finals):
        for k in want:
            assert torch.allclose(got[k], want[k], atol=1e-6)
    g0 = average_states([finals[0], finals[2]], [7.0, 5.0])
    for k in g0:
        assert torch.allclose(res.group_states[0][k], g0[k], atol=1e-6)
        assert torch.allclose(res.group_states[1][k], finals[1][k], atol=1e-6)
    assert res.samples.tolist() == [14, 24, 10]
    assert res.steps.tolist() == [4, 6, 4]


def test_serial_executor_per_client_batch_sizes_and_steps() -> None:
    start = _model().state_dict()
    data = _clients([10, 10])
    cohort = Cohort(
        model_fn=_model,
        arch_key="lin",
        data=data,
        starts=[start],
        start_of=np.zeros(2, int),
        group_of=np.zeros(2, int),
        num_groups=1,
        weights=np.ones(2),
        seeds=np.array([1, 2]),
        batch_sizes=np.array([2, 5]),
    )
    res = SerialExecutor(torch.device("cpu")).train(
        cohort, LocalSpec(lr=0.1, batch_size=99, epochs=None, steps=3)
    )
    assert res.samples.tolist() == [6, 15]
    assert res.steps.tolist() == [3, 3]
    assert res.client_states is None


def test_cohort_validates_shapes() -> None:
    with pytest.raises(ValueError, match="one entry per client"):
        Cohort(
            model_fn=_model,
            arch_key="lin",
            data=_clients([3, 3]),
            starts=[_model().state_dict()],
            start_of=np.zeros(1, int),
            group_of=np.zeros(2, int),
            num_groups=1,
            weights=np.ones(2),
            seeds=np.ones(2, int),
        )


def test_evaluate_state_by_hand() -> None:
    m = nn.Linear(2, 2, bias=False)
    state = {"weight": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}
    x = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    y = torch.tensor([0, 1, 1])
    acc, loss = evaluate_state(m, state, x, y, batch_size=2)
    assert acc == pytest.approx(2 / 3)
    good = -np.log(np.exp(2) / (np.exp(2) + 1))
    bad = -np.log(1 / (np.exp(2) + 1))
    assert loss == pytest.approx((2 * good + bad) / 3, rel=1e-6)


def test_custom_loss_sees_extra_tensors_and_prox_pulls_toward_start() -> None:
    torch.manual_seed(0)
    start = {k: v.clone() for k, v in _model().state_dict().items()}
    base = _clients([8])[0]
    target = torch.randn(8, 3)
    data = ClientData(base.x, base.y, extra={"target": target})
    seen_keys: list[set] = []

    def mse_to_target(apply, batch):  # noqa: ANN001, ANN202
        seen_keys.append(set(batch))
        return ((apply(batch["x"]) - batch["target"]) ** 2).mean(dim=1)

    def cohort() -> Cohort:
        return Cohort(
            model_fn=_model,
            arch_key="lin",
            data=[data],
            starts=[start],
            start_of=np.zeros(1, int),
            group_of=np.zeros(1, int),
            num_groups=1,
            weights=np.ones(1),
            seeds=np.array([5]),
        )

    ex = SerialExecutor(torch.device("cpu"))
    free = ex.train(cohort(), LocalSpec(lr=0.2, batch_size=4, epochs=5, loss=mse_to_target)).group_states[0]
    prox = ex.train(cohort(), LocalSpec(lr=0.2, batch_size=4, epochs=5, loss=mse_to_target, prox_mu=2.0))
    assert seen_keys[0] == {"x", "y", "target"}

    def dist(s: dict) -> float:
        return float(sum(((s[k] - start[k]) ** 2).sum() for k in start))

    assert dist(prox.group_states[0]) < dist(free)
    # the trained model fits the targets better than the start did
    m = _model()
    m.load_state_dict(start)
    before = float(((m(data.x) - target) ** 2).mean())
    m.load_state_dict(free)
    assert float(((m(data.x) - target) ** 2).mean()) < before
