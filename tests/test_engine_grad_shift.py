"""``Cohort.grad_shift``: a per-client vector added to every local step's gradient (SCAFFOLD's correction).

A hand-computed two-step run (momentum, proximal term) on each executor, executor equivalence on a ragged
cohort, and the checks that name a bad shift.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import pytest
import torch
from tiny import local_ray
from torch import nn

from edgelearn.engine import ClientData, Cohort, CohortResult, LocalSpec, SerialExecutor
from edgelearn.engine.vmap import VmapExecutor
from edgelearn.models import build_model

CPU = torch.device("cpu")
SERIAL_ATOL = 1e-6
"""Ray's workers run the serial executor: the same float32 operations in the same order, summed in float64 per
chunk; test_engine_ray.py's bound."""
VMAP_ATOL = 1e-5
"""vmap reorders float32 reductions (batched matmuls over the cohort): test_engine_vmap.py's bound."""


def _linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(2, 1)


def linear_loss(
    apply: Callable[[torch.Tensor], torch.Tensor], batch: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """The model's output itself: its gradient is the input (weight) and 1 (bias), whatever the weights."""
    return apply(batch["x"]).sum(1)


START = {"weight": torch.tensor([[0.3, -0.2]]), "bias": torch.tensor([0.1])}
HAND_SPEC = LocalSpec(lr=0.1, batch_size=1, epochs=1, momentum=0.9, prox_mu=1.0, loss=linear_loss)
HAND_SHIFTS: list[Mapping[str, torch.Tensor]] = [
    {"weight": torch.tensor([[0.5, -1.0]]), "bias": torch.tensor([2.0])},
    {"bias": torch.tensor([-1.0])},
    {},
]
# Every client holds the sample x = (1, 2) twice (batch 1, one epoch: two steps, whatever the order), so the
# loss gradient is g = (1, 2) for the weight and 1 for the bias at every step. With lr 0.1, momentum 0.9 and
# mu 1 (the proximal gradient mu (w - w0) is 0 at step 1):
#   client 0, shift s = (0.5, -1 | 2):
#     step 1: d = g + s = (1.5, 1.0 | 3);         buf = d;             w1 = (0.15, -0.3 | -0.2)
#     step 2: d = g + (w1 - w0) + s = (1.35, 0.9 | 2.7); buf = 0.9 buf + d = (2.7, 1.8 | 5.4)
#             w2 = w1 - 0.1 buf = (-0.12, -0.48 | -0.74)
#   client 1, shift only on the bias (-1): weight as client 2; bias d = 1 - 1 = 0 at both steps: stays 0.1
#   client 2, no shift:
#     step 1: d = (1, 2 | 1); w1 = (0.2, -0.4 | 0.0)
#     step 2: d = g + (w1 - w0) = (0.9, 1.8 | 0.9); buf = (1.8, 3.6 | 1.8); w2 = (0.02, -0.76 | -0.18)
HAND_RESULT = [
    {"weight": [[-0.12, -0.48]], "bias": [-0.74]},
    {"weight": [[0.02, -0.76]], "bias": [0.1]},
    {"weight": [[0.02, -0.76]], "bias": [-0.18]},
]


def _hand_cohort() -> Cohort:
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    data = [ClientData(x, torch.zeros(2, dtype=torch.long)) for _ in HAND_SHIFTS]
    return Cohort(
        model_fn=_linear,
        arch_key="linear2",
        data=data,
        starts=[START],
        start_of=np.zeros(3, dtype=np.int64),
        group_of=np.zeros(3, dtype=np.int64),
        num_groups=1,
        weights=np.ones(3),
        seeds=np.arange(3),
        keep_states=True,
        grad_shift=HAND_SHIFTS,
    )


def _assert_hand(result: CohortResult) -> None:
    assert result.client_states is not None
    for got, want in zip(result.client_states, HAND_RESULT):
        for k, v in want.items():
            torch.testing.assert_close(got[k], torch.tensor(v), atol=1e-6, rtol=0)
    assert result.steps.tolist() == [2, 2, 2]


def _mlp() -> nn.Module:
    return build_model("mlp", (6,), 3, hidden=[8])


def _ragged(keep: bool = True) -> tuple[Cohort, LocalSpec]:
    """Ragged clients (one with no data) from two starts into two groups, each with a random shift of some
    parameters, under momentum, weight decay and the proximal term."""
    sizes = [1, 9, 0, 17, 4, 30, 12]
    g = torch.Generator().manual_seed(11)
    data = [ClientData(torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)) for n in sizes]
    torch.manual_seed(2)
    starts = [{k: v.detach().clone() for k, v in _mlp().state_dict().items()} for _ in range(2)]
    names = list(starts[0])
    shifts = [
        {k: torch.randn(starts[0][k].shape, generator=g) * 0.3 for k in names[: 1 + i % len(names)]}
        for i in range(len(sizes))
    ]
    shifts[4] = {}
    count = len(sizes)
    cohort = Cohort(
        model_fn=_mlp,
        arch_key="mlp6-8-3",
        data=data,
        starts=starts,
        start_of=np.arange(count) % 2,
        group_of=(np.arange(count) // 2) % 2,
        num_groups=2,
        weights=np.asarray(sizes, dtype=np.float64) + 1.0,
        seeds=np.arange(count) + 40,
        keep_states=keep,
        grad_shift=shifts,
    )
    return cohort, LocalSpec(lr=0.05, batch_size=4, epochs=2, momentum=0.9, weight_decay=1e-3, prox_mu=0.1)


def _assert_same(got: CohortResult, want: CohortResult, atol: float) -> None:
    np.testing.assert_array_equal(got.steps, want.steps)
    np.testing.assert_array_equal(got.samples, want.samples)
    np.testing.assert_allclose(got.train_loss, want.train_loss, atol=atol, equal_nan=True)
    for a, b in zip(got.group_states, want.group_states):
        assert a is not None and b is not None
        for k in b:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0)
    assert got.client_states is not None and want.client_states is not None
    for a, b in zip(got.client_states, want.client_states):
        for k in b:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0)


