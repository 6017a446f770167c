"""The worker side of the Ray executor: the actor body (:class:`ChunkWorker`) that trains a chunk of clients
with the serial or vmap executor and returns weighted sums per group (:class:`GroupSums`), or infers a chunk
of node models (``executor.infer``), the chunks' task and result records, and the tensor moves and cache
keys both sides share.

Kept apart from the driver (``ray_executor.py``: the pool of actors, chunking and streaming aggregation) so
each side reads on its own; a worker process imports this module, the driver both.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from edgelearn.engine.cohort import ClientData, Cohort, LocalSpec
from edgelearn.engine.infer import InferCohort, InferSpec, Outputs
from edgelearn.engine.precision import set_precision
from edgelearn.engine.state import StateDict

# Ray's object store lives in host memory: tensors travel to and from workers as CPU tensors and are moved
# to the executor's device on arrival.
TRANSPORT_DEVICE = torch.device("cpu")
# Clients per inner-executor call inside a worker: their final states are held at once to form exact sums.
INNER_CLIENTS = 256


class GroupSums:
    """Per-group weighted SUMS of states (float64) and total weights: partial results that combine exactly.

    Same arithmetic as :class:`edgelearn.engine.state.WeightedMean` (floats summed in float64 with their
    weight, integer buffers keep the maximum), but partials from different chunks can be merged.
    """

    def __init__(self, num_groups: int) -> None:
        self.sums: list[StateDict | None] = [None] * num_groups
        self.weights = np.zeros(num_groups, dtype=np.float64)

    def add(self, group: int, state: Mapping[str, torch.Tensor], weight: float) -> None:
        """Fold one client's state into ``group`` with a non-negative weight."""
        if weight < 0:
            raise ValueError("aggregation weights must be non-negative")
        acc = self.sums[group]
        if acc is None:
            self.sums[group] = {
                k: (v.detach().to(torch.float64) * weight if v.is_floating_point() else v.detach().clone())
                for k, v in state.items()
            }
        else:
            for k, v in state.items():
                if v.is_floating_point():
                    acc[k].add_(v.detach().to(torch.float64), alpha=weight)
                else:
                    torch.maximum(acc[k], v.detach(), out=acc[k])
        self.weights[group] += weight

    def merge(self, other: GroupSums) -> None:
        """Add another partial (e.g. a later chunk's) into this one."""
        if len(other.sums) != len(self.sums):
            raise ValueError("cannot merge group sums over different numbers of groups")
        for g, part in enumerate(other.sums):
            if part is None:
                continue
            acc = self.sums[g]
            if acc is None:
                self.sums[g] = {k: v.clone() for k, v in part.items()}
                continue
            for k, v in part.items():
                if v.is_floating_point():
                    acc[k].add_(v)
                else:
                    torch.maximum(acc[k], v, out=acc[k])
        self.weights += other.weights

    def results(self, like: Mapping[str, torch.Tensor], device: torch.device) -> list[StateDict | None]:
        """Each group's weighted mean in ``like``'s dtypes on ``device``; None for groups without weight."""
        out: list[StateDict | None] = []
        for g, acc in enumerate(self.sums):
            total = float(self.weights[g])
            if acc is None or total <= 0:
                out.append(None)
                continue
            out.append(
                {
                    k: ((v / total) if like[k].is_floating_point() else v).to(
                        device=device, dtype=like[k].dtype
                    )
                    for k, v in acc.items()
                }
            )
        return out


def compact_cpu(t: torch.Tensor) -> torch.Tensor:
    """The tensor on the transport device, copied if it is a view so pickling never ships a larger storage."""
    t = t.detach().to(TRANSPORT_DEVICE)
    if t.untyped_storage().nbytes() != t.numel() * t.element_size() or not t.is_contiguous():
        t = t.clone(memory_format=torch.contiguous_format)
    return t


def data_to(data: ClientData, device: torch.device) -> ClientData:
    """Client data moved to ``device`` (no copy when already there)."""
    return ClientData(data.x.to(device), data.y.to(device), {k: v.to(device) for k, v in data.extra.items()})


