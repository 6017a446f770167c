"""Inference through the executors: every node model of one architecture run on its inputs, without gradients.

``executor.infer(cohort, spec)`` is the no-grad counterpart of ``executor.train``: an :class:`InferCohort`
holds same-architecture node models (one state each) and their inputs (one tensor per node, or one tensor
all nodes share), an :class:`InferSpec` the batch size and the output function (:data:`OutputFn`: what to
compute from the module and a batch, such as its logits, its predicted classes or a split model's features).
Every node runs in eval mode (BatchNorm uses its running statistics, dropout is the identity), without
gradients, under the process's precision policy (:func:`~edgelearn.engine.precision.autocast`), in
consecutive batches of ``spec.batch_size`` of its samples; low-precision floating outputs come back as
float32, as :func:`edgelearn.algorithms.kit.distill.teacher_logits` hands them on. The result holds each
node's outputs in cohort order (:class:`InferResult`).

Why: evaluating many node models, teachers' logits and feature extraction used to loop over nodes by hand in
the algorithms, one model after another. Through the executor the vmap executor runs the models of a chunk
of nodes at once (:mod:`edgelearn.engine.vmap_infer`) and Ray spreads chunks of nodes over its workers, while
the serial executor (:func:`infer_serial`) does exactly what those loops did, so a run pinned to it keeps its
bits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgelearn.engine.evaluate import eval_batch_size
from edgelearn.engine.precision import autocast
from edgelearn.engine.state import StateDict

Outputs = tuple[torch.Tensor, ...]
"""One node's outputs: one tensor per output of the output function, the node's samples on dim 0."""

OutputFn = Callable[[nn.Module, torch.Tensor], torch.Tensor | Outputs]
"""What inference computes: ``fn(module, batch)`` with the module loaded with a node's state (eval mode, no
gradients) returns one tensor, or a tuple of tensors, with the batch's samples on dim 0. Pure torch ops of
the module and the batch only, so the vmap executor can run it under ``torch.func.vmap``."""

_LOW_PRECISION = (torch.float16, torch.bfloat16)
"""Floating dtypes autocast may produce; outputs in them are handed back as float32."""


def logits(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The default output: the module's forward (a classifier's logits)."""
    return module(x)


