"""Vectorized seeds, cohort batch schedules, the vmap gather plan and tree transfers equal their loop forms.

Each reference below is the per-device loop the vectorized code replaced (issue 5's overhead profile), so
these tests pin that results did not change: same seeds, same batches, same ledger events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgelearn.algorithms.kit import comm
from edgelearn.engine import ClientData, batch_schedule
from edgelearn.engine.batches import batch_schedules
from edgelearn.engine.vmap import _plan
from edgelearn.seeding import Seeds, seed_words
from edgelearn.system import SystemModel
from edgelearn.system.channel import ChannelSpec
from edgelearn.system.topology import Topology

CPU = torch.device("cpu")
DEEP_SPEC = {
    "devices": 2,
    "children": [
        {"devices": 3, "children": [{"devices": 4}, {"devices": 2, "children": [{"devices": 3}]}]},
        {"devices": 5},
    ],
}
"""A four-level tree with devices at every level (cloud, edges, sub-edges, sub-sub-edge)."""


# ------------------------------------------------------------------------------------------------ references


def reference_schedule(
    num_samples: int, batch_size: int, *, seed: int, epochs: int | None = None, steps: int | None = None
) -> list[np.ndarray]:
    """The original per-client schedule: ``np.random.default_rng(seed)`` permutations, sliced."""
    if num_samples <= 0:
        return []
    rng = np.random.default_rng(seed)
    size = max(1, min(batch_size, num_samples))
    out: list[np.ndarray] = []
    if epochs is not None:
        for _ in range(epochs):
            perm = rng.permutation(num_samples)
            out.extend(perm[i : i + size] for i in range(0, num_samples, size))
        return out
    assert steps is not None
    per_pass = num_samples // size
    while len(out) < steps:
        perm = rng.permutation(num_samples)
        out.extend(perm[i * size : (i + 1) * size] for i in range(min(per_pass, steps - len(out))))
    return out


def reference_plan(sizes: list[int], schedules: list[list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The original gather plan: padded (step, client, slot) rows and batch lengths, client by client."""
    count = len(schedules)
    horizon = max(len(s) for s in schedules)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    lens = np.zeros((horizon, count), dtype=np.int64)
    for c, sched in enumerate(schedules):
        for t, idx in enumerate(sched):
            lens[t, c] = len(idx)
    width = int(lens.max()) if lens.size else 0
    index = np.broadcast_to(offsets[None, :, None], (horizon, count, width)).copy()
    for c, sched in enumerate(schedules):
        for t, idx in enumerate(sched):
            index[t, c, : len(idx)] += idx
    return index, lens


def reference_send_down(
    system: SystemModel, targets: Iterable[int], nbytes: int, *, source: int = 0, phase: str
) -> None:
    """The original broadcast: walk each target's path, transmit each (parent, child) link once by level."""
    hops: set[tuple[int, int]] = set()
    for node in targets:
        path = system.topology.path_to_root(int(node))
        if source not in path:
            raise ValueError(f"node {node} is not below node {source}")
        below = path[: path.index(source) + 1]
        hops.update(zip(below[1:], below[:-1]))
    depth = system.topology.depth
    for d in sorted({depth(p) for p, _ in hops}):
        level = [(p, c) for p, c in sorted(hops) if depth(p) == d]
        system.transmit(np.array([p for p, _ in level]), np.array([c for _, c in level]), nbytes, phase=phase)


def reference_send_up(
    system: SystemModel, sources: Iterable[int], nbytes: int, *, target: int = 0, phase: str
) -> None:
    """The original upload: count each link's relayed models along every path, transmit deepest first."""
    load: Counter[tuple[int, int]] = Counter()
    for node in sources:
        path = system.topology.path_to_root(int(node))
        if target not in path:
            raise ValueError(f"node {node} is not below node {target}")
        above = path[: path.index(target) + 1]
        for child, parent in zip(above[:-1], above[1:]):
            load[(child, parent)] += 1
    hops = sorted(load)
    depth = system.topology.depth
    for d in sorted({depth(c) for c, _ in hops}, reverse=True):
        level = [(c, p) for c, p in hops if depth(c) == d]
        system.transmit(
            np.array([c for c, _ in level]),
            np.array([p for _, p in level]),
            np.array([nbytes * load[h] for h in level], dtype=np.int64),
            phase=phase,
        )