def state_to(state: Mapping[str, torch.Tensor], device: torch.device) -> StateDict:
    return {k: v.to(device) for k, v in state.items()}


def data_key(data: ClientData) -> Hashable:
    """Identity of a client's tensors: storage address, layout and in-place version (``Tensor._version``).

    Changing a tensor in place bumps its version, so edited data is never served stale from the cache.
    """
    tensors = [("x", data.x), ("y", data.y), *sorted(data.extra.items())]
    return tuple(
        (name, t.data_ptr(), tuple(t.shape), tuple(t.stride()), str(t.dtype), str(t.device), t._version)
        for name, t in tensors
    )


def data_nbytes(data: ClientData) -> int:
    tensors = [data.x, data.y, *data.extra.values()]
    return int(sum(t.numel() * t.element_size() for t in tensors))


@dataclass(frozen=True)
class ChunkTask:
    """Everything a worker needs about one chunk besides the spec and start states (passed as ObjectRefs).

    The model factory and client data travel as nested ObjectRefs, which Ray does not fetch by itself: the
    worker fetches only what its own caches lack.
    """

    index: int
    arch_key: str
    model_ref: list[Any]  # [ObjectRef of model_fn]
    data_refs: list[Any]  # one ObjectRef of ClientData per client
    num_groups: int
    start_of: np.ndarray  # indices into this chunk's starts
    group_of: np.ndarray
    weights: np.ndarray
    seeds: np.ndarray
    batch_sizes: np.ndarray | None
    client_ids: np.ndarray | None
    keep_states: bool
    precision: str  # the driver's engine.precision policy, set in the worker before training
    grad_shift: list[StateDict] | None = None  # one per client of the chunk (Cohort.grad_shift), on the CPU


@dataclass
class ChunkResult:
    """One chunk's partial group sums and per-client work, states on the CPU when kept."""

    index: int
    sums: GroupSums
    samples: np.ndarray
    steps: np.ndarray
    train_loss: np.ndarray
    states: list[StateDict] | None
    node: str = ""  # Ray node id of the worker that trained it (the driver tracks where each worker runs)


@dataclass(frozen=True)
class InferTask:
    """One chunk of an inference call: its nodes' states and, unless every node shares one tensor (passed
    beside the task as an ObjectRef, put once per call), their inputs; all on the CPU."""

    index: int
    arch_key: str
    model_ref: list[Any]  # [ObjectRef of model_fn], fetched only by a worker that lacks it
    states: list[StateDict]
    inputs: list[torch.Tensor] | None  # one per node; None: the shared tensor beside the task
    precision: str  # the driver's engine.precision policy, set in the worker before inferring


@dataclass
class InferChunkResult:
    """One inference chunk's outputs, node by node, on the CPU."""

    index: int
    outputs: list[Outputs]
    node: str = ""  # Ray node id of the worker that inferred it


def _node_id() -> str:
    """The Ray node id (hex, as ``ray.nodes()`` reports it under ``NodeID``) this process runs on."""
    import ray

    return str(ray.get_runtime_context().get_node_id())


def _make_inner(inner: str, device: torch.device) -> Any:
    """The executor a worker runs (imported lazily, so workers only load what they use)."""
    if inner == "vmap":
        from edgelearn.engine.vmap import VmapExecutor

        return VmapExecutor(device, chunk_size=None)
    from edgelearn.engine.serial import SerialExecutor

    return SerialExecutor(device)


