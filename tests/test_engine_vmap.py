"""The vmap executor against the serial reference, a hand-computed lockstep run, and end-to-end runs."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgelearn.engine import ClientData, Cohort, CohortResult, LocalSpec, SerialExecutor, make_executor
from edgelearn.engine import vmap as vmap_module
from edgelearn.engine.vmap import VmapExecutor, activation_bytes_per_sample, unsupported_reason
from edgelearn.errors import ConfigError, DataError
from edgelearn.models import build_model
from edgelearn.run_config import build_config
from edgelearn.runner import run

CPU = torch.device("cpu")
ATOL = 1e-5
CLASSES = 3
RAGGED = [1, 5, 17, 40]


def _cohort(
    model_fn: Callable[[], nn.Module],
    shape: Sequence[int],
    sizes: Sequence[int],
    *,
    num_starts: int = 2,
    num_groups: int = 3,
    batch_sizes: Sequence[int] | None = None,
    keep_states: bool = True,
    extra: Callable[[int, torch.Generator], Mapping[str, torch.Tensor]] | None = None,
) -> Cohort:
    """Clients of the given sizes (seeded data), several start states and groups assigned round-robin."""
    torch.manual_seed(0)
    starts = [{k: v.detach().clone() for k, v in model_fn().state_dict().items()} for _ in range(num_starts)]
    g = torch.Generator().manual_seed(1)
    data = []
    for n in sizes:
        x = torch.randn(n, *shape, generator=g)
        y = torch.randint(0, CLASSES, (n,), generator=g)
        data.append(ClientData(x, y, extra(n, g) if extra is not None else {}))
    return round_robin_cohort(
        model_fn, f"test:{id(model_fn)}", starts, data, num_groups, 7, batch_sizes, keep_states=keep_states
    )


def round_robin_cohort(
    model_fn: Callable[[], nn.Module],
    key: str,
    starts: Sequence[Mapping[str, torch.Tensor]],
    data: Sequence[ClientData],
    num_groups: int,
    seed_offset: int,
    batch_sizes: Sequence[int] | None = None,
    *,
    keep_states: bool = True,
) -> Cohort:
    """A cohort of ``data``'s clients with starts and groups assigned round-robin, weights size + 1 and seeds
    ``seed_offset`` + index."""
    count = len(data)
    return Cohort(
        model_fn=model_fn,
        arch_key=key,
        data=list(data),
        starts=list(starts),
        start_of=np.arange(count) % len(starts),
        group_of=np.arange(count) % num_groups,
        num_groups=num_groups,
        weights=np.asarray([len(d) for d in data], dtype=np.float64) + 1.0,
        seeds=np.arange(count, dtype=np.int64) + seed_offset,
        batch_sizes=None if batch_sizes is None else np.asarray(batch_sizes),
        keep_states=keep_states,
    )


def _assert_same(got: CohortResult, want: CohortResult, atol: float = ATOL) -> None:
    """Equal per-client work, losses, final states and group means (float tolerance)."""
    np.testing.assert_array_equal(got.samples, want.samples)
    np.testing.assert_array_equal(got.steps, want.steps)
    np.testing.assert_allclose(got.train_loss, want.train_loss, atol=atol, equal_nan=True)
    assert len(got.group_states) == len(want.group_states)
    for g, w in zip(got.group_states, want.group_states):
        assert (g is None) == (w is None)
        if w is not None and g is not None:
            assert g.keys() == w.keys()
            for k in w:
                assert g[k].dtype == w[k].dtype
                torch.testing.assert_close(g[k], w[k], atol=atol, rtol=0)
    if want.client_states is None:
        assert got.client_states is None
        return
    assert got.client_states is not None and len(got.client_states) == len(want.client_states)
    for g, w in zip(got.client_states, want.client_states):
        for k in w:
            torch.testing.assert_close(g[k], w[k], atol=atol, rtol=0)


def _both(
    cohort: Cohort, spec: LocalSpec, chunk_size: int | None = None
) -> tuple[CohortResult, CohortResult]:
    return VmapExecutor(CPU, chunk_size=chunk_size).train(cohort, spec), SerialExecutor(CPU).train(
        cohort, spec
    )


def _mlp() -> nn.Module:
    return build_model("mlp", (8,), CLASSES, hidden=[16])


def _cnn_small() -> nn.Module:
    return build_model("cnn_small", (1, 8, 8), CLASSES)


def _resnet8() -> nn.Module:
    return build_model("resnet8", (3, 8, 8), CLASSES, width=0.5, norm="group")


SGD_ALL = LocalSpec(lr=0.1, batch_size=4, epochs=2, momentum=0.9, weight_decay=1e-3, prox_mu=0.1)


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_mlp_ragged_epochs_momentum_wd_prox_groups_starts(chunk_size: int | None) -> None:
    cohort = _cohort(_mlp, (8,), [*RAGGED, 0, 9], batch_sizes=[4, 3, 8, 5, 2, 6])
    got, want = _both(cohort, SGD_ALL, chunk_size)
    _assert_same(got, want)
    # the client without data keeps its start state and reports no work
    assert got.steps[4] == 0 and np.isnan(got.train_loss[4])
    assert torch.equal(got.client_states[4]["net.1.weight"], cohort.starts[0]["net.1.weight"])
    # 40 samples in batches of 2 for 2 epochs: 40 steps; 17 in batches of 8: 3 per epoch
    assert got.steps.tolist() == [2, 4, 6, 16, 0, 4]
    assert got.samples.tolist() == [2, 10, 34, 80, 0, 18]


def test_mlp_steps_mode_with_per_client_batch_sizes() -> None:
    cohort = _cohort(_mlp, (8,), RAGGED, batch_sizes=[2, 16, 4, 8], num_groups=1, keep_states=False)
    spec = LocalSpec(lr=0.05, batch_size=4, epochs=None, steps=7, momentum=0.5)
    got, want = _both(cohort, spec, chunk_size=2)
    _assert_same(got, want)
    assert got.client_states is None
    assert got.steps.tolist() == [7, 7, 7, 7]
    assert got.samples.tolist() == [7 * 1, 7 * 5, 7 * 4, 7 * 8]  # batch = min(batch size, samples)


@pytest.mark.parametrize(
    ("model_fn", "shape"), [(_cnn_small, (1, 8, 8)), (_resnet8, (3, 8, 8))], ids=["cnn_small", "resnet8_gn"]
)
def test_conv_models_match_serial(model_fn: Callable[[], nn.Module], shape: tuple[int, ...]) -> None:
    cohort = _cohort(model_fn, shape, [1, 3, 6], batch_sizes=[4, 2, 4])
    spec = LocalSpec(lr=0.05, batch_size=4, epochs=1, momentum=0.9, weight_decay=5e-4, prox_mu=0.05)
    got, want = _both(cohort, spec, chunk_size=2)
    _assert_same(got, want)


def _teacher(n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    return {"teacher": torch.randn(n, CLASSES, generator=g)}


def kd_loss(apply: Callable[[torch.Tensor], torch.Tensor], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy plus a temperature-2 distillation term against per-sample teacher logits."""
    logits = apply(batch["x"])
    ce = F.cross_entropy(logits, batch["y"], reduction="none")
    soft = F.softmax(batch["teacher"] / 2.0, dim=1)
    kl = F.kl_div(F.log_softmax(logits / 2.0, dim=1), soft, reduction="none").sum(dim=1)
    return ce + 4.0 * kl