# ------------------------------------------------------------------------------------ serial and vmap


def test_serial_step_equals_the_hand_formula() -> None:
    _assert_hand(SerialExecutor(CPU).train(_hand_cohort(), HAND_SPEC))


def test_vmap_step_equals_the_hand_formula() -> None:
    _assert_hand(VmapExecutor(CPU).train(_hand_cohort(), HAND_SPEC))


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_vmap_matches_serial_with_shifts(chunk_size: int | None) -> None:
    cohort, spec = _ragged()
    want = SerialExecutor(CPU).train(cohort, spec)
    _assert_same(VmapExecutor(CPU, chunk_size=chunk_size).train(cohort, spec), want, VMAP_ATOL)


def test_shifts_change_training_and_empty_shifts_change_nothing() -> None:
    cohort, spec = _ragged()
    shifted = SerialExecutor(CPU).train(cohort, spec)
    cohort.grad_shift = None
    plain = SerialExecutor(CPU).train(cohort, spec)
    cohort.grad_shift = [{} for _ in range(len(cohort))]
    empty = SerialExecutor(CPU).train(cohort, spec)
    for a, b in zip(plain.group_states, empty.group_states):
        assert a is not None and b is not None and all(torch.equal(a[k], b[k]) for k in a)
    a, b = shifted.group_states[0], plain.group_states[0]
    assert (
        a is not None
        and b is not None
        and not torch.allclose(a["net.1.weight"], b["net.1.weight"], atol=1e-3)
    )


def test_bad_shifts_name_the_client_and_the_parameter() -> None:
    cohort, spec = _ragged()
    with pytest.raises(ValueError, match="one mapping per client"):
        Cohort(**{**cohort.__dict__, "grad_shift": cohort.grad_shift[:2]})  # type: ignore[index]
    cohort.grad_shift = [{} for _ in range(len(cohort))]
    cohort.grad_shift[3] = {"net.1.wieght": torch.zeros(8, 6)}
    for executor in (SerialExecutor(CPU), VmapExecutor(CPU)):
        with pytest.raises(ValueError, match=r"grad_shift\[3\] names 'net.1.wieght'.*net.1.weight"):
            executor.train(cohort, spec)
    cohort.grad_shift[3] = {"net.1.weight": torch.zeros(6, 8)}
    for executor in (SerialExecutor(CPU), VmapExecutor(CPU)):
        with pytest.raises(ValueError, match=r"grad_shift\[3\]\['net.1.weight'\] has shape \(6, 8\)"):
            executor.train(cohort, spec)


# ------------------------------------------------------------------------------------ Ray

CLUSTER_CPUS = 2


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[object]:
    """A local 2-CPU Ray cluster for this module; this module's functions are shipped to workers by value."""
    with local_ray(CLUSTER_CPUS) as ray:
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        yield ray


@pytest.mark.parametrize("inner", ["serial", "vmap"])
def test_ray_step_equals_the_hand_formula_and_matches_serial(ray_cluster: object, inner: str) -> None:
    from edgelearn.engine.ray_executor import RayExecutor

    cohort, spec = _ragged()
    with RayExecutor(CPU, num_workers=CLUSTER_CPUS, chunk_size=3, inner=inner) as ex:
        _assert_hand(ex.train(_hand_cohort(), HAND_SPEC))
        got = ex.train(cohort, spec)
    want = SerialExecutor(CPU).train(cohort, spec)
    _assert_same(got, want, SERIAL_ATOL if inner == "serial" else VMAP_ATOL)
