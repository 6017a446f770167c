"""Vmapped inference: the node models of a chunk run at once, one ``torch.func.vmap`` forward per batch.

The vmap executor's ``infer`` (:mod:`edgelearn.engine.infer` describes the operation). The states of a
chunk of nodes are stacked on dim 0 (parameters and buffers alike: BatchNorm's running statistics are
buffers, which eval mode only reads) and every node's batch ``t`` (its samples ``t * batch_size`` onwards, as
the serial executor cuts them) goes through one vmapped ``functional_call`` of the output function. Nodes
are sorted by their number of samples, so those that still have a batch ``t`` are a prefix of the chunk; a
node's last, shorter batch is padded with copies of its last sample, whose outputs are dropped (in eval mode
no sample sees another: BatchNorm normalizes with its running statistics). A tensor every node shares is not
copied per node: vmap reads the same batch for all of them.

Under a low-precision policy the vmapped function is wrapped in ``torch.func.functionalize``: autocast does
not reach a plain vmapped forward of batched weights (it stays float32), but it does reach the ops of a
functionalized one, so the outputs round as the serial executor's do (within a unit of the low-precision
dtype's last place). Models with BatchNorm then infer serially: vmap's batch-norm rule rejects a
low-precision input with float32 running statistics, which autocast hands it.

Results equal the serial executor's up to float32 summation order (batched matrix products and convolutions
group their sums differently from per-model ones). Models whose eval-mode forward the lockstep path cannot
reproduce fall back to the serial executor (:func:`infer_unsupported_reason`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, functionalize, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from edgelearn.engine.evaluate import eval_batch_size
from edgelearn.engine.footprint import activation_bytes_per_sample, has_tied_parameters
from edgelearn.engine.infer import (
    InferCohort,
    InferResult,
    InferSpec,
    OutputFn,
    Outputs,
    as_outputs,
    empty_outputs,
    fill_empty,
    template_module,
    to_float32,
)
from edgelearn.engine.precision import autocast, current_precision
from edgelearn.engine.vmap_norm import overridden_batchnorm
from edgelearn.errors import ConfigError

log = logging.getLogger(__name__)

CPU_INFER_BUDGET_BYTES = 256 << 20
"""Working memory one chunk of nodes may use on a CPU (or any non-CUDA) device: 256 MiB, the vmap training
budget (:data:`edgelearn.engine.vmap.CPU_MEMORY_BUDGET_BYTES`), whose measurement holds here too: past the
caches bigger chunks only cost memory."""
CUDA_INFER_FREE_FRACTION = 0.5
"""Share of a CUDA device's free memory one chunk may use (the rest: the inputs, the outputs kept so far and
allocator fragmentation)."""
STATE_COPIES = 1
"""Stacked state copies alive per node during a chunk: the stacked parameters and buffers (no gradients,
momentum or anchors, unlike training)."""
ACTIVATION_COPIES = 2
"""Per-sample activation multiplier: without gradients a layer's input and output are alive at once, and the
sum over every leaf's output (what is measured) already bounds them; 2 covers batching temporaries."""

Forward = Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor | Outputs]
"""A vmapped output function: (stacked states, batch) -> outputs stacked per node."""


def infer_unsupported_reason(module: nn.Module) -> str | None:
    """Why the eval-mode forward of ``module`` cannot run vmapped with results equal to serial, or None."""
    for name, sub in module.named_modules():
        where = name or type(module).__name__
        if overridden_batchnorm(sub):
            return f"{where} is {type(sub).__name__}: a BatchNorm with its own forward"
        if isinstance(sub, _BatchNorm) and not sub.track_running_stats:
            return f"{where} has no running statistics: in eval mode it normalizes with the (padded) batch's"
        if isinstance(sub, nn.modules.instancenorm._InstanceNorm) and sub.track_running_stats:
            return f"{where} is {type(sub).__name__} with running statistics"
    if has_tied_parameters(module):
        return "the model has tied (shared) parameters"
    return None


