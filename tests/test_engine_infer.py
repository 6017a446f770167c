"""executor.infer: the same per-node outputs on serial, vmap, auto and Ray (ragged inputs, shared inputs,
BatchNorm in eval mode, custom output functions, the precision policy), and serial bit for bit equal to the
loops the algorithms used (teacher_logits, prediction_totals)."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
import torch
from torch import nn

from edgelearn.algorithms.kit.distill import teacher_logits
from edgelearn.engine import StateDict, prediction_totals
from edgelearn.engine.auto import MIN_INFER_NODES, AutoExecutor
from edgelearn.engine.infer import InferCohort, InferResult, InferSpec, logits, predictions
from edgelearn.engine.precision import precision
from edgelearn.engine.serial import SerialExecutor
from edgelearn.engine.vmap import VmapExecutor
from edgelearn.engine.vmap_infer import infer_unsupported_reason

CPU = torch.device("cpu")
SHAPE = (1, 8, 8)
CLASSES = 5
BATCH = 4
RAGGED = [7, 0, 13, 4, 1, 9]
"""Samples per node: partial last batches, a node without samples, nodes with fewer samples than a batch."""
ATOL = RTOL = 1e-5
"""float32 tolerance, vmap (and Ray with a vmap inner) against serial: a vmapped forward runs one batched
matrix product or grouped convolution for the whole chunk, which groups each output's float32 sums
differently from a per-model one; measured differences are below 1e-6 on logits of magnitude ~1 (AVX-512
and AVX2), so 1e-5 leaves room for other kernels without hiding a wrong sample or node."""
BF16_ATOL = 2**-6
"""bfloat16 tolerance, vmap against serial under the bfloat16 policy: two units in the last place of a
bfloat16 logit of magnitude < 2 (2^-7 each): the two paths round their products at different points."""


class Split(nn.Module):
    """A model with reachable features, as FedGKT's split client models."""

    def __init__(self, norm: str = "group") -> None:
        super().__init__()
        norm_layer: nn.Module = nn.BatchNorm2d(4) if norm == "batch" else nn.GroupNorm(2, 4)
        self.extractor = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), norm_layer, nn.ReLU(), nn.Dropout(0.5))
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(4, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.extractor(x))


def _group_model() -> nn.Module:
    return Split("group")


def _bn_model() -> nn.Module:
    return Split("batch")


def _bn_without_running_stats() -> nn.Module:
    model = Split("batch")
    model.extractor[1] = nn.BatchNorm2d(4, track_running_stats=False)
    return model


