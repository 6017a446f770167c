"""Normalization under the vmap executor: BatchNorm trained per client in lockstep (masked batch statistics,
per-client running statistics), GroupNorm and LayerNorm, all against the serial reference."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_engine_vmap import round_robin_cohort
from torch import nn
from torch.func import functional_call, vmap

from edgelearn.engine import ClientData, Cohort, CohortResult, LocalSpec, SerialExecutor
from edgelearn.engine.auto import MIN_PROBED_CLIENTS, AutoExecutor
from edgelearn.engine.precision import precision
from edgelearn.engine.vmap import VmapExecutor, unsupported_reason
from edgelearn.engine.vmap_norm import MaskedNorms
from edgelearn.models import build_model
from edgelearn.run_config import build_config
from edgelearn.runner import run

CPU = torch.device("cpu")
CLASSES = 3
IMAGE = (3, 8, 8)
"""Input of the zoo CNNs here: 8x8 keeps resnet8's last stage at 2x2, so a one-sample batch still has four
values per channel (torch's train-mode BatchNorm refuses one)."""
RAGGED = [1, 5, 17, 40, 0, 9]
"""Client sizes: a single sample, partial last batches, one large client and one without data."""
RAGGED_BATCHES = [4, 3, 8, 5, 2, 6]

# Tolerances. vmap and serial compute the same float32 function with different reduction orders: torch's
# BatchNorm kernel reduces each channel in its own order, the masked version sums x * mask over the batch and
# spatial axes, and batched convolutions/matmuls split their sums differently from per-client ones. Each
# reordered float32 sum differs by a few units of roundoff (2^-24 = 6e-8 relative), which SGD then carries
# through the steps. Measured over this file's float32 tests (one thread; native AVX-512 and with
# ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2, the worse of the two): parameters differ by at most 2.1e-6
# (the BatchNorm1d MLP of the auto test, 4 values per channel), running means by 1.1e-6 and running variances
# by 3.8e-6 absolute (values ~3 in cnn_medium: 1.3e-6 relative), training losses by 2.4e-7. The bound
# STATE_ATOL + STATE_RTOL * |value| is about 10x the state differences and LOSS_ATOL 8x the loss one; counting
# the padding in the statistics moves a running variance by more than 100 * STATE_ATOL (tested below).
STATE_ATOL = 1e-5
"""Absolute tolerance on every floating state entry (parameters, running means and variances)."""
STATE_RTOL = 1e-5
"""Relative tolerance on the same: running variances reach a few units in the wider zoo CNN."""
LOSS_ATOL = 2e-6
"""Absolute tolerance on per-client mean training losses (O(1) values; 2.4e-7 measured)."""
F64_ATOL = 1e-9
"""Absolute tolerance of the float64 exactness checks. BatchNorm over a handful of values per channel (a batch
of one at resnet8's 2x2 last stage, BatchNorm1d on two samples) is ill-conditioned: 1 / sqrt(var + eps)
amplifies rounding differences step after step, so float32 runs of 18 single-sample steps drift apart by up to
0.27 while the same runs in float64 agree to 1.9e-12 (measured; float64 roundoff is 1.1e-16). 1e-9 is 500x
that and still far below what a logic error (padding counted, an update missed) moves."""
RUN_RTOL = 1e-5
"""Relative tolerance on a run's float metrics (test loss, training loss), as in test_engine_vmap.py's
end-to-end test; one round of the digits run below differs by 1.7e-7 (measured). A second round would not do:
there serial at 2 threads moves the test loss by 3.2e-4 from serial at 1 thread, as much as vmap does
(3.0e-4), because some of resnet8's BatchNorm channels see near-constant inputs on 8x8 digits and magnify
float32 reduction order (float64 runs of the same cohorts agree to 4e-16)."""
BF16_TOL = 2e-2
"""Under engine.precision=bfloat16 (8 significant bits, unit roundoff 2^-9 = 2e-3) serial and vmap round the
convolutions' outputs differently (batched vs per-client sums) and BatchNorm rescales those rounding errors by
each channel's inverse standard deviation. Measured between them on the BatchNorm CNN, native and AVX2 alike:
6.5e-3 on the states (max |a - b| / (1 + |b|)); 3x that. tests/test_engine_precision.py's cnn_small without
BatchNorm measured 6.7e-4 and uses 1e-2."""
BF16_LOSS_RTOL = 5e-3
"""Relative tolerance on training losses under bfloat16: 1.3e-3 measured (as for BF16_TOL), about 4x."""

SGD_ALL = LocalSpec(lr=0.05, batch_size=4, epochs=2, momentum=0.9, weight_decay=1e-3, prox_mu=0.05)


def _resnet8_bn() -> nn.Module:
    """The zoo's ResNet-8 with BatchNorm (stem, blocks and projection shortcuts), at quarter width."""
    return build_model("resnet8", IMAGE, CLASSES, width=0.25, norm="batch")


def _resnet8_bn_f64() -> nn.Module:
    """:func:`_resnet8_bn` in float64, for exactness checks free of float32 rounding (see F64_ATOL)."""
    return _resnet8_bn().double()


def _cnn_medium_bn() -> nn.Module:
    """The zoo's VGG-style cnn_medium with BatchNorm after every convolution."""
    return build_model("cnn_medium", IMAGE, CLASSES, norm="batch")


def _resnet8_gn() -> nn.Module:
    """The zoo's ResNet-8 with GroupNorm (its default): per-sample statistics, no buffers."""
    return build_model("resnet8", IMAGE, CLASSES, width=0.25, norm="group")


class _LayerNormMLP(nn.Module):
    """An MLP with LayerNorm after its hidden layer (per-sample statistics, no buffers)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 12)
        self.norm = nn.LayerNorm(12)
        self.head = nn.Linear(12, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, classes)."""
        return self.head(torch.relu(self.norm(self.fc(x))))


class _BatchNormMLP(nn.Module):
    """An MLP with a BatchNorm1d of the given options (flat features: one value per sample and channel)."""

    def __init__(self, **options: object) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 6)
        self.bn = nn.BatchNorm1d(6, **options)  # type: ignore[arg-type]
        self.head = nn.Linear(6, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, classes)."""
        return self.head(torch.relu(self.bn(self.fc(x))))


class _TwiceNormalized(nn.Module):
    """One BatchNorm applied twice per forward: two running-statistics updates per step, the second from the
    first's result (serial updates the buffers in place in between)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 6)
        self.bn = nn.BatchNorm1d(6)
        self.head = nn.Linear(6, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, classes)."""
        h = self.bn(self.fc(x))
        return self.head(self.bn(torch.relu(h) * 2.0))


def _with_momentum(model_fn: Callable[[], nn.Module], momentum: float | None) -> nn.Module:
    """``model_fn()`` with every BatchNorm's momentum set (None: torch's cumulative moving average)."""
    model = model_fn()
    for sub in model.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            sub.momentum = momentum
    return model


def _cohort(
    model_fn: Callable[[], nn.Module],
    shape: Sequence[int],
    sizes: Sequence[int],
    batch_sizes: Sequence[int] | None = None,
    *,
    num_starts: int = 2,
    num_groups: int = 2,
    key: str = "model",
    dtype: torch.dtype = torch.float32,
) -> Cohort:
    """Seeded clients of the given sizes, inputs of ``dtype`` (``model_fn`` builds the model in the same
    dtype); start states with non-trivial running statistics, so the running average's old term matters;
    groups and starts assigned round-robin; every client's state kept."""
    torch.manual_seed(0)
    starts = []
    for s in range(num_starts):
        model = model_fn()
        with torch.no_grad():  # one train-mode forward moves the running statistics off (0, 1)
            model.train()(torch.randn(4, *shape, dtype=dtype) * (1 + s) + s)
        starts.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    g = torch.Generator().manual_seed(1)
    data = [
        ClientData(
            torch.randn(n, *shape, generator=g, dtype=dtype), torch.randint(0, CLASSES, (n,), generator=g)
        )
        for n in sizes
    ]
    return round_robin_cohort(model_fn, key, starts, data, num_groups, 3, batch_sizes)