# ------------------------------------------------------------------------------------------------ seeds


@pytest.mark.parametrize("root", [0, 1, 12345, 2**32 - 1, 2**32, 2**40 + 7, 2**70 + 3, 2**130 + 5])
def test_int_seeds_equal_int_seed(root: int) -> None:
    seeds = Seeds(root)
    nodes = np.array([0, 1, 5, 1000, 2**32 - 1, 77])
    assert seeds.int_seeds("train", 3, nodes).tolist() == [seeds.int_seed("train", 3, int(n)) for n in nodes]
    assert seeds.int_seeds("x", nodes, 4, 9).tolist() == [seeds.int_seed("x", int(n), 4, 9) for n in nodes]
    assert int(seeds.int_seeds("init")) == seeds.int_seed("init")
    big = np.array([2**33, 5])  # keys of two 32-bit words take numpy's own path
    assert seeds.int_seeds("train", 3, big).tolist() == [seeds.int_seed("train", 3, int(k)) for k in big]
    assert seeds.int_seeds("train", 3, np.zeros(0, dtype=np.int64)).shape == (0,)


def test_int_seeds_reject_negative_keys_like_numpy() -> None:
    with pytest.raises(ValueError):
        Seeds(0).int_seeds("train", 1, np.array([3, -1]))


def test_seed_words_equal_seed_sequence() -> None:
    values = np.random.default_rng(0).integers(0, 2**63, 300)
    values = np.concatenate([values, [0, 1, 2**32 - 1, 2**32, 2**63 - 1]])
    words = seed_words(values, 4)
    for row, v in zip(words, values.tolist()):
        assert np.array_equal(row, np.random.SeedSequence(v).generate_state(4, np.uint64))
    top = seed_words(np.array([2**64 - 1], dtype=np.uint64), 4)[0]
    assert np.array_equal(top, np.random.SeedSequence(2**64 - 1).generate_state(4, np.uint64))


# ------------------------------------------------------------------------------------------------ schedules


@given(
    n=st.integers(0, 60),
    b=st.integers(1, 20),
    mode=st.sampled_from(["epochs", "steps"]),
    count=st.integers(0, 30),
    seed=st.integers(0, 2**63 - 1),
)
@settings(max_examples=80, deadline=None)
def test_batch_schedule_equals_default_rng_reference(
    n: int, b: int, mode: str, count: int, seed: int
) -> None:
    kw = {mode: count % 4 if mode == "epochs" else count}
    got, want = batch_schedule(n, b, seed=seed, **kw), reference_schedule(n, b, seed=seed, **kw)
    assert len(got) == len(want) and all(np.array_equal(x, y) for x, y in zip(got, want))