def test_custom_loss_with_extra_teacher_logits() -> None:
    cohort = _cohort(_mlp, (8,), RAGGED, extra=_teacher, batch_sizes=[3, 4, 5, 6])
    spec = LocalSpec(lr=0.05, batch_size=4, epochs=1, momentum=0.9, loss=kd_loss)
    got, want = _both(cohort, spec, chunk_size=3)
    _assert_same(got, want)
    plain = VmapExecutor(CPU).train(cohort, LocalSpec(lr=0.05, batch_size=4, epochs=1, momentum=0.9))
    assert not np.allclose(plain.train_loss, got.train_loss)  # the teacher term really entered the loss


@given(
    sizes=st.lists(st.integers(0, 10), min_size=1, max_size=5),
    batch=st.integers(1, 6),
    chunk=st.integers(1, 7),
    epochs=st.integers(1, 2),
)
@settings(max_examples=15, deadline=None)
def test_any_chunking_matches_serial(sizes: list[int], batch: int, chunk: int, epochs: int) -> None:
    model_fn = _linear
    cohort = _cohort(model_fn, (4,), sizes, num_groups=2)
    spec = LocalSpec(lr=0.2, batch_size=batch, epochs=epochs, momentum=0.8, weight_decay=0.01)
    got, want = _both(cohort, spec, chunk_size=chunk)
    _assert_same(got, want)