def features(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The split model's features (a custom output function)."""
    return module.extractor(x)


def features_and_logits(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and the logits computed from them (two outputs)."""
    f = module.extractor(x)
    return f, module.classifier(f)


def _states(model_fn: type[nn.Module] | object, count: int, *, warm_bn: bool = False) -> list[StateDict]:
    """``count`` differently seeded states; ``warm_bn`` runs train-mode batches through each so BatchNorm's
    running statistics are far from their initial zeros and ones (eval mode then depends on them)."""
    states = []
    for i in range(count):
        torch.manual_seed(100 + i)
        model = model_fn()  # type: ignore[operator]
        if warm_bn:
            model.train()
            with torch.no_grad():
                for _ in range(3):
                    model(torch.randn(16, *SHAPE) * (1 + i) + i)
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return states


def _inputs(counts: Sequence[int], seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn((n, *SHAPE), generator=gen) for n in counts]


def _cohort(model_fn: object, key: str, *, warm_bn: bool = False, shared: bool = False) -> InferCohort:
    states = _states(model_fn, len(RAGGED), warm_bn=warm_bn)
    inputs: torch.Tensor | list[torch.Tensor] = _inputs([11])[0] if shared else _inputs(RAGGED)
    return InferCohort(model_fn=model_fn, arch_key=key, states=states, inputs=inputs)  # type: ignore[arg-type]


def assert_close(a: InferResult, b: InferResult, atol: float = ATOL) -> None:
    """Same nodes, same outputs per node (shapes, dtypes, values within the float tolerance)."""
    assert len(a) == len(b)
    for node_a, node_b in zip(a.outputs, b.outputs):
        assert len(node_a) == len(node_b)
        for x, y in zip(node_a, node_b):
            assert x.shape == y.shape and x.dtype == y.dtype
            torch.testing.assert_close(x, y, atol=atol, rtol=RTOL)


def assert_equal(a: InferResult, b: InferResult) -> None:
    """Bit for bit the same outputs."""
    assert len(a) == len(b)
    for node_a, node_b in zip(a.outputs, b.outputs):
        for x, y in zip(node_a, node_b):
            assert x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y)


@pytest.mark.parametrize("chunk", [None, 1, 4])
@pytest.mark.parametrize("model_fn", [_group_model, _bn_model], ids=["groupnorm", "batchnorm"])
def test_vmap_matches_serial_on_ragged_inputs(model_fn: object, chunk: int | None) -> None:
    cohort = _cohort(model_fn, f"split-{chunk}", warm_bn=True)
    spec = InferSpec(batch_size=BATCH)
    ref = SerialExecutor(CPU).infer(cohort, spec)
    got = VmapExecutor(CPU, chunk_size=chunk).infer(cohort, spec)
    assert [int(o[0].shape[0]) for o in ref.outputs] == RAGGED
    assert ref.outputs[1][0].shape == (0, CLASSES)
    assert_close(ref, got)


def test_serial_is_teacher_logits_and_the_evaluation_loop_bit_for_bit() -> None:
    cohort = _cohort(_bn_model, "bn", warm_bn=True)
    module = _bn_model()
    logits_out = SerialExecutor(CPU).infer(cohort, InferSpec(batch_size=BATCH)).output()
    labels = torch.arange(11) % CLASSES
    shared = InferCohort(_bn_model, "bn", cohort.states, _inputs([11])[0])
    preds = SerialExecutor(CPU).infer(shared, InferSpec(batch_size=BATCH, output=predictions)).output()
    for i, state in enumerate(cohort.states):
        module.load_state_dict(state)
        x = cohort.input_of(i)
        if len(x):
            assert torch.equal(logits_out[i], teacher_logits(module, x, batch_size=BATCH))
        correct, _ = prediction_totals(module, shared.input_of(i), labels, BATCH)
        assert int((preds[i] == labels).sum()) == correct


def test_batchnorm_eval_uses_running_statistics_under_vmap() -> None:
    """Eval mode normalizes with each node's own running statistics: the vmapped outputs equal per-model
    eval forwards, and differ from a train-mode (batch statistics) forward."""
    cohort = _cohort(_bn_model, "bn-eval", warm_bn=True)
    got = VmapExecutor(CPU).infer(cohort, InferSpec(batch_size=BATCH)).output()
    module = _bn_model()
    for i, state in enumerate(cohort.states):
        module.load_state_dict(state)
        x = cohort.input_of(i)
        if len(x) < 2:
            continue
        with torch.no_grad():
            torch.testing.assert_close(got[i], module.eval()(x), atol=ATOL, rtol=RTOL)
            assert not torch.allclose(got[i], module.train()(x), atol=1e-3)
    assert all(not m.training for m in VmapExecutor(CPU).inference.template(cohort).modules())


@pytest.mark.parametrize("output", [features, features_and_logits, predictions])
def test_custom_output_functions_match(output: object) -> None:
    cohort = _cohort(_group_model, "split", warm_bn=False)
    spec = InferSpec(batch_size=BATCH, output=output)  # type: ignore[arg-type]
    ref = SerialExecutor(CPU).infer(cohort, spec)
    got = VmapExecutor(CPU, chunk_size=2).infer(cohort, spec)
    if output is predictions:
        assert_equal(ref, got)
        assert ref.outputs[0][0].dtype == torch.int64
    else:
        assert_close(ref, got)
    if output is features_and_logits:
        assert len(ref.outputs[2]) == 2
        assert ref.outputs[2][0].shape == (13, 4, 8, 8) and ref.outputs[1][0].shape == (0, 4, 8, 8)
        plain = SerialExecutor(CPU).infer(cohort, InferSpec(batch_size=BATCH)).output()
        assert all(torch.equal(a, b) for a, b in zip(ref.output(1), plain))


def test_shared_inputs_equal_per_node_copies() -> None:
    shared = _cohort(_group_model, "split", shared=True)
    copies = InferCohort(_group_model, "split", shared.states, [shared.inputs] * len(shared))  # type: ignore[list-item]
    spec = InferSpec(batch_size=BATCH)
    serial = SerialExecutor(CPU).infer(shared, spec)
    assert_equal(serial, SerialExecutor(CPU).infer(copies, spec))
    assert_close(serial, VmapExecutor(CPU, chunk_size=4).infer(shared, spec))
    assert_close(serial, VmapExecutor(CPU).infer(copies, spec))


def test_precision_policy_bfloat16() -> None:
    """Serial under bfloat16 is teacher_logits under bfloat16 bit for bit (autocast, float32 outputs); vmap
    (functionalized, so autocast reaches it) agrees within bfloat16 rounding and differs from float32."""
    cohort = _cohort(_group_model, "split")
    spec = InferSpec(batch_size=BATCH)
    full = SerialExecutor(CPU).infer(cohort, spec)
    module = _group_model()
    with precision("bfloat16"):
        ref = SerialExecutor(CPU).infer(cohort, spec)
        got = VmapExecutor(CPU).infer(cohort, spec)
        for i, state in enumerate(cohort.states):
            module.load_state_dict(state)
            if len(cohort.input_of(i)):
                assert torch.equal(
                    ref.output()[i], teacher_logits(module, cohort.input_of(i), batch_size=BATCH)
                )
    assert all(t.dtype == torch.float32 for t in got.output())
    assert_close(ref, got, atol=BF16_ATOL)
    assert any(not torch.equal(a, b) for a, b in zip(ref.output(), full.output()))


def test_batchnorm_under_bfloat16_falls_back_to_serial() -> None:
    cohort = _cohort(_bn_model, "bn-bf16", warm_bn=True)
    vmap = VmapExecutor(CPU)
    with precision("bfloat16"):
        assert "BatchNorm" in (vmap.inference.unsupported_reason(cohort) or "")
        assert_equal(
            SerialExecutor(CPU).infer(cohort, InferSpec(BATCH)), vmap.infer(cohort, InferSpec(BATCH))
        )
    assert vmap.inference.unsupported_reason(cohort) is None


def test_batch_statistics_in_eval_mode_fall_back_to_serial() -> None:
    """A BatchNorm without running statistics normalizes with the batch's even in eval mode: padding would
    change it, so vmap infers such a model serially (the same outputs)."""
    cohort = _cohort(_bn_without_running_stats, "bn-batch-stats")
    assert "running statistics" in (infer_unsupported_reason(_bn_without_running_stats()) or "")
    spec = InferSpec(batch_size=BATCH)
    assert_equal(SerialExecutor(CPU).infer(cohort, spec), VmapExecutor(CPU).infer(cohort, spec))


def test_inference_leaves_the_torch_rng_alone() -> None:
    cohort = _cohort(_group_model, "split")
    torch.manual_seed(7)
    before = torch.random.get_rng_state()
    for executor in (SerialExecutor(CPU), VmapExecutor(CPU)):
        executor.infer(cohort, InferSpec(batch_size=BATCH))
    assert torch.equal(torch.random.get_rng_state(), before)


def test_empty_cohort_and_nodes_without_samples() -> None:
    empty = InferCohort(_group_model, "split", [], [])
    assert len(SerialExecutor(CPU).infer(empty, InferSpec())) == 0
    assert len(VmapExecutor(CPU).infer(empty, InferSpec())) == 0
    states = _states(_group_model, 2)
    none = InferCohort(_group_model, "split", states, _inputs([0, 0]))
    for executor in (SerialExecutor(CPU), VmapExecutor(CPU)):
        out = executor.infer(none, InferSpec(batch_size=BATCH, output=features_and_logits))
        assert [tuple(t.shape) for t in out.outputs[0]] == [(0, 4, 8, 8), (0, CLASSES)]


def test_an_output_without_the_samples_on_dim_0_is_refused() -> None:
    cohort = _cohort(_group_model, "split")
    spec = InferSpec(batch_size=BATCH, output=lambda module, x: module(x).sum())
    for executor in (SerialExecutor(CPU), VmapExecutor(CPU)):
        with pytest.raises(ValueError, match="samples on dim 0"):
            executor.infer(cohort, spec)


def test_cohort_validates_its_inputs() -> None:
    with pytest.raises(ValueError, match="one tensor per node"):
        InferCohort(_group_model, "split", _states(_group_model, 2), _inputs([3]))
    assert list(InferCohort(_group_model, "split", [], []).sizes()) == []


def test_auto_infers_serially_on_cpu_and_records_why() -> None:
    count = MIN_INFER_NODES
    states = _states(_group_model, count)
    cohort = InferCohort(_group_model, "split", states, _inputs([3] * count))
    auto = AutoExecutor(CPU)
    spec = InferSpec(batch_size=BATCH, output=logits)
    assert_equal(auto.infer(cohort, spec), SerialExecutor(CPU).infer(cohort, spec))
    (choice,) = [v for k, v in auto.choices.items() if k.startswith("infer|")]
    assert choice["executor"] == "serial" and "CPU" in choice["reason"]
    small = InferCohort(_group_model, "split", states[:2], _inputs([3, 3]))
    assert auto.choose_infer(small) == "serial"
    assert np.array_equal(cohort.sizes(), np.full(count, 3))


# ------------------------------------------------------------------------------------------------ Ray
@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local 2-CPU Ray cluster for the Ray tests (executors created inside join it)."""
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this module
    from tiny import local_ray

    with local_ray(2):
        yield


@pytest.mark.parametrize("inner", ["serial", "vmap"])
def test_ray_matches_in_cohort_order(ray_cluster: None, inner: str) -> None:
    """Ray's outputs in cohort order for every chunking, shared or own inputs, float32 and bfloat16: bit for
    bit the serial executor's with serial workers (one thread each, as here), within the float tolerance of
    it with vmap workers."""
    from edgelearn.engine.ray_executor import RayExecutor

    with RayExecutor(CPU, num_workers=2, inner=inner) as executor:
        for chunk in (None, 2):
            executor.chunk_size = chunk
            for shared in (False, True):
                cohort = _cohort(_bn_model, "bn-ray", warm_bn=True, shared=shared)
                spec = InferSpec(batch_size=BATCH, output=features_and_logits)
                ref, got = SerialExecutor(CPU).infer(cohort, spec), executor.infer(cohort, spec)
                assert_equal(ref, got) if inner == "serial" else assert_close(ref, got)
        assert len(executor.infer(InferCohort(_bn_model, "bn-ray", [], []), InferSpec())) == 0
        cohort = _cohort(_group_model, "split-ray")
        with precision("bfloat16"):
            ref, got = (
                SerialExecutor(CPU).infer(cohort, InferSpec(BATCH)),
                executor.infer(cohort, InferSpec(BATCH)),
            )
        assert_equal(ref, got) if inner == "serial" else assert_close(ref, got, atol=BF16_ATOL)
