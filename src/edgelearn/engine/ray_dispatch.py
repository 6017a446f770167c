"""Dispatching chunks of nodes to the Ray executor's worker actors, for training and inference alike.

:func:`run_chunks` keeps one call in flight per worker, hands each result back as it arrives (the caller
folds or places it), and re-runs on the other workers the chunks of workers whose node died (the pool drops
them and starts replacements, ``ray_pool.py``). Calls are pure functions of their inputs, so a re-run returns
what the lost call would have. Split from ``ray_executor.py`` so ``train`` and ``infer`` share one loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from edgelearn.engine.ray_pool import ACTOR_RESTARTS, NODE_CHECK_INTERVAL_S, WorkerPool
from edgelearn.errors import EdgelearnError

log = logging.getLogger(__name__)


class _Located(Protocol):
    """A chunk's result names the Ray node of the worker that produced it."""

    node: str


R = TypeVar("R", bound=_Located)


def fetch(ref: Any, what: str) -> Any:
    """A finished call's result; a worker that kept dying, or a call that could not run there, is reported
    as an EdgelearnError (``what`` names the work in the message, e.g. "a training chunk of clients")."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayActorError as exc:
        raise EdgelearnError(
            f"a Ray worker died while running {what} and Ray gave up restarting it (at most "
            f"{ACTOR_RESTARTS} restarts): {exc}",
            hint="check the workers' memory (lower engine.ray_chunk or engine.ray_workers) and the "
            "Ray logs under /tmp/ray/session_latest/logs",
        ) from exc
    except ray.exceptions.RaySystemError as exc:  # e.g. the loss or model_fn cannot be unpickled there
        raise EdgelearnError(
            f"a Ray worker could not run {what}: {exc}",
            hint="every function in the cohort and spec (model_fn, loss, output function) must be importable "
            "on the workers: install edgelearn and your code on every node, or register the defining module "
            "with ray.cloudpickle.register_pickle_by_value(module)",
        ) from exc


def run_chunks(
    pool: WorkerPool, count: int, submit: Callable[[int, Any], Any], get: Callable[[Any], R]
) -> Iterator[tuple[int, R]]:
    """Run chunks ``0..count-1`` on the pool's actors and yield ``(chunk index, result)`` as results arrive.

    ``submit(index, actor)`` starts chunk ``index`` on ``actor`` and returns the call's ObjectRef; ``get``
    fetches a finished ref (raising an EdgelearnError for a dead worker, :func:`fetch`). One call is in flight
    per worker; the next is dispatched before a finished result is fetched, so workers stay busy. The chunks
    of workers lost with their node are queued again for the others; losing every worker is an error.
    """
    import ray

    queue = list(range(count))[::-1]  # next chunk last; re-runs are appended, so they go first
    pending: dict[Any, tuple[Any, int]] = {}  # ObjectRef -> (actor, chunk index)
    idle = list(pool.actors)

    def dispatch() -> None:
        while queue and idle:
            actor = idle.pop(0)
            index = queue.pop()
            pending[submit(index, actor)] = (actor, index)

    def requeue_lost() -> list[Any]:
        """Drop the pool's workers on dead nodes and queue their chunks again; returns the workers this
        call lost (also those another thread's call dropped from the shared pool)."""
        for actor in pool.lost_actors():
            pool.drop(actor)
        gone = [a for a in {*idle, *(a for a, _ in pending.values())} if a not in pool.actors]
        rerun = [index for actor, index in pending.values() if actor in gone]
        for ref, (actor, _) in list(pending.items()):
            if actor in gone:
                del pending[ref]
        queue.extend(rerun)
        idle[:] = [a for a in idle if a not in gone]
        if gone:
            log.warning(
                "%d Ray worker(s) lost with their node; re-running %d chunk(s) of clients on the other "
                "%d, a replacement joins when the cluster has room for it",
                len(gone),
                len(rerun),
                len(pool.actors),
            )
        if gone and not pool.actors:
            raise EdgelearnError(
                "every node running a Ray worker of this executor died",
                hint="restart the cluster's nodes (`ray start --address`); replacement workers wait for "
                "room and join the pool when they start",
            )
        return gone

    dispatch()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=NODE_CHECK_INTERVAL_S)
        if not ready:
            requeue_lost()
            dispatch()
            continue
        ref = ready[0]
        actor, index = pending.pop(ref)
        idle.append(actor)
        dispatch()  # keep the worker busy while this result is fetched and folded
        try:
            part = get(ref)
        except EdgelearnError:
            if actor not in requeue_lost():
                raise
            queue.append(index)  # it died with its node: re-run the chunk elsewhere
            dispatch()
            continue
        pool.record(actor, part.node)
        yield index, part