def _assert_same(
    got: CohortResult,
    want: CohortResult,
    atol: float = STATE_ATOL,
    rtol: float = STATE_RTOL,
    loss_atol: float = LOSS_ATOL,
    loss_rtol: float = 0.0,
) -> None:
    """Equal work, losses, per-client states and group means; integer buffers (batch counters) exactly."""
    np.testing.assert_array_equal(got.samples, want.samples)
    np.testing.assert_array_equal(got.steps, want.steps)
    np.testing.assert_allclose(
        got.train_loss, want.train_loss, atol=loss_atol, rtol=loss_rtol, equal_nan=True
    )
    assert got.client_states is not None and want.client_states is not None
    pairs = list(zip(got.group_states, want.group_states)) + list(zip(got.client_states, want.client_states))
    assert len(got.client_states) == len(want.client_states)
    for g, w in pairs:
        assert (g is None) == (w is None)
        if g is None or w is None:
            continue
        assert g.keys() == w.keys()
        for k in w:
            assert g[k].dtype == w[k].dtype, k
            if w[k].is_floating_point():
                torch.testing.assert_close(g[k], w[k], atol=atol, rtol=rtol, msg=k)
            else:
                assert torch.equal(g[k], w[k]), k


def _both(
    cohort: Cohort, spec: LocalSpec, chunk_size: int | None = None
) -> tuple[CohortResult, CohortResult]:
    """The cohort trained by the vmap executor and by the serial reference."""
    return VmapExecutor(CPU, chunk_size=chunk_size).train(cohort, spec), SerialExecutor(CPU).train(
        cohort, spec
    )


