"""The Ray executor on a real two-node cluster started with the Ray CLI: workers placed by custom resources on
both nodes, results equal to the serial executor's, a round that survives losing a node mid-way, and a
replacement worker joining when a node with room does.

Part of the normal suite (``make test``): about 35 s on an idle 2-core machine, 50 s beside two busy
processes, most of it Ray's own ~15 s to declare the killed node dead."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
# Workers cannot import this test module, so ship its functions (losses, model factory) by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

from ray_cluster import Cluster, ray_cli, two_node_cluster  # noqa: E402
from test_engine_ray import (  # noqa: E402
    CPU,
    SIZES,
    SPEC,
    HoldingLoss,
    _assert_same,
    _ragged_cohort,
    train_while_held,
)

import edgelearn  # noqa: E402
from edgelearn.engine import CohortResult, LocalSpec, SerialExecutor  # noqa: E402
from edgelearn.engine.ray_executor import RayExecutor  # noqa: E402
from edgelearn.engine.ray_pool import POOLS  # noqa: E402

pytestmark = pytest.mark.skipif(
    ray_cli() is None or not Path("/proc/self/stat").exists(),
    reason="needs the `ray` command and Linux's /proc (to stop exactly the test cluster's processes)",
)

CPUS_PER_NODE = 2
"""Logical CPUs each node offers: room for both workers on either node, so only :data:`PLACEMENT` (one unit
per node) spreads them, and a worker whose node died cannot simply restart on the other one."""

PLACEMENT = {"trainer": 1.0}
"""Custom resource both nodes offer one unit of, and each worker asks for (``engine.ray_resources``)."""

WORKERS = 2
"""Worker actors: one per node."""

WAIT_S = 120.0
"""Longest wait for a condition on a loaded 2-core machine (each wait ends as soon as it holds)."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Nodes ``a`` (head) and ``b`` on loopback, each offering one ``trainer``; stopped after the module."""
    if ray.is_initialized():  # a session left by another module: the executor must join this cluster
        ray.shutdown()
    with two_node_cluster(CPUS_PER_NODE, PLACEMENT) as started:
        yield started


@pytest.fixture(scope="module")
def executor(cluster: Cluster) -> Iterator[RayExecutor]:
    """An executor joining the cluster by address, its workers asking for one ``trainer`` each."""
    with RayExecutor(
        CPU, address=cluster.address, num_workers=WORKERS, max_threads=1, resources=PLACEMENT
    ) as ex:
        yield ex


def _node_names() -> dict[str, str]:
    """Ray node id -> name of each live node, from the ``node_<name>`` resource it offers."""
    return {
        n["NodeID"]: key.removeprefix("node_")
        for n in ray.nodes()
        for key in n["Resources"]
        if n["Alive"] and key.startswith("node_") and not key.startswith("node:")
    }


def test_workers_run_this_checkout_on_both_nodes(executor: RayExecutor) -> None:
    workers = executor.workers()  # joins the cluster and starts the pool
    names = _node_names()
    assert sorted(names.values()) == ["a", "b"]
    assert sorted(names[node] for _, node in workers) == ["a", "b"]  # one worker per node

    @ray.remote(resources={"node_b": 0.01})
    def edgelearn_file() -> str:
        import edgelearn as imported

        return str(imported.__file__)

    assert ray.get(edgelearn_file.remote()) == edgelearn.__file__  # the code under test, not an install


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_ragged_cohort_matches_serial(executor: RayExecutor, chunk_size: int | None) -> None:
    cohort = _ragged_cohort(SIZES)
    executor.chunk_size = chunk_size
    try:
        got = executor.train(cohort, SPEC)
    finally:
        executor.chunk_size = None
    _assert_same(got, SerialExecutor(CPU).train(cohort, SPEC))


def test_round_survives_losing_a_node(
    executor: RayExecutor, cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Node b dies while both workers are inside a chunk: Ray declares it dead after its health checks fail
    (Ray's defaults, ~15 s, during which the lost worker's call keeps failing to reach it), the driver
    re-runs that chunk on node a, and the round's results are the serial executor's."""
    caplog.set_level(logging.WARNING, logger="edgelearn.engine.ray_executor")
    cohort = _ragged_cohort(SIZES)
    spec = LocalSpec(lr=0.1, batch_size=8, epochs=1, momentum=0.9, loss=HoldingLoss(str(tmp_path)))
    want = SerialExecutor(CPU).train(cohort, spec)
    workers = executor.workers()  # joins the cluster and starts the pool, if no earlier test did
    names = _node_names()
    thread, out, waiting = train_while_held(executor, cohort, spec, tmp_path, workers=WORKERS, wait_s=WAIT_S)
    assert waiting == sorted(pid for pid, _ in workers)  # both workers are inside a chunk
    cluster.nodes["b"].kill()  # raylet, agents and its worker, mid-chunk
    (tmp_path / "hold").unlink()
    thread.join(timeout=WAIT_S)
    result = out.get("result")
    assert isinstance(result, CohortResult), result
    _assert_same(result, want)  # node b's chunk was re-run on node a
    assert "1 Ray worker(s) lost with their node" in caplog.text
    survivors = executor.workers()
    assert [names[node] for _, node in survivors] == ["a"]
    (pool,) = POOLS.values()
    assert len(pool.standby) == 1  # a replacement waits for a node offering a `trainer`
    _assert_same(executor.train(cohort, SPEC), SerialExecutor(CPU).train(cohort, SPEC))  # and runs on


def test_replacement_joins_when_a_node_with_room_joins(executor: RayExecutor, cluster: Cluster) -> None:
    pools = list(POOLS.values())
    if len(pools) != 1 or not pools[0].standby:
        pytest.skip("needs the worker lost in test_round_survives_losing_a_node")
    pool = pools[0]
    cluster.start_node("c", {**PLACEMENT, "node_c": 1}, CPUS_PER_NODE)
    deadline = time.monotonic() + WAIT_S
    while len(workers := executor.workers()) < WORKERS and time.monotonic() < deadline:
        time.sleep(0.1)  # each call lets started replacements join, without waiting for them
    names = _node_names()
    assert sorted(names[node] for _, node in workers) == ["a", "c"] and not pool.standby
    cohort = _ragged_cohort(SIZES)
    _assert_same(executor.train(cohort, SPEC), SerialExecutor(CPU).train(cohort, SPEC))
