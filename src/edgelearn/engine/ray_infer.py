"""The Ray executor's ``infer``: chunks of node models inferred on the worker actors, gathered in order.

Each chunk is one actor call (``ChunkWorker.infer_chunk``, in ``ray_worker.py``) carrying its nodes' states
and inputs; the worker infers them with its inner executor (serial or vmap) and sends the outputs back on
the CPU. A tensor every node shares (a test set) is put in the object store once per call and read by every
chunk. Results are placed by chunk, so the outputs come back in cohort order whichever worker finishes first,
and chunks of workers lost with their node are re-run on the others (:func:`run_chunks`). Outputs equal the
inner executor's in this process: each node's arithmetic does not depend on the chunk it lands in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from edgelearn.engine.infer import InferCohort, InferResult, InferSpec, Outputs
from edgelearn.engine.precision import current_precision
from edgelearn.engine.ray_dispatch import fetch, run_chunks
from edgelearn.engine.ray_pool import WorkerPool
from edgelearn.engine.ray_worker import InferChunkResult, InferTask, compact_cpu


def infer_on(
    pool: WorkerPool,
    cohort: InferCohort,
    spec: InferSpec,
    chunks: Sequence[tuple[int, int]],
    model_ref: Any,
    device: torch.device,
) -> InferResult:
    """Infer ``cohort`` on ``pool``'s actors, node ranges ``chunks`` (contiguous, covering the cohort) one
    call each; ``model_ref`` is the object-store ref of ``cohort.model_fn``; outputs come back on
    ``device``."""
    import ray

    spec_ref = ray.put(spec)
    shared = [ray.put(compact_cpu(cohort.inputs))] if isinstance(cohort.inputs, torch.Tensor) else []
    precision = current_precision()

    def submit(index: int, actor: Any) -> Any:
        lo, hi = chunks[index]
        task = InferTask(
            index=index,
            arch_key=cohort.arch_key,
            model_ref=[model_ref],
            states=[{k: compact_cpu(v) for k, v in s.items()} for s in cohort.states[lo:hi]],
            inputs=None if shared else [compact_cpu(cohort.input_of(i)) for i in range(lo, hi)],
            precision=precision,
        )
        return actor.infer_chunk.remote(task, spec_ref, *shared)

    def get(ref: Any) -> InferChunkResult:
        return fetch(ref, "an inference chunk of nodes")  # type: ignore[no-any-return]

    outputs: list[Outputs] = [()] * len(cohort)
    done = 0
    for index, part in run_chunks(pool, len(chunks), submit, get):
        lo, hi = chunks[index]
        outputs[lo:hi] = [tuple(t.to(device) for t in node) for node in part.outputs]
        done += 1
    if done < len(chunks):  # run_chunks re-queues every lost chunk; never return partial outputs
        raise RuntimeError(f"only {done} of {len(chunks)} inference chunks came back")
    return InferResult(outputs)