def _tracked(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Every BatchNorm's num_batches_tracked in ``state``."""
    return {k: int(v) for k, v in state.items() if k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("chunk_size", [None, 4])
@pytest.mark.parametrize("model_fn", [_resnet8_bn, _cnn_medium_bn], ids=["resnet8_bn", "cnn_medium_bn"])
def test_batchnorm_cnn_ragged_cohort_matches_serial(
    model_fn: Callable[[], nn.Module], chunk_size: int | None
) -> None:
    cohort = _cohort(model_fn, IMAGE, RAGGED, RAGGED_BATCHES, key=model_fn.__name__)
    assert unsupported_reason(model_fn()) is None
    got, want = _both(cohort, SGD_ALL, chunk_size)
    _assert_same(got, want)
    # ragged: 2 epochs of 1 sample in batches of 4, ..., 40 in batches of 5: 16 steps; nothing for no data
    assert got.steps.tolist() == [2, 4, 6, 16, 0, 4]
    assert got.client_states is not None
    for i, state in enumerate(got.client_states):
        start = cohort.starts[int(cohort.start_of[i])]
        assert _tracked(state) == {k: n + int(got.steps[i]) for k, n in _tracked(start).items()}
        for k in state:
            if k.endswith(("running_mean", "running_var")):  # per-client statistics move only with steps
                assert torch.equal(state[k], start[k]) == (got.steps[i] == 0), k


@pytest.mark.parametrize("momentum", [0.3, None], ids=["momentum0.3", "cumulative"])
def test_batchnorm_momentum_and_cumulative_average_in_steps_mode(momentum: float | None) -> None:
    model_fn = functools.partial(_with_momentum, _resnet8_bn, momentum)
    cohort = _cohort(model_fn, IMAGE, [2, 7, 12, 3], [2, 4, 5, 3], num_starts=1, key=f"bn-{momentum}")
    spec = LocalSpec(lr=0.05, batch_size=4, epochs=None, steps=5, momentum=0.5)
    got, want = _both(cohort, spec, chunk_size=3)
    _assert_same(got, want)
    assert got.steps.tolist() == [5] * 4


@given(
    sizes=st.lists(st.integers(0, 9), min_size=1, max_size=5),
    batch=st.integers(1, 5),
    chunk=st.integers(1, 5),
    epochs=st.integers(1, 2),
)
@settings(max_examples=10, deadline=None)
def test_any_sizes_batches_and_chunks_match_serial(
    sizes: list[int], batch: int, chunk: int, epochs: int
) -> None:
    # float64: batches of one or two samples make BatchNorm ill-conditioned (see F64_ATOL)
    cohort = _cohort(_resnet8_bn_f64, IMAGE, sizes, key="resnet8_bn_f64", dtype=torch.float64)
    spec = LocalSpec(lr=0.1, batch_size=batch, epochs=epochs, momentum=0.8, weight_decay=0.01)
    got, want = _both(cohort, spec, chunk_size=chunk)
    _assert_same(got, want, atol=F64_ATOL, rtol=0.0)


@pytest.mark.parametrize(
    "options",
    [{}, {"affine": False}, {"track_running_stats": False}, {"momentum": None}],
    ids=["default", "no_affine", "no_running_stats", "cumulative"],
)
def test_batchnorm1d_options_match_serial(options: dict[str, object]) -> None:
    def model_fn() -> nn.Module:
        return _BatchNormMLP(**options).double()

    # float64: BatchNorm1d over batches of 2-4 samples is ill-conditioned (see F64_ATOL)
    cohort = _cohort(model_fn, (8,), [4, 6, 11, 3], [2, 3, 4, 3], key="bn1d", dtype=torch.float64)
    got, want = _both(cohort, SGD_ALL, chunk_size=3)
    _assert_same(got, want, atol=F64_ATOL, rtol=0.0)
    assert got.client_states is not None
    assert ("bn.running_mean" in got.client_states[0]) == options.get("track_running_stats", True)


def test_batchnorm_used_twice_per_forward_updates_twice_like_serial() -> None:
    def model_fn() -> nn.Module:
        return _TwiceNormalized().double()

    cohort = _cohort(model_fn, (8,), [6, 8, 2], [2, 4, 2], key="twice", dtype=torch.float64)
    got, want = _both(cohort, SGD_ALL)
    _assert_same(got, want, atol=F64_ATOL, rtol=0.0)
    assert got.client_states is not None
    start = int(cohort.starts[0]["bn.num_batches_tracked"])
    assert int(got.client_states[0]["bn.num_batches_tracked"]) == start + 2 * int(got.steps[0])


def test_one_value_per_channel_raises_like_serial() -> None:
    # BatchNorm1d on a batch of one sample: torch refuses the batch statistics of a single value.
    cohort = _cohort(_BatchNormMLP, (8,), [5, 3], [2, 3], key="bn1d")
    spec = LocalSpec(lr=0.1, batch_size=2, epochs=1)
    for executor in (SerialExecutor(CPU), VmapExecutor(CPU)):
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            executor.train(cohort, spec)


def test_padding_would_change_the_statistics() -> None:
    # The masked statistics matter: client 0's two samples are padded to client 1's batch of 6 with copies
    # of its sample 0; counted, they would shift its batch mean and variance. One step, so the result is the
    # serial one up to rounding, and far from training on the padded batch.
    cohort = _cohort(_BatchNormMLP, (8,), [2, 6], [2, 6], num_starts=1, key="bn1d")
    spec = LocalSpec(lr=0.5, batch_size=2, epochs=1)
    got, want = _both(cohort, spec)
    _assert_same(got, want)
    first = cohort.data[0]
    padded = ClientData(
        torch.cat([first.x, first.x[:1].expand(4, -1)]), torch.cat([first.y, first.y[:1].expand(4)])
    )
    unmasked = _cohort(_BatchNormMLP, (8,), [6], [6], num_starts=1, key="bn1d")
    unmasked.data = [padded]
    wrong = SerialExecutor(CPU).train(unmasked, spec)
    assert got.client_states is not None and wrong.client_states is not None
    gap = (got.client_states[0]["bn.running_var"] - wrong.client_states[0]["bn.running_var"]).abs().max()
    assert gap > 100 * STATE_ATOL


def test_eval_mode_normalizes_with_each_clients_running_statistics() -> None:
    # The vmap executor trains only (evaluation runs one module per state), but the masked forward also
    # covers eval mode: running statistics per client, no update, padding irrelevant.
    module = _resnet8_bn()
    norms = MaskedNorms.attach(module)
    assert norms is not None and "stem.1" in norms.names
    cohort = _cohort(_resnet8_bn, IMAGE, [1, 1, 1], num_starts=3)
    stacked = {k: torch.stack([s[k] for s in cohort.starts]) for k in cohort.starts[0]}
    x = torch.randn(3, 5, *IMAGE, generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] * 5])

    def forward(state: dict[str, torch.Tensor], xs: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        with norms.active(m):
            return functional_call(module, state, (xs,))

    module.eval()
    got = vmap(forward)(stacked, x, mask)
    reference = _resnet8_bn().eval()
    for i, start in enumerate(cohort.starts):
        reference.load_state_dict(start)
        with torch.no_grad():
            # eval-mode BatchNorm is per-sample given the statistics: one float32 rounding order apart
            torch.testing.assert_close(got[i], reference(x[i]), atol=STATE_ATOL, rtol=STATE_RTOL)
    # outside `active` the layers are torch's own again: the same module equals the reference exactly
    module.load_state_dict(cohort.starts[2])
    with torch.no_grad():
        torch.testing.assert_close(module(x[2]), reference(x[2]), atol=0.0, rtol=0.0)


@pytest.mark.parametrize(
    ("model_fn", "shape"),
    [(_resnet8_gn, IMAGE), (_LayerNormMLP, (8,))],
    ids=["resnet8_groupnorm", "layernorm"],
)
def test_groupnorm_and_layernorm_models_match_serial(
    model_fn: Callable[[], nn.Module], shape: tuple[int, ...]
) -> None:
    assert unsupported_reason(model_fn()) is None
    cohort = _cohort(model_fn, shape, RAGGED, RAGGED_BATCHES, key=model_fn.__name__)
    got, want = _both(cohort, SGD_ALL, chunk_size=4)
    _assert_same(got, want)


def test_bfloat16_policy_batchnorm_matches_serial() -> None:
    cohort = _cohort(_resnet8_bn, IMAGE, [3, 8, 5], [2, 4, 3], key="resnet8_bn")
    spec = LocalSpec(lr=0.05, batch_size=4, epochs=1, momentum=0.9)
    with precision("bfloat16", CPU):
        got, want = _both(cohort, spec)
    _assert_same(got, want, atol=BF16_TOL, rtol=BF16_TOL, loss_atol=0.0, loss_rtol=BF16_LOSS_RTOL)


def test_batchnorm_trains_in_lockstep_without_fallback(caplog: pytest.LogCaptureFixture) -> None:
    cohort = _cohort(_resnet8_bn, IMAGE, [3, 6], [2, 3], key="resnet8_bn")
    executor = VmapExecutor(CPU)
    with caplog.at_level(logging.INFO, logger="edgelearn.engine.vmap"):
        executor.train(cohort, SGD_ALL)
    assert not [r for r in caplog.records if "serially" in r.getMessage()]
    assert executor.unsupported_reason(cohort) is None


def test_auto_rule_now_picks_vmap_for_batchnorm() -> None:
    def bn_mlp() -> nn.Module:
        return _BatchNormMLP()

    cohort = _cohort(bn_mlp, (8,), [4, 6, 8] * 6, key="bn")
    assert len(cohort) >= MIN_PROBED_CLIENTS
    executor = AutoExecutor(CPU)
    assert executor.choose(cohort, SGD_ALL) == "vmap"
    assert executor.choices["bn|n<=32|cpu"]["reason"] == "rule (deterministic)"
    _assert_same(executor.train(cohort, SGD_ALL), SerialExecutor(CPU).train(cohort, SGD_ALL))


def test_dropout_and_overridden_batchnorm_still_fall_back() -> None:
    assert "Dropout" in str(unsupported_reason(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))))
    sync = unsupported_reason(nn.Sequential(nn.Linear(2, 2), nn.SyncBatchNorm(2)))
    assert sync is not None and "1 is SyncBatchNorm" in sync
    tracked = unsupported_reason(
        nn.Sequential(nn.Conv1d(2, 2, 1), nn.InstanceNorm1d(2, track_running_stats=True))
    )
    assert tracked is not None and "InstanceNorm1d" in tracked


def _run_metrics(executor: str, out: Path) -> list[dict[str, object]]:
    """One FedAvg round on digits with the zoo's resnet8 + BatchNorm; the metrics rows without wall time."""
    overrides = [
        f"executor={executor}",
        "topology.devices=10",
        "algorithm.rounds=1",
        "model.name=resnet8",
        "model.options.norm=batch",
        "model.options.width=0.25",
        "output.progress=false",
        "output.plots=false",
    ]
    summary = run(build_config({}, overrides), out)
    assert summary["executor"] == executor
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("wall_s")
    return rows


def test_end_to_end_batchnorm_run_reproduces_serial(tmp_path: Path) -> None:
    # Training per client under vmap, then evaluation of the aggregated model in eval mode (running statistics
    # averaged over the clients', as WeightedMean does in serial).
    got = _run_metrics("vmap", tmp_path / "vmap")
    want = _run_metrics("serial", tmp_path / "serial")
    assert len(got) == len(want) == 1
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for k in w:
            if isinstance(w[k], float):
                assert g[k] == pytest.approx(w[k], rel=RUN_RTOL), k
            else:
                assert g[k] == w[k], k
