"""Ray executor: same results as the serial executor, data cached across rounds, survives a killed worker."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

ray = pytest.importorskip("ray")
# Workers cannot import this test module, so ship its functions (losses, model factory) by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

from tiny import local_ray  # noqa: E402

from edgelearn.engine import ClientData, Cohort, CohortResult, LocalSpec, SerialExecutor  # noqa: E402
from edgelearn.engine.executor import make_executor  # noqa: E402
from edgelearn.engine.ray_executor import DEFAULT_CACHE_BYTES, RayExecutor, chunk_bounds  # noqa: E402
from edgelearn.engine.ray_worker import GroupSums  # noqa: E402
from edgelearn.errors import ConfigError, EdgelearnError  # noqa: E402
from edgelearn.run_config import build_config  # noqa: E402
from edgelearn.runner import run  # noqa: E402

CPU = torch.device("cpu")
CLUSTER_CPUS = 2
ATOL = 1e-6
VMAP_ATOL = 1e-5  # lockstep training reorders float32 reductions


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """One local 2-CPU cluster for the module (executors then join it instead of starting their own)."""
    with local_ray(CLUSTER_CPUS):
        yield


@pytest.fixture(scope="module")
def executor(cluster: None) -> Iterator[RayExecutor]:
    """One executor (two workers) shared by the module: worker processes start once, not per test."""
    with RayExecutor(CPU, num_workers=CLUSTER_CPUS) as ex:
        yield ex


@pytest.fixture
def fresh(executor: RayExecutor) -> Iterator[RayExecutor]:
    """The shared executor with its default chunking and cache bound restored after the test."""
    yield executor
    executor.chunk_size = None
    executor.cache_bytes = DEFAULT_CACHE_BYTES


def _model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def scaled_loss(
    apply: Callable[[torch.Tensor], torch.Tensor], batch: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Per-sample cross-entropy times a per-sample scale carried in the clients' extra tensors."""
    return F.cross_entropy(apply(batch["x"]), batch["y"], reduction="none") * batch["scale"]