@pytest.mark.parametrize("kw", [{"epochs": 1}, {"epochs": 3}, {"steps": 1}, {"steps": 7}])
def test_cohort_schedules_equal_per_client_schedules(kw: dict[str, int]) -> None:
    rng = np.random.default_rng(1)
    m = 150
    sizes, batch, seeds = rng.integers(0, 40, m), rng.integers(1, 20, m), rng.integers(0, 2**63, m)
    sched = batch_schedules(sizes, batch, seeds, **kw)
    every = sched.all_batches()
    for i in range(m):
        want = reference_schedule(int(sizes[i]), int(batch[i]), seed=int(seeds[i]), **kw)
        for got in (sched.batches(i), every[i]):
            assert len(got) == len(want) and all(np.array_equal(x, y) for x, y in zip(got, want))
        assert sched.steps[i] == len(want) and sched.samples[i] == sum(len(x) for x in want)
    # A client's batches depend on its own (size, batch size, seed) only: any subset, any order agrees.
    pick = rng.permutation(m)[: m // 3]
    sub = batch_schedules(sizes[pick], batch[pick], seeds[pick], **kw)
    for j, i in enumerate(pick):
        assert all(np.array_equal(x, y) for x, y in zip(sub.batches(j), every[i]))


def test_cohort_schedules_without_data_and_argument_checks() -> None:
    empty = batch_schedules([0, 0], 4, [1, 2], epochs=None, steps=None)  # nothing to schedule: no mode check
    assert empty.steps.tolist() == [0, 0] and empty.all_batches() == [[], []]
    with pytest.raises(ValueError, match="exactly one"):
        batch_schedules([3], 4, [1], epochs=1, steps=2)
    with pytest.raises(ValueError, match="seeds"):
        batch_schedules([3, 4], 4, [1], epochs=1)


def test_vmap_plan_equals_per_client_reference() -> None:
    rng = np.random.default_rng(3)
    for trial in range(40):
        m = int(rng.integers(1, 60))
        sizes, batch, seeds = rng.integers(0, 50, m), rng.integers(1, 20, m), rng.integers(0, 2**63, m)
        kw = {"epochs": int(rng.integers(1, 3))} if trial % 2 else {"steps": int(rng.integers(1, 6))}
        sched = batch_schedules(sizes, batch, seeds, **kw)
        order = np.argsort(-sched.steps, kind="stable")
        lo = int(rng.integers(0, m))
        members = order[lo : int(rng.integers(lo + 1, m + 1))]
        if sched.steps[members].max() == 0:
            continue
        plan = _plan(sched, members, sizes[members], CPU)
        schedules = [
            reference_schedule(int(sizes[i]), int(batch[i]), seed=int(seeds[i]), **kw) for i in members
        ]
        index, lens = reference_plan(sizes[members].tolist(), schedules)
        assert np.array_equal(plan.index.numpy(), index)
        assert torch.equal(plan.mask, torch.arange(index.shape[2]) < torch.as_tensor(lens)[..., None])
        assert plan.active == [int((sched.steps[members] > t).sum()) for t in range(len(lens))]
        assert plan.width == [int(x) for x in lens.max(axis=1)]


def test_client_data_length_is_cached_sample_count() -> None:
    data = ClientData(torch.zeros(5, 2), torch.zeros(5))
    assert len(data) == 5 and "_length" not in repr(data)


# ------------------------------------------------------------------------------------------------ transfers


def _systems(spec: dict) -> list[SystemModel]:
    return [SystemModel.build(Topology.from_spec(spec), None, ChannelSpec(), Seeds(1)) for _ in range(2)]


@pytest.mark.parametrize(
    "spec", [DEEP_SPEC, {"devices": 20}, {"children": [{"devices": 4}, {"devices": 3}], "devices": 2}]
)
def test_vectorized_transfers_record_the_same_ledger(spec: dict) -> None:
    rng = np.random.default_rng(0)
    for trial in range(25):
        systems = _systems(spec)
        topo = systems[0].topology
        top = int(rng.choice([0, *topo.edges])) if trial % 3 else 0
        below = [n for n in range(topo.num_nodes) if top in topo.path_to_root(n)]
        nodes = rng.choice(below, size=int(rng.integers(0, len(below) + 1)), replace=True).tolist()
        stray = [*nodes, int(rng.integers(0, topo.num_nodes))] if top else nodes  # may not be below `top`
        errors = []
        for system, down, up in (
            (systems[0], reference_send_down, reference_send_up),
            (systems[1], comm.send_down, comm.send_up),
        ):
            system.begin_round(1)
            try:
                down(system, nodes, 1000, source=top, phase="down")
                up(system, nodes, 777, target=top, phase="up")
                up(system, np.array(stray, dtype=np.int64), 5, target=top, phase="stray")
                errors.append(None)
            except ValueError as exc:
                errors.append(str(exc))
        assert errors[0] == errors[1]
        want, got = systems[0].ledger.events(), systems[1].ledger.events()
        assert want.shape == got.shape
        assert all(np.array_equal(want[name], got[name]) for name in want.dtype.names or ())


def test_transfers_reject_unknown_nodes() -> None:
    system = _systems({"devices": 3})[0]
    system.begin_round(0)
    with pytest.raises(ValueError, match="not in 0..3"):
        comm.send_up(system, [7], 10, phase="up")
    with pytest.raises(ValueError, match="not below node 9"):
        comm.send_down(system, [1], 10, source=9, phase="down")


def test_depth_array_matches_depth() -> None:
    topo = Topology.from_spec(DEEP_SPEC)
    assert topo.depth_array.tolist() == [topo.depth(i) for i in range(topo.num_nodes)]
    device = topo.devices[-1]
    topo.reparent(device, topo.edges[-1])
    assert topo.depth_array.tolist() == [topo.depth(i) for i in range(topo.num_nodes)]