class ChunkWorker:
    """A Ray actor body: trains chunks of clients with an inner executor and returns partial sums."""

    def __init__(self, device_type: str, inner: str, threads: int, cache_bytes: int) -> None:
        torch.set_num_threads(max(1, threads))
        self.device = torch.device(device_type)
        self.inner = _make_inner(inner, self.device)
        self.cache_bytes = cache_bytes
        self._model_fns: dict[str, Any] = {}
        self._data: OrderedDict[str, ClientData] = OrderedDict()  # ObjectRef hex -> data on self.device
        self._data_bytes = 0

    def _client_data(self, refs: Sequence[Any]) -> list[ClientData]:
        """The clients' data on this worker's device: cached ones as they are, the rest in one fetch (LRU)."""
        import ray

        keys = [r.hex() for r in refs]
        missing = {k: r for k, r in zip(keys, refs) if k not in self._data}
        fetched = dict(zip(missing, ray.get(list(missing.values())))) if missing else {}
        out = []
        for k in keys:
            if k in fetched:
                data = data_to(fetched[k], self.device)
                nbytes = data_nbytes(data)
                if k not in self._data and nbytes <= self.cache_bytes:
                    self._data[k] = data
                    self._data_bytes += nbytes
            else:
                data = self._data[k]
                self._data.move_to_end(k)
            out.append(data)
        while self._data_bytes > self.cache_bytes:
            _, evicted = self._data.popitem(last=False)
            self._data_bytes -= data_nbytes(evicted)
        return out

    def pid(self) -> int:
        """This worker's process id (diagnostics and fault-injection tests)."""
        return os.getpid()

    def where(self) -> tuple[int, str]:
        """This worker's process id and Ray node id: the driver notes the node to detect the node's death."""
        return os.getpid(), _node_id()

    def _model_fn(self, arch_key: str, model_ref: list[Any]) -> Any:
        """The architecture's model factory, fetched from the object store once per architecture."""
        import ray

        if arch_key not in self._model_fns:
            self._model_fns[arch_key] = ray.get(model_ref[0])
        return self._model_fns[arch_key]

    def infer_chunk(self, task: InferTask, spec: InferSpec, *shared: torch.Tensor) -> InferChunkResult:
        """Infer the chunk's nodes with the inner executor; outputs back on the CPU (views made compact)."""
        set_precision(task.precision)
        own = task.inputs
        inputs = shared[0].to(self.device) if own is None else [x.to(self.device) for x in own]
        cohort = InferCohort(
            model_fn=self._model_fn(task.arch_key, task.model_ref),
            arch_key=task.arch_key,
            states=[state_to(s, self.device) for s in task.states],
            inputs=inputs,
        )
        result = self.inner.infer(cohort, spec)
        outputs = [tuple(compact_cpu(t) for t in node) for node in result.outputs]
        return InferChunkResult(task.index, outputs, _node_id())

    def train_chunk(self, task: ChunkTask, spec: LocalSpec, *starts: StateDict) -> ChunkResult:
        """Train the chunk's clients in batches of ``INNER_CLIENTS`` and sum their states per group."""
        set_precision(task.precision)
        model_fn = self._model_fn(task.arch_key, task.model_ref)
        on_device = [state_to(s, self.device) for s in starts]
        data = self._client_data(task.data_refs)
        n = len(data)
        sums = GroupSums(task.num_groups)
        samples = np.zeros(n, dtype=np.int64)
        steps = np.zeros(n, dtype=np.int64)
        losses = np.full(n, np.nan)
        kept: list[StateDict] | None = [] if task.keep_states else None
        for lo in range(0, n, INNER_CLIENTS):
            hi = min(n, lo + INNER_CLIENTS)
            sub = Cohort(
                model_fn=model_fn,
                arch_key=task.arch_key,
                data=data[lo:hi],
                starts=on_device,
                start_of=task.start_of[lo:hi],
                group_of=np.zeros(hi - lo, dtype=np.int64),
                num_groups=1,
                weights=task.weights[lo:hi],
                seeds=task.seeds[lo:hi],
                batch_sizes=None if task.batch_sizes is None else task.batch_sizes[lo:hi],
                keep_states=True,
                client_ids=None if task.client_ids is None else task.client_ids[lo:hi],
                grad_shift=None
                if task.grad_shift is None
                else [state_to(s, self.device) for s in task.grad_shift[lo:hi]],
            )
            res = self.inner.train(sub, spec)
            assert res.client_states is not None
            for j, state in enumerate(res.client_states):
                sums.add(int(task.group_of[lo + j]), state, float(task.weights[lo + j]))
                if kept is not None:
                    kept.append(state_to(state, TRANSPORT_DEVICE))
            samples[lo:hi], steps[lo:hi], losses[lo:hi] = res.samples, res.steps, res.train_loss
        return ChunkResult(task.index, sums, samples, steps, losses, kept, _node_id())
