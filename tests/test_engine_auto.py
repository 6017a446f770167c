"""The auto executor: its documented choice rule, the probe cache, and results equal to serial."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from edgelearn.engine import ClientData, Cohort, CohortResult, LocalSpec, SerialExecutor, make_executor
from edgelearn.engine import auto as auto_module
from edgelearn.engine.auto import MIN_PROBED_CLIENTS, PROBE_CLIENTS, PROBE_STEPS, AutoExecutor, size_bucket
from edgelearn.engine.vmap import VmapExecutor
from edgelearn.run_config import build_config

CPU = torch.device("cpu")
CLASSES = 3
SPEC = LocalSpec(lr=0.1, batch_size=4, epochs=1, momentum=0.9, weight_decay=1e-3)


def _linear() -> nn.Module:
    return nn.Sequential(nn.Linear(4, CLASSES))


def _dropout() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, CLASSES))


def _cohort(sizes: list[int], model_fn: Callable[[], nn.Module] = _linear, key: str = "lin") -> Cohort:
    torch.manual_seed(0)
    start = {k: v.detach().clone() for k, v in model_fn().state_dict().items()}
    g = torch.Generator().manual_seed(1)
    data = [
        ClientData(torch.randn(n, 4, generator=g), torch.randint(0, CLASSES, (n,), generator=g))
        for n in sizes
    ]
    n = len(sizes)
    return Cohort(
        model_fn=model_fn,
        arch_key=key,
        data=data,
        starts=[start],
        start_of=np.zeros(n, dtype=np.int64),
        group_of=np.arange(n) % 2,
        num_groups=2,
        weights=np.asarray(sizes, dtype=np.float64),
        seeds=np.arange(n, dtype=np.int64),
        keep_states=True,
    )


def _close(got: CohortResult, want: CohortResult, atol: float) -> None:
    np.testing.assert_array_equal(got.samples, want.samples)
    np.testing.assert_array_equal(got.steps, want.steps)
    np.testing.assert_allclose(got.train_loss, want.train_loss, atol=atol)
    for g, w in zip(got.group_states + got.client_states, want.group_states + want.client_states):
        for k in w:
            torch.testing.assert_close(g[k], w[k], atol=atol, rtol=0)


@pytest.mark.parametrize(("n", "bucket"), [(1, 1), (2, 2), (3, 4), (100, 128), (128, 128), (129, 256)])
def test_size_bucket_is_next_power_of_two(n: int, bucket: int) -> None:
    assert size_bucket(n) == bucket


def test_probe_picks_measures_caches_and_matches_serial() -> None:
    cohort = _cohort([3 + (7 * i) % 18 for i in range(20)])
    executor = AutoExecutor(CPU, mode="probe")
    got = executor.train(cohort, SPEC)
    _close(got, SerialExecutor(CPU).train(cohort, SPEC), atol=1e-5)
    key = "lin|n<=32|cpu"
    assert list(executor.choices) == [key]
    choice = executor.choices[key]
    assert choice["executor"] in ("serial", "vmap")
    assert choice["serial_s"] > 0 and choice["vmap_s"] > 0
    assert choice["probe_clients"] == 20 and choice["probe_steps"] == PROBE_STEPS
    # the delegate's own result is reproduced exactly
    delegate = executor.vmap if choice["executor"] == "vmap" else executor.serial
    _close(got, delegate.train(cohort, SPEC), atol=0.0)
    # a cohort in the same size bucket reuses the choice (no new probe, same timings)
    executor.train(_cohort([4] * 24), SPEC)
    assert list(executor.choices) == [key] and executor.choices[key] is choice


@pytest.mark.parametrize(
    ("serial_s", "vmap_s", "pick"),
    [(1.0, 0.5, "vmap"), (1.0, 0.95, "serial"), (1.0, 1.0, "serial"), (0.2, 0.9, "serial")],
)
def test_rule_needs_a_clear_vmap_speedup(serial_s: float, vmap_s: float, pick: str) -> None:
    executor = AutoExecutor(CPU, mode="probe")
    timings = {"serial": serial_s, "vmap": vmap_s}
    executor._time = lambda ex, cohort, spec: timings[ex.name]  # type: ignore[method-assign]
    cohort = _cohort([5] * 40)
    assert executor.choose(cohort, SPEC) == pick
    choice = executor.choices["lin|n<=64|cpu"]
    assert choice["serial_s"] == serial_s and choice["vmap_s"] == vmap_s
    assert choice["probe_clients"] == PROBE_CLIENTS  # a slice, not the whole cohort
    assert auto_module.VMAP_MIN_SPEEDUP > 1.0


def test_probe_slice_spreads_over_clients_with_data() -> None:
    executor = AutoExecutor(CPU, mode="probe")
    seen: list[list[int]] = []

    def fake_time(ex: SerialExecutor | VmapExecutor, cohort: Cohort, spec: LocalSpec) -> float:
        seen.append([len(d) for d in cohort.data])
        assert spec.steps == PROBE_STEPS and spec.epochs is None
        return 1.0

    executor._time = fake_time  # type: ignore[method-assign]
    sizes = [0, *range(1, 2 * PROBE_CLIENTS + 1)]
    executor.choose(_cohort(sizes), SPEC)
    probe_sizes = seen[0]
    assert len(probe_sizes) == PROBE_CLIENTS and 0 not in probe_sizes
    assert probe_sizes[0] == 1 and probe_sizes[-1] == 2 * PROBE_CLIENTS  # first and last clients with data


def test_forced_serial_without_probe() -> None:
    executor = AutoExecutor(CPU, mode="probe")
    executor._time = lambda *a: pytest.fail("no probe expected")  # type: ignore[method-assign]
    assert executor.choose(_cohort([7]), SPEC) == "serial"
    assert executor.choices["lin|n<=1|cpu"]["reason"] == "fewer than 16 clients with data"
    # 16 clients, one without data: still below the probing threshold
    few = _cohort([0] + [5] * (MIN_PROBED_CLIENTS - 1))
    assert executor.choose(few, SPEC) == "serial" and executor.choices["lin|n<=16|cpu"]["serial_s"] is None
    drop = _cohort([4, 6, 8] * 6, _dropout, key="drop")
    assert executor.choose(drop, SPEC) == "serial"
    reason = executor.choices["drop|n<=32|cpu"]["reason"]
    assert reason.startswith("vmap unsupported") and "Dropout" in reason
    torch.manual_seed(5)  # dropout draws from the global stream: the same masks in both runs
    got = executor.train(drop, SPEC)
    torch.manual_seed(5)
    _close(got, SerialExecutor(CPU).train(drop, SPEC), atol=0.0)


def test_probe_does_not_shift_the_global_torch_rng() -> None:
    cohort = _cohort([3, 5, 8] * 6)
    torch.manual_seed(123)
    expected = torch.rand(3)
    executor = AutoExecutor(CPU, mode="probe")
    torch.manual_seed(123)
    executor.train(cohort, SPEC)
    assert torch.equal(torch.rand(3), expected)


def test_make_executor_builds_auto() -> None:
    cfg = build_config({}, ["executor=auto", "engine.vmap_chunk=5"])
    executor = make_executor(cfg.executor, CPU, cfg.engine)
    assert isinstance(executor, AutoExecutor) and executor.name == "auto"
    assert executor.vmap.chunk_size == 5 and executor.choices == {}


def test_default_rule_mode_is_deterministic_and_size_based() -> None:
    executor = AutoExecutor(CPU)
    assert executor.mode == "rule"
    executor._time = lambda *a: pytest.fail("rule mode never probes")  # type: ignore[method-assign]
    small = _cohort([5] * 20)  # a linear model: far below the CPU parameter threshold
    assert executor.choose(small, SPEC) == "vmap"
    assert executor.choices["lin|n<=32|cpu"]["reason"] == "rule (deterministic)"
    assert executor.choose(_cohort([5] * 3), SPEC) == "serial"  # too few clients
    with pytest.raises(ValueError, match="rule' or 'probe"):
        AutoExecutor(CPU, mode="guess")


def test_rule_mode_sends_wide_models_to_serial_on_cpu() -> None:
    def wide() -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(4, auto_module.RULE_CPU_MAX_PARAMS // 4 + 1)
        )

    cohort = _cohort([5] * 20, wide, key="wide")
    assert AutoExecutor(CPU).choose(cohort, SPEC) == "serial"