def _frozen_first_layer() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, CLASSES))
    model[0].requires_grad_(False)
    return model


def test_frozen_parameters_stay_put_like_serial() -> None:
    cohort = _cohort(_frozen_first_layer, (4,), [3, 7, 11], batch_sizes=[2, 3, 4])
    got, want = _both(cohort, SGD_ALL, chunk_size=2)
    _assert_same(got, want)
    for i, state in enumerate(got.client_states):
        start = cohort.starts[int(cohort.start_of[i])]
        assert torch.equal(state["0.weight"], start["0.weight"])  # not even weight decay
    assert not torch.equal(got.client_states[0]["2.weight"], cohort.starts[0]["2.weight"])


def _linear() -> nn.Module:
    return nn.Sequential(nn.Linear(4, CLASSES))


def _scalar() -> nn.Module:
    return nn.Linear(1, 1, bias=False)


def half_square(
    apply: Callable[[torch.Tensor], torch.Tensor], batch: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Per-sample 0.5 * (w x - y)^2 for the one-weight model."""
    return 0.5 * (apply(batch["x"]).squeeze(-1) - batch["y"]) ** 2


def test_lockstep_by_hand_finished_and_padded_clients_are_left_alone() -> None:
    # w0 = 1, lr 0.1, weight decay 0.5, momentum 0.9; every sample is (x=1, y=0) so grad = w.
    # Client A: one sample -> one step: d = 1 + 0.5 = 1.5, w = 1 - 0.15 = 0.85 (then never touched again).
    # Client B: three samples, batch 1 -> three steps:
    #   d1 = 1.5, buf = 1.5, w = 0.85; d2 = 0.85 + 0.425 = 1.275, buf = 1.35 + 1.275 = 2.625, w = 0.5875;
    #   d3 = 0.5875 + 0.29375 = 0.88125, buf = 2.3625 + 0.88125 = 3.24375, w = 0.263125.
    # Client C: two samples in one batch of 2 -> one step, grad = mean(w, w) = 1 -> w = 0.85 like A.
    # Step 1 is 2 wide, so A's and B's rows are padded (masked); steps 2-3 run B alone.
    start = {"weight": torch.ones(1, 1)}
    data = [ClientData(torch.ones(n, 1), torch.zeros(n)) for n in (1, 3, 2)]
    cohort = Cohort(
        model_fn=_scalar,
        arch_key="scalar",
        data=data,
        starts=[start],
        start_of=np.zeros(3, dtype=np.int64),
        group_of=np.array([0, 0, 1]),
        num_groups=2,
        weights=np.array([1.0, 3.0, 2.0]),
        seeds=np.arange(3),
        batch_sizes=np.array([1, 1, 2]),
        keep_states=True,
    )
    spec = LocalSpec(lr=0.1, batch_size=1, epochs=1, momentum=0.9, weight_decay=0.5, loss=half_square)
    res = VmapExecutor(CPU).train(cohort, spec)
    finals = [float(s["weight"]) for s in res.client_states]
    assert finals == pytest.approx([0.85, 0.263125, 0.85], abs=1e-6)
    assert res.steps.tolist() == [1, 3, 1] and res.samples.tolist() == [1, 3, 2]
    loss_b = (0.5 + 0.5 * 0.85**2 + 0.5 * 0.5875**2) / 3
    assert res.train_loss.tolist() == pytest.approx([0.5, loss_b, 0.5], abs=1e-6)
    assert float(res.group_states[0]["weight"]) == pytest.approx((0.85 * 1 + 0.263125 * 3) / 4, abs=1e-6)
    assert float(res.group_states[1]["weight"]) == pytest.approx(0.85, abs=1e-6)


def test_masked_mean_ignores_padding_by_hand() -> None:
    # Client A: samples x=[1, 3], y=0, batch 2 -> grad = mean(w x^2) = 5 w; width is padded to B's 4 with
    # A's sample 0 (x=1), which must not count (unmasked it would give (1+9+1+1)/4 = 3 w).
    start = {"weight": torch.ones(1, 1)}
    data = [
        ClientData(torch.tensor([[1.0], [3.0]]), torch.zeros(2)),
        ClientData(torch.ones(4, 1), torch.zeros(4)),
    ]
    cohort = Cohort(
        model_fn=_scalar,
        arch_key="scalar",
        data=data,
        starts=[start],
        start_of=np.zeros(2, dtype=np.int64),
        group_of=np.zeros(2, dtype=np.int64),
        num_groups=1,
        weights=np.ones(2),
        seeds=np.arange(2),
        batch_sizes=np.array([2, 4]),
        keep_states=True,
    )
    res = VmapExecutor(CPU).train(cohort, LocalSpec(lr=0.1, batch_size=2, epochs=1, loss=half_square))
    assert float(res.client_states[0]["weight"]) == pytest.approx(1 - 0.1 * 5, abs=1e-6)
    assert float(res.client_states[1]["weight"]) == pytest.approx(1 - 0.1 * 1, abs=1e-6)
    assert res.train_loss[0] == pytest.approx((0.5 + 4.5) / 2, abs=1e-6)


def _dropout_net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, CLASSES))


def test_dropout_model_falls_back_to_serial_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    cohort = _cohort(_dropout_net, (4,), [4, 6, 12], batch_sizes=[2, 3, 4])
    spec = LocalSpec(lr=0.1, batch_size=4, epochs=1, momentum=0.9)
    executor = VmapExecutor(CPU)
    with caplog.at_level(logging.INFO, logger="edgelearn.engine.vmap"):
        torch.manual_seed(5)  # dropout draws from the global stream: the same masks as the serial run
        got = executor.train(cohort, spec)
        executor.train(cohort, spec)
    torch.manual_seed(5)
    want = SerialExecutor(CPU).train(cohort, spec)
    _assert_same(got, want, atol=0.0)
    messages = [r.getMessage() for r in caplog.records if "serially" in r.getMessage()]
    assert len(messages) == 1 and "Dropout" in messages[0]


def test_unsupported_reason_names_the_module() -> None:
    assert unsupported_reason(_mlp()) is None
    assert unsupported_reason(_resnet8()) is None
    assert unsupported_reason(build_model("resnet8", (3, 8, 8), CLASSES, norm="batch")) is None  # masked
    drop = unsupported_reason(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)))
    assert drop is not None and "1 is Dropout" in drop
    assert unsupported_reason(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.0))) is None
    tied = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    tied[1].weight = tied[0].weight
    assert "tied" in str(unsupported_reason(tied))


def test_auto_chunk_size_from_memory_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    # Linear(4, 3): state 15 floats = 60 B; activations per sample: input 16 B + output 12 B = 28 B.
    # 6 clients of 8 samples, batch 4, 1 epoch: width 4, 2 steps. Per client:
    # 5 * 60 + 3 * 4 * 28 + 9 * 2 * 4 = 300 + 336 + 72 = 708 B; a budget of 3 * 708 + 1 B gives chunks of 3.
    assert activation_bytes_per_sample(_linear(), torch.zeros(1, 4)) == 28
    monkeypatch.setattr(vmap_module, "memory_budget", lambda device: 3 * 708 + 1)
    cohort = _cohort(_linear, (4,), [8] * 6)
    spec = LocalSpec(lr=0.1, batch_size=4, epochs=1, momentum=0.9)
    executor = VmapExecutor(CPU)
    schedules = [[np.arange(4), np.arange(4, 8)]] * 6
    assert executor.auto_chunk_size(cohort, schedules) == 3
    _assert_same(executor.train(cohort, spec), SerialExecutor(CPU).train(cohort, spec))
    monkeypatch.setattr(vmap_module, "memory_budget", lambda device: 10)
    assert executor.auto_chunk_size(cohort, schedules) == 1  # never below one client


def test_empty_cohort() -> None:
    cohort = _cohort(_linear, (4,), [], num_starts=1, num_groups=2)
    res = VmapExecutor(CPU).train(cohort, SGD_ALL)
    assert res.group_states == [None, None] and res.client_states == []
    assert res.samples.shape == (0,) and res.train_loss.shape == (0,)


def test_bad_inputs_raise_readable_errors() -> None:
    with pytest.raises(ConfigError, match="vmap_chunk"):
        VmapExecutor(CPU, chunk_size=0)
    cohort = _cohort(_linear, (4,), [3, 4], keep_states=False)

    def mean_loss(
        apply: Callable[[torch.Tensor], torch.Tensor], batch: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        return F.cross_entropy(apply(batch["x"]), batch["y"])

    with pytest.raises(ConfigError, match="PER-SAMPLE"):
        VmapExecutor(CPU).train(cohort, LocalSpec(lr=0.1, batch_size=2, loss=mean_loss))
    mixed = _cohort(_linear, (4,), [3, 4], keep_states=False)
    mixed.data = [mixed.data[0], ClientData(mixed.data[1].x, mixed.data[1].y, {"teacher": torch.zeros(4, 3)})]
    with pytest.raises(DataError, match="extra tensors"):
        VmapExecutor(CPU).train(mixed, LocalSpec(lr=0.1, batch_size=2))
    partial = _cohort(_linear, (4,), [3, 4], keep_states=False)
    partial.starts = [{"0.weight": s["0.weight"]} for s in partial.starts]
    with pytest.raises(ValueError, match=r"starts\[0\].*missing \['0.bias'\]"):
        VmapExecutor(CPU).train(partial, LocalSpec(lr=0.1, batch_size=2))


def test_make_executor_passes_the_chunk_option() -> None:
    cfg = build_config({}, ["executor=vmap", "engine.vmap_chunk=7"])
    executor = make_executor(cfg.executor, CPU, cfg.engine)
    assert isinstance(executor, VmapExecutor) and executor.name == "vmap" and executor.chunk_size == 7


HIERFAVG = [
    "algorithm.name=hierfavg",
    "topology.devices=null",
    "topology.edges=2",
    "topology.devices_per_edge=3",
    "algorithm.kappa1=3",
]


def _metrics(executor: str, extra: list[str], out: Path) -> list[dict]:
    base = [
        f"executor={executor}",
        "topology.devices=10",
        "algorithm.rounds=2",
        "output.progress=false",
        "output.plots=false",
    ]
    summary = run(build_config({}, base + extra), out)
    assert summary["executor"] == executor
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("wall_s")
    return rows


@pytest.mark.parametrize("extra", [[], HIERFAVG], ids=["fedavg", "hierfavg"])
def test_end_to_end_vmap_run_reproduces_serial(tmp_path: Path, extra: list[str]) -> None:
    got = _metrics("vmap", extra, tmp_path / "vmap")
    want = _metrics("serial", extra, tmp_path / "serial")
    assert len(got) == len(want) == 2
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for k in w:
            if isinstance(w[k], float):
                assert g[k] == pytest.approx(w[k], rel=1e-5, abs=1e-7), k
            else:
                assert g[k] == w[k], k