@dataclass(frozen=True)
class HoldingLoss:
    """Cross-entropy that, while ``hold`` exists, announces its pid in ``dir`` and waits (fault injection)."""

    dir: str

    def __call__(
        self, apply: Callable[[torch.Tensor], torch.Tensor], batch: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        hold = os.path.join(self.dir, "hold")
        if os.path.exists(hold):
            Path(self.dir, f"started-{os.getpid()}").touch()
            while os.path.exists(hold):
                time.sleep(0.01)
        return F.cross_entropy(apply(batch["x"]), batch["y"], reduction="none")


def train_while_held(
    executor: RayExecutor, cohort: Cohort, spec: LocalSpec, hold_dir: Path, workers: int, wait_s: float
) -> tuple[threading.Thread, dict[str, CohortResult | BaseException], list[int]]:
    """Start ``executor.train`` in a thread while ``hold_dir/hold`` exists (``spec.loss`` a
    :class:`HoldingLoss` on ``hold_dir``) and wait up to ``wait_s`` until ``workers`` workers announce they
    are inside a chunk: the thread, the box its result or exception lands in, the waiting workers' pids."""
    (hold_dir / "hold").touch()
    out: dict[str, CohortResult | BaseException] = {}

    def call() -> None:
        try:
            out["result"] = executor.train(cohort, spec)
        except BaseException as exc:  # surfaced by the callers' assertions
            out["result"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + wait_s
    while len(list(hold_dir.glob("started-*"))) < workers and time.monotonic() < deadline:
        time.sleep(0.02)
    waiting = sorted(int(p.name.split("-")[1]) for p in hold_dir.glob("started-*"))
    return thread, out, waiting


def _ragged_cohort(sizes: list[int], num_groups: int = 3, keep: bool = True) -> Cohort:
    """Clients of the given sizes, one start per group, a per-sample ``scale`` extra tensor."""
    g = torch.Generator().manual_seed(7)
    data = [
        ClientData(
            torch.randn(n, 2, 3, generator=g),
            torch.randint(0, 3, (n,), generator=g),
            {"scale": torch.rand(n, generator=g) + 0.5},
        )
        for n in sizes
    ]
    torch.manual_seed(3)
    starts = [_model().state_dict() for _ in range(num_groups)]
    group_of = np.arange(len(sizes)) % num_groups
    return Cohort(
        model_fn=_model,
        arch_key="mlp6",
        data=data,
        starts=starts,
        start_of=group_of.copy(),
        group_of=group_of,
        num_groups=num_groups,
        weights=np.array(sizes, dtype=np.float64),
        seeds=np.arange(100, 100 + len(sizes)),
        batch_sizes=np.array([4 + i % 5 for i in range(len(sizes))]),
        keep_states=keep,
    )


SIZES = [1, 40, 3, 17, 9, 2, 33, 5, 12, 26, 8, 1, 21, 14]
SPEC = LocalSpec(lr=0.1, batch_size=8, epochs=2, momentum=0.9, weight_decay=1e-3, loss=scaled_loss)


def _assert_same(got: CohortResult, want: CohortResult, atol: float = ATOL) -> None:
    assert len(got.group_states) == len(want.group_states)
    for g, w in zip(got.group_states, want.group_states):
        assert (g is None) == (w is None)
        if w is not None:
            assert g is not None and g.keys() == w.keys()
            for k in w:
                assert g[k].dtype == w[k].dtype and g[k].device == w[k].device
                torch.testing.assert_close(g[k], w[k], atol=atol, rtol=0)
    assert (got.client_states is None) == (want.client_states is None)
    if want.client_states is not None:
        assert got.client_states is not None and len(got.client_states) == len(want.client_states)
        for g, w in zip(got.client_states, want.client_states):
            for k in w:
                torch.testing.assert_close(g[k], w[k], atol=atol, rtol=0)
    np.testing.assert_array_equal(got.samples, want.samples)
    np.testing.assert_array_equal(got.steps, want.steps)
    np.testing.assert_allclose(got.train_loss, want.train_loss, atol=atol, rtol=0)


# ------------------------------------------------------------------------------------ pure helpers


def test_group_sums_by_hand_and_merge_matches_one_pass() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(5)}
    c = {"w": torch.tensor([-1.0, 0.0]), "n": torch.tensor(4)}
    one = GroupSums(2)
    for s, w, grp in ((a, 1.0, 0), (b, 3.0, 0), (c, 2.0, 1)):
        one.add(grp, s, w)
    left, right = GroupSums(2), GroupSums(2)
    left.add(0, a, 1.0)
    right.add(0, b, 3.0)
    right.add(1, c, 2.0)
    left.merge(right)
    for sums in (one, left):
        out = sums.results(a, CPU)
        assert out[0] is not None and out[1] is not None
        assert torch.equal(out[0]["w"], torch.tensor([2.5, 5.0]))  # (1*1 + 3*3)/4, (1*2 + 3*6)/4
        assert int(out[0]["n"]) == 5 and out[0]["n"].dtype == torch.int64  # counters keep the maximum
        assert torch.equal(out[1]["w"], torch.tensor([-1.0, 0.0]))
        assert out[0]["w"].dtype == torch.float32
    empty = GroupSums(2)
    empty.add(1, a, 0.0)
    assert empty.results(a, CPU) == [None, None]  # no clients, and zero total weight
    with pytest.raises(ValueError):
        GroupSums(1).add(0, a, -1.0)


@given(costs=st.lists(st.floats(0.5, 100.0), min_size=1, max_size=60), m=st.integers(1, 12))
@settings(max_examples=50, deadline=None)
def test_chunk_bounds_are_contiguous_nonempty_and_balanced(costs: list[float], m: int) -> None:
    bounds = chunk_bounds(np.array(costs), m)
    assert 1 <= len(bounds) <= min(m, len(costs))
    assert bounds[0][0] == 0 and bounds[-1][1] == len(costs)
    for (lo, hi), (nxt, _) in zip(bounds, bounds[1:] + [(len(costs), None)]):
        assert lo < hi == nxt
        assert sum(costs[lo:hi]) < sum(costs) / m + max(costs) + 1e-9


def test_chunk_bounds_by_hand() -> None:
    assert chunk_bounds(np.array([1.0, 1.0, 1.0, 1.0]), 2) == [(0, 2), (2, 4)]
    assert chunk_bounds(np.array([10.0, 1.0, 1.0, 1.0]), 2) == [(0, 1), (1, 4)]
    assert chunk_bounds(np.array([]), 3) == []


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="ray_inner"):
        RayExecutor(CPU, inner="threads")
    with pytest.raises(ConfigError, match="ray_workers"):
        RayExecutor(CPU, num_workers=0)
    with pytest.raises(ConfigError, match="ray_chunk"):
        RayExecutor(CPU, chunk_size=0)
    with pytest.raises(ConfigError, match="ray_resources"):
        RayExecutor(CPU, resources={"trainer": 0.0})