def predictions(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The predicted class of each sample (int64): the argmax of the logits, the same whether the logits are
    float32 or a low-precision dtype (converting them to float32 is exact and keeps their order)."""
    return module(x).argmax(dim=1)


@dataclass
class InferCohort:
    """Same-architecture node models and their inputs, inferred in one executor call.

    ``states[i]`` is node i's state; ``inputs`` is one tensor per node (any number of samples each, zero
    included) or a single tensor every node infers on (a shared test set, which the vmap executor then reads
    once per batch instead of once per node). ``arch_key`` names the architecture ``model_fn`` builds, as in
    :class:`~edgelearn.engine.cohort.Cohort`.
    """

    model_fn: Callable[[], nn.Module]
    arch_key: str
    states: Sequence[StateDict]
    inputs: torch.Tensor | Sequence[torch.Tensor]

    def __post_init__(self) -> None:
        if not self.shared and len(self.inputs) != len(self.states):
            raise ValueError(
                f"InferCohort.inputs must hold one tensor per node ({len(self.states)}) or be one shared "
                f"tensor, got {len(self.inputs)} tensors"
            )

    def __len__(self) -> int:
        return len(self.states)

    @property
    def shared(self) -> bool:
        """True when every node infers on the same tensor."""
        return isinstance(self.inputs, torch.Tensor)

    def input_of(self, i: int) -> torch.Tensor:
        """Node i's inputs."""
        return self.inputs if isinstance(self.inputs, torch.Tensor) else self.inputs[i]

    def sizes(self) -> np.ndarray:
        """Number of input samples of every node (int64)."""
        return np.fromiter(
            (int(self.input_of(i).shape[0]) for i in range(len(self))), dtype=np.int64, count=len(self)
        )

    def sample_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the inputs (the nodes' tensors must share it)."""
        first = self.input_of(0) if len(self) else torch.zeros(0)
        return tuple(int(s) for s in first.shape[1:])

    def subset(self, lo: int, hi: int) -> InferCohort:
        """Nodes ``lo``..``hi - 1`` as a cohort of their own (a shared input stays shared)."""
        inputs = self.inputs if isinstance(self.inputs, torch.Tensor) else self.inputs[lo:hi]
        return InferCohort(self.model_fn, self.arch_key, self.states[lo:hi], inputs)


@dataclass(frozen=True)
class InferSpec:
    """How to infer: ``batch_size`` samples per forward pass of a node (None: the device's evaluation
    default, :func:`~edgelearn.engine.evaluate.eval_batch_size`) and the output function."""

    batch_size: int | None = None
    output: OutputFn = logits


@dataclass
class InferResult:
    """Each node's outputs in cohort order: ``outputs[i][k]`` is output k of node i over all its samples."""

    outputs: list[Outputs]

    def __len__(self) -> int:
        return len(self.outputs)

    def output(self, k: int = 0) -> list[torch.Tensor]:
        """Output ``k`` of every node (the only one for an output function that returns a tensor)."""
        return [node[k] for node in self.outputs]


def as_outputs(value: torch.Tensor | Outputs, samples: int) -> Outputs:
    """An output function's value as a tuple of tensors, each checked to hold ``samples`` rows."""
    out = (value,) if isinstance(value, torch.Tensor) else tuple(value)
    for t in out:
        if not isinstance(t, torch.Tensor) or t.dim() == 0 or t.shape[0] != samples:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(
                f"an inference output function returned {shape} for a batch of {samples} samples: each "
                "output must be a tensor with the batch's samples on dim 0"
            )
    return out


def to_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` as float32 when autocast left it in a low-precision dtype, else unchanged."""
    return t.float() if t.dtype in _LOW_PRECISION else t


def template_module(model_fn: Callable[[], nn.Module], device: torch.device) -> nn.Module:
    """A module of the architecture for inference, in eval mode, built without shifting the caller's torch
    RNG (building a model draws its initial weights; a state is loaded over them before every use)."""
    with torch.random.fork_rng(devices=[]):
        module = model_fn().to(device)
    return module.eval()


@torch.no_grad()
def empty_outputs(
    module: nn.Module, fn: OutputFn, sample_shape: Sequence[int], device: torch.device
) -> Outputs:
    """Zero-row outputs of ``fn`` (the shapes and dtypes a node without samples gets): ``fn`` run on one
    zero sample in eval mode, under the precision policy, then cut to no rows."""
    module.eval()
    with autocast(device):
        probe = as_outputs(fn(module, torch.zeros((1, *sample_shape), device=device)), 1)
    return tuple(to_float32(t)[:0] for t in probe)


def fill_empty(outputs: list[Outputs | None], probe: Callable[[], Outputs]) -> list[Outputs]:
    """``outputs`` with each missing entry (a node without samples) replaced by zero-row outputs shaped like a
    node's that has some, or, when none has, like ``probe()``'s."""
    like = next((o for o in outputs if o is not None), None)
    if like is None and outputs:
        like = probe()
    return [o if o is not None else tuple(t[:0] for t in like) for o in outputs]  # type: ignore[union-attr]


@torch.no_grad()
def infer_serial(
    module: nn.Module, cohort: InferCohort, spec: InferSpec, device: torch.device
) -> InferResult:
    """Every node in turn: ``module`` loaded with its state, eval mode, consecutive batches of its inputs
    under the precision policy, each output concatenated over the batches (float32 for low-precision floats).

    Exactly the arithmetic of :func:`~edgelearn.algorithms.kit.distill.teacher_logits` and
    :func:`~edgelearn.engine.evaluate.prediction_totals` (same batches, same module code), so the algorithms
    that used those loops keep their bits on the serial executor.
    """
    batch = eval_batch_size(spec.batch_size, device)
    module.eval()
    shared = cohort.inputs.to(device) if isinstance(cohort.inputs, torch.Tensor) else None
    outputs: list[Outputs | None] = []
    for i, state in enumerate(cohort.states):
        module.load_state_dict(state)
        x = shared if shared is not None else cohort.input_of(i).to(device)
        parts: list[Outputs] = []
        for lo in range(0, x.shape[0], batch):
            chunk = x[lo : lo + batch]
            with autocast(device):
                parts.append(tuple(to_float32(t) for t in as_outputs(spec.output(module, chunk), len(chunk))))
        outputs.append(_concat(parts) if parts else None)
    return InferResult(
        fill_empty(outputs, lambda: empty_outputs(module, spec.output, cohort.sample_shape(), device))
    )


def _concat(parts: Sequence[Outputs]) -> Outputs:
    """Per output, the batches' tensors concatenated along the samples (a single batch is kept as it is)."""
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat(column) for column in zip(*parts))