def infer_budget(device: torch.device) -> int:
    """Bytes one chunk of nodes may use on ``device``."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * CUDA_INFER_FREE_FRACTION)
    return CPU_INFER_BUDGET_BYTES


class _Applied(nn.Module):
    """The output function as a module's forward, so ``functional_call`` swaps the node's state in: the
    template is registered as ``model``, its state keys prefixed ``model.``."""

    def __init__(self, model: nn.Module, fn: OutputFn) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor | Outputs:
        """``fn`` of the model (carrying the swapped-in state) on ``x``."""
        return self.fn(self.model, x)


class VmapInference:
    """Infers a cohort chunk by chunk, each chunk's nodes in one vmapped forward per batch (module docstring).

    ``chunk_size`` bounds the nodes stacked at once (the executor's ``engine.vmap_chunk``); None sizes chunks
    from :func:`infer_budget`. ``fallback`` infers the cohorts this path cannot (the serial executor's
    ``infer``), logged once per architecture.
    """

    def __init__(
        self,
        device: torch.device,
        fallback: Callable[[InferCohort, InferSpec], InferResult],
        chunk_size: int | None = None,
    ) -> None:
        self.device = device
        self.fallback = fallback
        self.chunk_size = chunk_size
        self._templates: dict[str, nn.Module] = {}
        self._reasons: dict[str, str | None] = {}
        self._logged: set[str] = set()

    def template(self, cohort: InferCohort) -> nn.Module:
        """The architecture's eval-mode template module (its own values are never used)."""
        module = self._templates.get(cohort.arch_key)
        if module is None:
            module = self._templates[cohort.arch_key] = template_module(cohort.model_fn, self.device)
        return module

    def unsupported_reason(self, cohort: InferCohort) -> str | None:
        """Why this cohort's model falls back to serial inference under the current precision policy, or
        None (the model's own reasons are cached per architecture)."""
        if cohort.arch_key not in self._reasons:
            self._reasons[cohort.arch_key] = infer_unsupported_reason(self.template(cohort))
        reason = self._reasons[cohort.arch_key]
        if reason is None and current_precision() != "float32":
            if any(isinstance(m, _BatchNorm) for m in self.template(cohort).modules()):
                return (
                    f"engine.precision is {current_precision()} and the model has BatchNorm, whose batching "
                    "rule rejects autocast's mixed dtypes (low-precision activations, float32 statistics)"
                )
        return reason

    @torch.no_grad()
    def infer(self, cohort: InferCohort, spec: InferSpec) -> InferResult:
        """Every node's outputs, chunk by chunk of nodes sorted by their number of samples."""
        n = len(cohort)
        if n == 0:
            return InferResult([])
        reason = self.unsupported_reason(cohort)
        if reason is not None:
            if cohort.arch_key not in self._logged:
                self._logged.add(cohort.arch_key)
                log.info("vmap executor: inferring %s serially because %s", cohort.arch_key, reason)
            return self.fallback(cohort, spec)
        module = self.template(cohort)
        expected = set(module.state_dict())
        for j, state in enumerate(cohort.states):
            if set(state) != expected:
                raise ValueError(
                    f"InferCohort.states[{j}] does not match the model's state: missing "
                    f"{sorted(expected - set(state))}, unexpected {sorted(set(state) - expected)}"
                )
        batch = eval_batch_size(spec.batch_size, self.device)
        sizes = cohort.sizes()
        order = np.argsort(-sizes, kind="stable")
        forward = self._forward(module, spec.output, shared=cohort.shared)
        size = self.chunk_size or self.auto_chunk_size(cohort, spec, batch)
        outputs: list[Outputs | None] = [None] * n
        shared = cohort.inputs.to(self.device) if isinstance(cohort.inputs, torch.Tensor) else None
        for begin in range(0, n, size):
            members = order[begin : begin + size]
            if sizes[members[0]] == 0:
                break  # sorted: every node left has no samples
            parts = self._chunk(forward, cohort, members, sizes[members], batch, shared)
            for i, node_parts in zip(members.tolist(), parts):
                if node_parts:
                    outputs[i] = node_parts[0] if len(node_parts) == 1 else _cat(node_parts)
        sample_shape = cohort.sample_shape()
        return InferResult(
            fill_empty(outputs, lambda: empty_outputs(module, spec.output, sample_shape, self.device))
        )

    def auto_chunk_size(self, cohort: InferCohort, spec: InferSpec, batch: int) -> int:
        """Largest number of nodes whose stacked states, activations and own inputs fit
        :func:`infer_budget`."""
        module = self.template(cohort)
        state_bytes = sum(v.numel() * v.element_size() for v in cohort.states[0].values())
        sizes = cohort.sizes()
        widest = int(sizes.max()) if len(sizes) else 0
        first = cohort.input_of(int(np.argmax(sizes))) if len(sizes) else None
        if first is None or widest == 0:
            return max(1, len(cohort))
        sample = first[:1].to(self.device)
        per_sample_input = sample.numel() * sample.element_size()
        per_node = (
            STATE_COPIES * state_bytes
            + ACTIVATION_COPIES
            * min(batch, widest)
            * activation_bytes_per_sample(module, sample, spec.output)
            + (0 if cohort.shared else widest * per_sample_input)
        )
        return int(max(1, min(len(cohort), infer_budget(self.device) // max(1, per_node))))

    def _forward(self, module: nn.Module, fn: OutputFn, *, shared: bool) -> Forward:
        """The vmapped ``fn`` over (stacked states, batch): the batch shared by all nodes or one per node;
        functionalized under a low-precision policy (module docstring)."""
        applied = _Applied(module, fn).eval()

        def one(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor | Outputs:
            return functional_call(applied, state, (x,))

        inner = one if current_precision() == "float32" else functionalize(one)
        return vmap(inner, in_dims=(0, None if shared else 0))

    def _chunk(
        self,
        forward: Forward,
        cohort: InferCohort,
        members: np.ndarray,
        counts: np.ndarray,
        batch: int,
        shared: torch.Tensor | None,
    ) -> list[list[Outputs]]:
        """Each member's outputs batch by batch (members sorted by sample count, descending)."""
        keys = list(cohort.states[int(members[0])])
        state = {
            f"model.{k}": torch.stack([cohort.states[int(i)][k].to(self.device) for i in members])
            for k in keys
        }
        data, offsets = (shared, None) if shared is not None else self._concat(cohort, members, counts)
        count_t = torch.as_tensor(counts, device=self.device)
        parts: list[list[Outputs]] = [[] for _ in members]
        horizon = int(counts[0])
        for lo in range(0, horizon, batch):
            active = int((counts > lo).sum())
            width = min(batch, horizon - lo)
            if offsets is None:
                x = data[lo : lo + width]
            else:
                span = torch.arange(lo, lo + width, device=self.device)
                rows = offsets[:active, None] + torch.minimum(span[None, :], count_t[:active, None] - 1)
                x = data.index_select(0, rows.reshape(-1)).view(active, width, *data.shape[1:])
            with autocast(self.device):
                value = forward({k: v[:active] for k, v in state.items()}, x)
            out = tuple(to_float32(t) for t in _per_node(value, active, width))
            for j in range(active):
                real = min(width, int(counts[j]) - lo)
                parts[j].append(tuple(t[j, :real] for t in out))
        return parts

    def _concat(
        self, cohort: InferCohort, members: np.ndarray, counts: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The members' inputs concatenated along the samples, and where each member's rows begin."""
        parts = [cohort.input_of(int(i)).to(self.device) for i in members]
        try:
            data = torch.cat(parts)
        except RuntimeError as exc:
            raise ConfigError(
                f"inference inputs of one cohort differ in per-sample shape or dtype: {exc}",
                hint="give every node of an InferCohort inputs of the same per-sample shape",
            ) from exc
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        return data, torch.as_tensor(starts, device=self.device)


def _per_node(value: torch.Tensor | Outputs, nodes: int, width: int) -> Outputs:
    """The vmapped output function's value as a tuple, each tensor checked to be (nodes, width, ...)."""
    out = (value,) if isinstance(value, torch.Tensor) else tuple(value)
    for t in out:
        as_outputs(t[0] if t.dim() else t, width)
        if t.shape[0] != nodes:
            raise ValueError(f"vmapped inference returned {tuple(t.shape)} for {nodes} nodes")
    return out


def _cat(parts: Sequence[Outputs]) -> Outputs:
    """Per output, a node's batches concatenated along the samples."""
    return tuple(torch.cat(column) for column in zip(*parts))