def test_ray_resources_from_the_config_reach_the_executor() -> None:
    engine = build_config({}, ["engine.ray_resources.trainer=2", "engine.ray_address=auto"]).engine
    ex = make_executor("ray", CPU, engine)
    assert isinstance(ex, RayExecutor) and ex.resources == {"trainer": 2.0} and ex.address == "auto"
    default = make_executor("ray", CPU, build_config({}).engine)
    assert isinstance(default, RayExecutor) and default.resources == {}  # any node
    for bad in ("ray_resources.trainer=0", "ray_resources.trainer=true", "ray_resource=1"):  # unknown key too
        with pytest.raises(ConfigError, match="ray_resource"):
            build_config({}, [f"engine.{bad}"])


# ------------------------------------------------------------------------------------ on the cluster


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_matches_serial_on_ragged_cohort(fresh: RayExecutor, chunk_size: int | None) -> None:
    cohort = _ragged_cohort(SIZES)
    want = SerialExecutor(CPU).train(cohort, SPEC)
    fresh.chunk_size = chunk_size
    got = fresh.train(cohort, SPEC)
    _assert_same(got, want)
    assert got.samples.tolist() == [2 * n for n in SIZES]  # two epochs over every sample
    again = fresh.train(cohort, SPEC)  # chunks finish in another order: folded in chunk order, bit-equal
    for a, b in zip(again.group_states, got.group_states):
        assert a is not None and b is not None and all(torch.equal(a[k], b[k]) for k in a)


def test_steps_spec_without_kept_states_and_an_empty_group(fresh: RayExecutor) -> None:
    cohort = _ragged_cohort(SIZES[:6], num_groups=4, keep=False)
    cohort.group_of[:] = np.minimum(cohort.group_of, 2)  # group 3 gets nobody
    spec = LocalSpec(lr=0.05, batch_size=8, epochs=None, steps=3, loss=scaled_loss, prox_mu=0.1)
    want = SerialExecutor(CPU).train(cohort, spec)
    fresh.chunk_size = 2
    got = fresh.train(cohort, spec)
    empty = fresh.train(_ragged_cohort([], num_groups=2), spec)
    _assert_same(got, want)
    assert got.group_states[3] is None and got.client_states is None
    assert got.steps.tolist() == [3] * 6
    assert empty.group_states == [None, None] and empty.client_states == [] and len(empty.samples) == 0


def test_client_data_is_cached_across_rounds_and_refreshed_when_edited(fresh: RayExecutor) -> None:
    cohort = _ragged_cohort(SIZES)
    puts = fresh.data_puts
    fresh.train(cohort, SPEC)
    fresh.train(cohort, SPEC)
    assert fresh.data_puts - puts == len(SIZES)  # the second round re-sent nothing
    cohort.data[4].x.mul_(2.0)  # in-place edit bumps the tensor's version: it must be re-sent
    got = fresh.train(cohort, SPEC)
    assert fresh.data_puts - puts == len(SIZES) + 1
    _assert_same(got, SerialExecutor(CPU).train(cohort, SPEC))


def test_cache_stays_within_its_byte_bound(fresh: RayExecutor) -> None:
    cohort = _ragged_cohort(SIZES, keep=False)
    one = cohort.data[1]  # 40 samples: x 40*6 float32, y 40 int64, scale 40 float32
    per_client = one.x.numel() * 4 + one.y.numel() * 8 + one.extra["scale"].numel() * 4
    assert per_client == 40 * (6 * 4 + 8 + 4)
    fresh.cache_bytes = per_client
    got = fresh.train(cohort, SPEC)
    assert 1 <= fresh.cached_clients < len(SIZES) and fresh.cached_bytes <= per_client
    _assert_same(got, SerialExecutor(CPU).train(cohort, SPEC))


