"""The Ray executor's pool of worker actors: starting them where the config's resources allow, knowing which
node each runs on, and replacing those whose node died.

Split from ``ray_executor.py`` (the driver: chunking, dispatch and streaming aggregation) so the lifecycle of
the actors reads on its own. A worker that crashes on a live node is restarted by Ray itself
(``ACTOR_RESTARTS``) and its call re-run (``TASK_RETRIES``); a worker whose whole node died may have nowhere
to restart (its CPUs and custom resources are gone), and Ray would then wait for room forever. The driver
therefore asks the pool which workers sat on dead nodes (``lost_actors``), re-runs their chunks elsewhere,
and drops them: each dropped worker is replaced by a standby actor that joins the pool once the cluster has
room for it again (a node rejoins, or an autoscaler adds one on seeing the pending demand).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

ACTOR_RESTARTS = 8
"""Times Ray restarts a worker actor that died (its calls are pure functions of their inputs, so a re-run
returns the same result)."""

TASK_RETRIES = -1
"""Times Ray re-runs a call whose worker died or became unreachable during it: without limit (-1). A worker
that keeps dying is still stopped by ``ACTOR_RESTARTS``; a limit would also count each failed attempt to
reach a worker whose node is gone (about one a second), and so fail the round before Ray declares the node
dead (~15 s by default) and the driver re-runs the call elsewhere."""

ACTOR_START_TIMEOUT_S = 120.0
"""How long to wait for a new pool's actors to start before reporting that the cluster has no room for them
(generous: each worker imports torch, slow on a loaded machine; the wait ends as soon as they are up)."""

NODE_CHECK_INTERVAL_S = 1.0
"""While no chunk result arrives, how often the driver asks the cluster whether a worker's node died (one
cheap GCS call). Ray itself declares a node dead once its health checks fail (``health_check_period_ms``
times ``health_check_failure_threshold`` on the head, about 15 s by default); this only adds to that."""


def dead_nodes() -> set[str]:
    """Ids of the cluster's nodes that Ray has declared dead (a killed raylet, a lost machine)."""
    import ray

    return {str(n["NodeID"]) for n in ray.nodes() if not n.get("Alive", False)}


@dataclass
class WorkerPool:
    """Worker actors of one executor configuration, the node each last reported, and pending replacements.

    ``spawn`` starts one more actor with the pool's options; ``nodes`` maps an actor handle (hashed by its
    Ray actor id) to its node id. ``standby`` holds replacements for dropped workers, each with the ObjectRef
    of its first ``where`` call: they join ``actors`` once that call returns (see :meth:`promote_ready`).
    """

    actors: list[Any]
    spawn: Callable[[], Any]
    nodes: dict[Any, str] = field(default_factory=dict)
    standby: list[tuple[Any, Any]] = field(default_factory=list)
    busy: int = 0  # train calls in flight on this pool

    def record(self, actor: Any, node: str) -> None:
        """Note the node ``actor`` reported (at start, and with every chunk result: it may have moved)."""
        self.nodes[actor] = node

    def lost_actors(self) -> list[Any]:
        """The pool's actors whose last reported node Ray has declared dead."""
        dead = dead_nodes()
        return [a for a in self.actors if self.nodes.get(a) in dead]

    def drop(self, actor: Any) -> None:
        """Stop ``actor`` for good (its node died) and start a replacement that waits for room in standby."""
        import ray

        if actor not in self.actors:  # already dropped (by another thread's round on this pool)
            return
        ray.kill(actor, no_restart=True)
        self.actors = [a for a in self.actors if a is not actor]
        self.nodes.pop(actor, None)
        replacement = self.spawn()
        self.standby.append((replacement, replacement.where.remote()))

    def promote_ready(self, wait_s: float = 0.0) -> int:
        """Move standby actors that have started into the pool, after waiting up to ``wait_s`` for the first
        to start (0: not at all); returns how many joined."""
        import ray

        if not self.standby:
            return 0
        refs = [ref for _, ref in self.standby]
        if wait_s > 0:
            ray.wait(refs, num_returns=1, timeout=wait_s)
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        done = set(ready)
        joined = 0
        for actor, ref in list(self.standby):
            if ref not in done:
                continue
            self.standby.remove((actor, ref))
            try:
                _, node = ray.get(ref)
            except ray.exceptions.RayActorError:  # died while starting: try again with a fresh one
                replacement = self.spawn()
                self.standby.append((replacement, replacement.where.remote()))
                continue
            self.actors.append(actor)
            self.record(actor, node)
            joined += 1
        return joined

    def kill(self) -> None:
        """Stop every actor of the pool, standby replacements included."""
        import ray

        for actor in [*self.actors, *(a for a, _ in self.standby)]:
            ray.kill(actor, no_restart=True)
        self.actors, self.standby = [], []


def start_pool(options: dict[str, Any], args: Iterable[Any], workers: int) -> WorkerPool:
    """Start ``workers`` :class:`ChunkWorker` actors with the Ray ``options`` (CPUs, GPUs, custom resources,
    restarts) and constructor ``args``; the caller waits for them with :func:`wait_started`."""
    import ray

    from edgelearn.engine.ray_worker import ChunkWorker

    actor_cls = ray.remote(ChunkWorker).options(**options)
    fixed = tuple(args)

    def spawn() -> Any:
        return actor_cls.remote(*fixed)

    return WorkerPool([spawn() for _ in range(workers)], spawn)


def wait_started(pool: WorkerPool, timeout_s: float) -> int:
    """Wait up to ``timeout_s`` for the pool's actors to start, recording each one's node; returns how many
    started (the rest are still waiting for room on the cluster)."""
    import ray

    refs = {actor.where.remote(): actor for actor in pool.actors}
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    for ref in ready:
        _, node = ray.get(ref)
        pool.record(refs[ref], node)
    return len(ready)


POOLS: dict[tuple[Hashable, ...], WorkerPool] = {}
"""Worker pools by (Ray session, device type, inner executor, threads, resources, size): runs in one process
(benchmarks, sweeps, tests) reuse warm workers instead of starting processes and re-importing torch, and an
idle pool is stopped before a pool with other settings starts, so abandoned executors never hold the
cluster's CPUs."""

POOLS_LOCK = threading.Lock()
"""Guards :data:`POOLS` and each pool's ``busy`` count (executors may train from several threads)."""


__all__ = [
    "ACTOR_RESTARTS",
    "ACTOR_START_TIMEOUT_S",
    "NODE_CHECK_INTERVAL_S",
    "POOLS",
    "POOLS_LOCK",
    "TASK_RETRIES",
    "WorkerPool",
    "dead_nodes",
    "start_pool",
    "wait_started",
]
