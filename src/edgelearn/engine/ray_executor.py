"""The Ray executor: a pool of worker actors training chunks of clients with the serial or vmap executor.

Follows Ray's anti-pattern list (docs.ray.io "Design Patterns & Anti-patterns"): one actor call per chunk of
clients (never one task per device), start states put in the object store once per call, client data put
once and cached across rounds (in the object store and, deserialized, in each worker), results consumed
with ``ray.wait`` and folded in as they arrive. Chunks return weighted SUMS per group (not means), folded in
chunk order, so results match the serial executor up to float64 summation order and never depend on which
worker finished first. This module is the driver (chunking, dispatch, streaming aggregation); the pool of
actors (placement, the nodes they run on, replacing workers lost with their node) lives in ``ray_pool.py``,
the actor body and the records it exchanges with the driver in ``ray_worker.py``, the dispatch loop both
``train`` and ``infer`` use in ``ray_dispatch.py`` and the driver side of ``infer`` in ``ray_infer.py``.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch

from edgelearn.engine.cohort import ClientData, Cohort, CohortResult, LocalSpec
from edgelearn.engine.infer import InferCohort, InferResult, InferSpec
from edgelearn.engine.precision import current_precision
from edgelearn.engine.ray_dispatch import fetch, run_chunks
from edgelearn.engine.ray_pool import (
    ACTOR_RESTARTS,
    ACTOR_START_TIMEOUT_S,
    POOLS,
    POOLS_LOCK,
    TASK_RETRIES,
    WorkerPool,
    start_pool,
    wait_started,
)
from edgelearn.engine.ray_worker import (
    ChunkResult,
    ChunkTask,
    GroupSums,
    compact_cpu,
    data_key,
    data_nbytes,
    state_to,
)
from edgelearn.engine.state import StateDict
from edgelearn.errors import ConfigError, EdgelearnError

log = logging.getLogger(__name__)

INNERS = ("serial", "vmap")
# Client data kept across rounds (LRU), in the object store and again in each worker; 256 MiB holds e.g.
# 1,000 clients of 64k floats.
DEFAULT_CACHE_BYTES = 256 * 2**20
# Default chunking: this many chunks per worker, balanced by estimated work, so a slow or restarted worker
# delays at most half of its share while each call still carries hundreds of clients.
CHUNKS_PER_WORKER = 2
# Fixed per-client cost (state load, optimiser set-up) in sample-equivalents, used only to balance chunks;
# measured on a 2-core CPU, serial executor, 1 thread, MLP 64-128-10 at batch 16: ~0.13 ms per client vs
# ~30 us per sample.
CLIENT_COST_SAMPLES = 5.0


def chunk_bounds(costs: np.ndarray, num_chunks: int) -> list[tuple[int, int]]:
    """Split clients 0..n-1 into at most ``num_chunks`` contiguous, non-empty ranges of similar total cost.

    Contiguity keeps each chunk's sums in cohort order; every chunk costs less than total/num_chunks plus the
    largest single client's cost.
    """
    n = len(costs)
    if n == 0:
        return []
    cum = np.cumsum(np.asarray(costs, dtype=np.float64))
    targets = cum[-1] * np.arange(1, max(1, num_chunks)) / max(1, num_chunks)
    cuts = np.searchsorted(cum, targets, side="left") + 1
    edges = [0, *sorted({int(c) for c in cuts if 0 < c < n}), n]
    return list(zip(edges[:-1], edges[1:]))


def client_costs(cohort: Cohort, spec: LocalSpec) -> np.ndarray:
    """Estimated work per client (samples trained plus a fixed per-client cost), used to balance chunks."""
    sizes = np.array([len(d) for d in cohort.data], dtype=np.float64)
    if spec.steps is not None:
        batch = np.array([cohort.batch_size_of(i, spec) for i in range(len(sizes))], dtype=np.float64)
        work = spec.steps * np.minimum(batch, sizes)
    else:
        work = (spec.epochs or 0) * sizes
    return work + CLIENT_COST_SAMPLES


class RayExecutor:
    """Trains a cohort on a pool of Ray actors, a chunk of clients per call, with streaming aggregation.

    Joins the cluster at ``address`` (``"auto"``: the one ``ray start`` last started on this machine;
    ``"host:port"``: the head's GCS) or starts a local one (all CPUs, no dashboard) unless Ray is already
    initialised; ``shutdown()`` (or leaving a ``with`` block) stops the actors and disconnects from, or stops,
    the cluster. ``num_workers`` defaults to the cluster's CPUs, ``chunk_size`` to an even split of estimated
    work into ``CHUNKS_PER_WORKER`` chunks per worker; ``inner`` is the executor each worker runs;
    ``resources`` are custom Ray resources each worker requests besides its CPU share, so workers run only on
    nodes started with them (``ray start --resources``). A worker whose node dies mid-round has its chunk
    re-run on the others (``ray_pool.py``). Client data is assumed not to change between rounds except in
    place (detected through tensor versions).
    """

    name = "ray"

    def __init__(
        self,
        device: torch.device,
        *,
        address: str | None = None,
        num_workers: int | None = None,
        chunk_size: int | None = None,
        inner: str = "serial",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_threads: int | None = None,
        resources: Mapping[str, float] | None = None,
    ) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError(
                "executor 'ray' needs the Ray package, which is not installed",
                hint="pip install 'edgelearn[ray]', or choose executor: serial, vmap or auto",
            ) from exc
        from edgelearn.extensions import register_pickle_by_value

        register_pickle_by_value(ray.cloudpickle)  # plugins from .py files: workers cannot import them
        if inner not in INNERS:
            raise ConfigError(
                f"engine.ray_inner is {inner!r}, which is not an executor a Ray worker can run",
                hint=f"use one of: {', '.join(INNERS)}",
            )
        if inner == "vmap":
            try:
                from edgelearn.engine import vmap  # noqa: F401
            except ImportError as exc:
                raise ConfigError(
                    "engine.ray_inner is 'vmap' but the vmap executor is not available",
                    hint="set engine.ray_inner: serial",
                ) from exc
        for field_name, value in (("engine.ray_workers", num_workers), ("engine.ray_chunk", chunk_size)):
            if value is not None and int(value) < 1:
                raise ConfigError(f"{field_name} is {value}, it must be a positive integer or unset")
        if cache_bytes < 0:
            raise ConfigError(f"cache_bytes is {cache_bytes}, it must be >= 0")
        for resource, amount in (resources or {}).items():
            if not float(amount) > 0:
                raise ConfigError(f"engine.ray_resources.{resource} is {amount}, it must be positive")
        self.device = device
        self.address = address
        self.num_workers = None if num_workers is None else int(num_workers)
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.inner = inner
        # Cap on each worker's torch threads (the run's engine.torch_threads choice, engine/threads.py): a
        # worker never uses more than its share of the CPUs, nor more than the run's work can use.
        self.max_threads = None if max_threads is None else max(1, int(max_threads))
        self.cache_bytes = int(cache_bytes)
        self.resources = {str(k): float(v) for k, v in (resources or {}).items()}
        self.owns_cluster = False
        self.data_puts = 0  # client data objects put so far (cache misses), for diagnostics and tests
        self._data_cache: OrderedDict[Hashable, tuple[Any, int, ClientData]] = OrderedDict()
        self._cached_bytes = 0
        self._model_refs: dict[str, tuple[Any, Any]] = {}

    # ---------------------------------------------------------------- cluster and pool

    def _ensure_cluster(self) -> None:
        import ray

        if ray.is_initialized():
            return
        self._model_refs = {}
        self._data_cache.clear()
        self._cached_bytes = 0
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
        try:
            if self.address is not None:
                ray.init(address=self.address, **quiet)
            else:
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"engine.ray_address={self.address!r}" if self.address else "a local Ray cluster"
            raise ConfigError(
                f"could not start or join {where}: {exc}",
                hint="start the cluster with `ray start --head` and pass its address, "
                "or leave engine.ray_address unset for a local cluster; if the cluster uses token "
                "authentication (Ray's default when ~/.ray/auth_token exists), run with RAY_AUTH_MODE=token "
                "and the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN",
            ) from exc
        self.owns_cluster = True

    def _pool_key(self) -> tuple[Hashable, ...]:
        """What makes two executors' pools interchangeable: Ray session, device, inner, threads, resources,
        size."""
        import ray

        ctx = ray.get_runtime_context()
        workers = self.num_workers or max(1, int(float(ray.cluster_resources().get("CPU", 1.0))))
        return (
            ctx.get_node_id(),
            ctx.get_job_id(),
            self.device.type,
            self.inner,
            self.max_threads,
            tuple(sorted(self.resources.items())),
            workers,
        )

    def _ensure_pool(self) -> WorkerPool:
        """This executor's worker pool: reused from the registry, or started after idle pools are stopped."""
        import ray

        self._ensure_cluster()
        key = self._pool_key()
        with POOLS_LOCK:
            for other in [k for k in POOLS if k[:2] != key[:2]]:  # from an earlier Ray session: stale
                del POOLS[other]
            pool = POOLS.get(key)
            reused = pool is not None
            if pool is None:
                for other, idle in [(k, p) for k, p in POOLS.items() if p.busy == 0]:
                    idle.kill()  # frees its CPUs; a later executor with those settings starts a new pool
                    del POOLS[other]
                pool = POOLS[key] = self._start_pool(int(key[-1]))
        if reused:
            # reused: replacements for workers lost with their node join once started (waited for only
            # when no worker is left)
            pool.promote_ready(0.0 if pool.actors else ACTOR_START_TIMEOUT_S)
            if not pool.actors:
                raise EdgelearnError(
                    f"no Ray worker of this executor is left and none of its replacements started within "
                    f"{ACTOR_START_TIMEOUT_S:.0f} s: the nodes that ran them died",
                    hint="start nodes offering the workers' resources (`ray start --address ... "
                    "--resources`) or restart the run on the cluster that is left",
                )
            return pool
        started = wait_started(pool, ACTOR_START_TIMEOUT_S)
        if started < len(pool.actors):
            self.shutdown()
            total = ray.cluster_resources()
            asked = "".join(f", {total.get(r, 0):g} {r!r}" for r in self.resources)
            raise ConfigError(
                f"only {started} of {len(pool.actors)} Ray workers (engine.ray_workers) started within "
                f"{ACTOR_START_TIMEOUT_S:.0f} s; the cluster has {total.get('CPU', 0):g} CPUs{asked}",
                hint="lower engine.ray_workers, stop other Ray jobs busy on this cluster, or add nodes"
                + (" started with `ray start --resources` offering engine.ray_resources" if asked else ""),
            )
        return pool

    def _start_pool(self, workers: int) -> WorkerPool:
        """Start ``workers`` actors sharing the cluster's CPUs (and GPUs for a CUDA device), restartable,
        each asking for ``self.resources`` too."""
        import ray

        total = ray.cluster_resources()
        cpus = float(total.get("CPU", 1.0))
        options: dict[str, Any] = {
            "num_cpus": min(1.0, cpus / workers),
            "max_restarts": ACTOR_RESTARTS,
            "max_task_retries": TASK_RETRIES,
        }
        if self.device.type == "cuda":
            options["num_gpus"] = min(1.0, float(total.get("GPU", 0.0)) / workers)
        if self.resources:
            options["resources"] = dict(self.resources)
        threads = max(1, int(cpus / workers))
        if self.max_threads is not None:
            threads = min(threads, self.max_threads)
        return start_pool(options, (self.device.type, self.inner, threads, self.cache_bytes), workers)

    def worker_pids(self) -> list[int]:
        """Process ids of the worker actors (starting them if needed), for diagnostics and tests."""
        return [pid for pid, _ in self.workers()]

    def workers(self) -> list[tuple[int, str]]:
        """Process id and Ray node id of each worker actor (starting them if needed), in pool order."""
        import ray

        return [(int(p), str(n)) for p, n in ray.get([a.where.remote() for a in self._ensure_pool().actors])]

    def shutdown(self) -> None:
        """Stop this executor's worker pool, drop its cached objects, and stop a cluster it started."""
        import ray

        if ray.is_initialized():
            key = self._pool_key()
            with POOLS_LOCK:
                pool = POOLS.pop(key, None)
            if pool is not None:
                pool.kill()
        self._model_refs = {}
        self._data_cache.clear()
        self._cached_bytes = 0
        if self.owns_cluster and ray.is_initialized():
            ray.shutdown()
            with POOLS_LOCK:
                POOLS.clear()
        self.owns_cluster = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ---------------------------------------------------------------- object store

    @property
    def cached_clients(self) -> int:
        """Clients whose data currently sits in the object store cache."""
        return len(self._data_cache)

    @property
    def cached_bytes(self) -> int:
        """Bytes of client data the cache currently pins in the object store (at most ``cache_bytes``)."""
        return self._cached_bytes

    def _data_ref(self, data: ClientData) -> Any:
        """An ObjectRef of the client's data, put once and reused while the tensors are unchanged (LRU)."""
        import ray

        key = data_key(data)
        hit = self._data_cache.get(key)
        if hit is not None:
            self._data_cache.move_to_end(key)
            return hit[0]
        cpu = ClientData(
            compact_cpu(data.x), compact_cpu(data.y), {k: compact_cpu(v) for k, v in data.extra.items()}
        )
        ref = ray.put(cpu)
        self.data_puts += 1
        nbytes = data_nbytes(data)
        if nbytes <= self.cache_bytes:
            # The entry holds ``data`` so its tensors (and thus the addresses in the key) stay alive.
            self._data_cache[key] = (ref, nbytes, data)
            self._cached_bytes += nbytes
            while self._cached_bytes > self.cache_bytes:
                _, (_, evicted, _) = self._data_cache.popitem(last=False)
                self._cached_bytes -= evicted
        return ref

    def _model_ref(self, cohort: Cohort | InferCohort) -> Any:
        """An ObjectRef of the cohort's model factory, put once per architecture."""
        import ray

        hit = self._model_refs.get(cohort.arch_key)
        if hit is None or hit[0] is not cohort.model_fn:
            hit = (cohort.model_fn, ray.put(cohort.model_fn))
            self._model_refs[cohort.arch_key] = hit
        return hit[1]

    # ---------------------------------------------------------------- training

    def _chunks(self, cohort: Cohort, spec: LocalSpec, workers: int) -> list[tuple[int, int]]:
        n = len(cohort)
        if self.chunk_size is not None:
            return [(lo, min(n, lo + self.chunk_size)) for lo in range(0, n, self.chunk_size)]
        return chunk_bounds(client_costs(cohort, spec), workers * CHUNKS_PER_WORKER)

    def train(self, cohort: Cohort, spec: LocalSpec) -> CohortResult:
        """Train every client on the workers, a chunk per call; same results as the serial executor."""
        if len(cohort) == 0:
            kept = [] if cohort.keep_states else None
            empty = np.zeros(0, dtype=np.int64)
            return self._result(cohort, GroupSums(cohort.num_groups), kept, empty, empty, np.zeros(0))
        pool = self._ensure_pool()
        with POOLS_LOCK:
            pool.busy += 1
        try:
            return self._train_on(pool, cohort, spec)
        finally:
            with POOLS_LOCK:
                pool.busy -= 1

    def infer(self, cohort: InferCohort, spec: InferSpec) -> InferResult:
        """Each node's outputs, chunks of nodes on the workers (:mod:`edgelearn.engine.ray_infer`), split like
        a training cohort: ``chunk_size`` nodes each, or ``CHUNKS_PER_WORKER`` chunks per worker of similar
        numbers of samples."""
        from edgelearn.engine.ray_infer import infer_on

        if len(cohort) == 0:
            return InferResult([])
        pool = self._ensure_pool()
        with POOLS_LOCK:
            pool.busy += 1
        try:
            n = len(cohort)
            if self.chunk_size is not None:
                chunks = [(lo, min(n, lo + self.chunk_size)) for lo in range(0, n, self.chunk_size)]
            else:
                costs = cohort.sizes() + CLIENT_COST_SAMPLES
                chunks = chunk_bounds(costs, len(pool.actors) * CHUNKS_PER_WORKER)
            return infer_on(pool, cohort, spec, chunks, self._model_ref(cohort), self.device)
        finally:
            with POOLS_LOCK:
                pool.busy -= 1

    def _train_on(self, pool: WorkerPool, cohort: Cohort, spec: LocalSpec) -> CohortResult:
        """Dispatch the cohort's chunks to the pool's actors (:func:`run_chunks`: one in flight each, the
        chunks of workers whose node died re-run on the others) and fold results in chunk order."""
        import ray

        n = len(cohort)
        samples = np.zeros(n, dtype=np.int64)
        steps = np.zeros(n, dtype=np.int64)
        losses = np.full(n, np.nan)
        kept: list[StateDict | None] | None = [None] * n if cohort.keep_states else None
        total = GroupSums(cohort.num_groups)
        spec_ref = ray.put(spec)
        model_ref = self._model_ref(cohort)
        start_refs: dict[int, Any] = {}
        data_refs = [self._data_ref(d) for d in cohort.data]
        chunks = self._chunks(cohort, spec, len(pool.actors))

        def submit(index: int, actor: Any) -> Any:
            lo, hi = chunks[index]
            used = np.unique(cohort.start_of[lo:hi])
            for s in used:
                if int(s) not in start_refs:
                    start_refs[int(s)] = ray.put(
                        {k: compact_cpu(v) for k, v in cohort.starts[int(s)].items()}
                    )
            task = ChunkTask(
                index=index,
                arch_key=cohort.arch_key,
                model_ref=[model_ref],
                num_groups=cohort.num_groups,
                data_refs=data_refs[lo:hi],
                start_of=np.searchsorted(used, cohort.start_of[lo:hi]),
                group_of=cohort.group_of[lo:hi],
                weights=np.asarray(cohort.weights[lo:hi], dtype=np.float64),
                seeds=cohort.seeds[lo:hi],
                batch_sizes=None if cohort.batch_sizes is None else cohort.batch_sizes[lo:hi],
                client_ids=None if cohort.client_ids is None else np.asarray(cohort.client_ids)[lo:hi],
                keep_states=cohort.keep_states,
                precision=current_precision(),
                grad_shift=None
                if cohort.grad_shift is None
                else [{k: compact_cpu(v) for k, v in s.items()} for s in cohort.grad_shift[lo:hi]],
            )
            return actor.train_chunk.remote(task, spec_ref, *[start_refs[int(s)] for s in used])

        arrived: dict[int, ChunkResult] = {}
        next_fold = 0
        for index, part in run_chunks(pool, len(chunks), submit, self._fetch):
            lo, hi = chunks[index]
            samples[lo:hi], steps[lo:hi], losses[lo:hi] = part.samples, part.steps, part.train_loss
            if kept is not None and part.states is not None:
                kept[lo:hi] = [state_to(s, self.device) for s in part.states]
            arrived[index] = part
            while next_fold in arrived:  # fold in chunk order: exact, completion-order-free sums
                total.merge(arrived.pop(next_fold).sums)
                next_fold += 1
        if next_fold < len(chunks):  # every path above re-queues a lost chunk; never return a partial round
            raise EdgelearnError(f"only {next_fold} of {len(chunks)} chunks of clients were trained")
        return self._result(cohort, total, kept, samples, steps, losses)

    @staticmethod
    def _fetch(ref: Any) -> ChunkResult:
        """A finished chunk's result; a worker that kept dying is reported as an EdgelearnError."""
        return fetch(ref, "a training chunk of clients")  # type: ignore[no-any-return]

    def _result(
        self,
        cohort: Cohort,
        total: GroupSums,
        kept: list[StateDict | None] | None,
        samples: np.ndarray,
        steps: np.ndarray,
        losses: np.ndarray,
    ) -> CohortResult:
        if len(cohort.starts):
            groups = total.results(cohort.starts[0], self.device)
        else:
            groups = [None] * cohort.num_groups
        states = None if kept is None else [s for s in kept if s is not None]
        return CohortResult(
            group_states=groups, client_states=states, samples=samples, steps=steps, train_loss=losses
        )


__all__ = [
    "ACTOR_RESTARTS",
    "CHUNKS_PER_WORKER",
    "DEFAULT_CACHE_BYTES",
    "INNERS",
    "RayExecutor",
    "chunk_bounds",
    "client_costs",
]