def test_loss_the_workers_cannot_import_is_a_readable_error(
    fresh: RayExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    hidden = types.ModuleType("edgelearn_test_hidden_losses")  # exists only in this (driver) process
    exec("def loss(apply, batch):\n    return apply(batch['x']).sum(1)", hidden.__dict__)
    monkeypatch.setitem(sys.modules, hidden.__name__, hidden)
    spec = LocalSpec(lr=0.1, batch_size=8, loss=hidden.loss)
    with pytest.raises(EdgelearnError, match="importable on the workers"):
        fresh.train(_ragged_cohort(SIZES[:4]), spec)


def test_killed_worker_mid_call_does_not_change_results(fresh: RayExecutor, tmp_path: Path) -> None:
    cohort = _ragged_cohort(SIZES)
    spec = LocalSpec(lr=0.1, batch_size=8, epochs=1, momentum=0.9, loss=HoldingLoss(str(tmp_path)))
    want = SerialExecutor(CPU).train(cohort, spec)
    before = fresh.worker_pids()
    # generous wait: a loaded 2-core machine can take long to reach the chunk
    thread, out, waiting = train_while_held(fresh, cohort, spec, tmp_path, workers=2, wait_s=120)
    assert waiting == sorted(before)  # both workers are inside a chunk
    os.kill(before[0], signal.SIGKILL)
    time.sleep(0.2)
    (tmp_path / "hold").unlink()
    thread.join(timeout=60)
    after = fresh.worker_pids()
    result = out["result"]
    assert isinstance(result, CohortResult), result
    assert before[0] not in after and before[1] in after  # the killed actor was restarted
    _assert_same(result, want)


def test_runner_reproduces_the_serial_run(executor: RayExecutor, tmp_path: Path) -> None:
    base = ["topology.devices=10", "algorithm.rounds=2", "output.progress=false", "output.plots=false"]
    records = {}
    for name in ("serial", "ray"):
        summary = run(build_config({}, [f"executor={name}", *base]), tmp_path / name)
        assert summary["executor"] == name
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        records[name] = [{k: v for k, v in json.loads(x).items() if k != "wall_s"} for x in lines]
    assert len(records["ray"]) == 2
    # (the runner shuts its executor down at the end of a run, so the pool is not reused across runs)
    for got, want in zip(records["ray"], records["serial"]):
        assert got.keys() == want.keys()
        for k, v in want.items():
            assert got[k] == (pytest.approx(v, rel=1e-6, abs=1e-9) if isinstance(v, float) else v), k


def test_vmap_inside_the_workers_matches_serial(executor: RayExecutor) -> None:
    pytest.importorskip("edgelearn.engine.vmap")
    serial_pids = executor.worker_pids()
    cohort = _ragged_cohort(SIZES)
    with RayExecutor(CPU, num_workers=CLUSTER_CPUS, inner="vmap") as ex:
        got = ex.train(cohort, SPEC)
        assert not set(ex.worker_pids()) & set(serial_pids)  # the idle serial pool made room for a vmap one
    _assert_same(got, SerialExecutor(CPU).train(cohort, SPEC), atol=VMAP_ATOL)


def test_workers_train_under_the_drivers_precision(fresh: RayExecutor) -> None:
    from edgelearn.engine.precision import precision

    cohort = _ragged_cohort(SIZES[:6])
    fp32 = fresh.train(cohort, SPEC)
    with precision("bfloat16"):
        want = SerialExecutor(CPU).train(cohort, SPEC)
        got = fresh.train(cohort, SPEC)
    _assert_same(got, want)  # each task carries the policy to its worker
    assert any(not torch.equal(a[k], b[k]) for a, b in zip(got.group_states, fp32.group_states) for k in a)
    _assert_same(fresh.train(cohort, SPEC), fp32)  # and back: workers do not keep a stale policy
