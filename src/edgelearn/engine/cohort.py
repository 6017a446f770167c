"""What an algorithm hands an executor: same-architecture clients, their data and where they start."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgelearn.engine.batches import Schedules, batch_schedules
from edgelearn.engine.state import StateDict


@dataclass(frozen=True)
class ClientData:
    """One client's local samples, already on the compute device.

    ``extra`` holds per-sample tensors aligned with ``x`` (first dimension = number of samples), such as
    FedAgg's bridge samples and teacher logits; batches index them with the same indices as ``x``.
    """

    x: torch.Tensor
    y: torch.Tensor
    extra: Mapping[str, torch.Tensor] = field(default_factory=dict)
    _length: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        """Cache the sample count: cohorts ask every client's size several times a round."""
        object.__setattr__(self, "_length", int(self.y.shape[0]))

    def __len__(self) -> int:
        return self._length

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The samples at ``index``: keys ``x``, ``y`` and every extra tensor."""
        out = {"x": self.x[index], "y": self.y[index]}
        out.update({k: v[index] for k, v in self.extra.items()})
        return out


# apply(inputs) -> logits of the model being trained; batch holds x, y and the client's extra tensors.
# Returns the PER-SAMPLE loss, shape (batch,): executors average it (masking padded samples when vectorized).
LossFn = Callable[[Callable[[torch.Tensor], torch.Tensor], Mapping[str, torch.Tensor]], torch.Tensor]


def cross_entropy_loss(
    apply: Callable[[torch.Tensor], torch.Tensor], batch: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """The default local objective: per-sample cross-entropy of the model's logits.

    Written as ``-log_softmax(logits)[y]``, equal to ``F.cross_entropy(..., reduction="none")`` bit for bit,
    forward and backward (tested), including autocast's float32 upcast of low-precision logits. Under
    ``vmap`` ``F.cross_entropy`` runs a Python decomposition whose first call imports torch's symbolic-shape
    stack (SymPy, about 0.3 s of start-up); ``log_softmax`` and ``gather`` have native batching rules.
    """
    logits = apply(batch["x"])
    if logits.dtype in _LOW_PRECISION and torch.is_autocast_enabled(logits.device.type):
        logits = logits.float()  # autocast runs cross_entropy in float32
    return -F.log_softmax(logits, dim=1).gather(1, batch["y"].unsqueeze(1)).squeeze(1)


_LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class LocalSpec:
    """Local SGD for this call: ``epochs`` passes or ``steps`` mini-batch steps per client.

    ``loss`` is the objective (pure torch ops only, so vectorized executors can run it under vmap);
    ``prox_mu`` adds FedProx's (mu/2)||w - w_start||^2.
    """

    lr: float
    batch_size: int
    epochs: int | None = 1
    steps: int | None = None
    momentum: float = 0.0
    weight_decay: float = 0.0
    loss: LossFn = cross_entropy_loss
    prox_mu: float = 0.0


@dataclass
class Cohort:
    """Clients sharing one architecture, trained in one executor call.

    ``starts[start_of[i]]`` is client i's initial state; its final state is folded into the weighted mean of
    group ``group_of[i]`` with weight ``weights[i]``. FedAvg uses one start and one group; HierFAVG one per
    edge; algorithms that keep a model per device set ``keep_states`` (and usually one start per client).
    ``batch_sizes`` overrides the spec's batch size per client (two-stage plans); ``seeds`` fix each
    client's batch order so every executor draws the same batches.

    ``grad_shift`` (optional, one mapping per client) is added to client i's gradient of the named trainable
    parameters at every local step, after the loss (and proximal) gradient and before weight decay and
    momentum: the client descends ``loss(w) + <shift, w>``. SCAFFOLD's drift correction ``c - c_i``
    (Karimireddy et al., ICML 2020) is such a shift; a parameter a mapping does not name is not shifted.
    Executors check the names against the model's trainable parameters (:func:`check_grad_shift`).
    """

    model_fn: Callable[[], nn.Module]
    arch_key: str
    data: Sequence[ClientData]
    starts: Sequence[StateDict]
    start_of: np.ndarray
    group_of: np.ndarray
    num_groups: int
    weights: np.ndarray
    seeds: np.ndarray
    batch_sizes: np.ndarray | None = None
    keep_states: bool = False
    client_ids: np.ndarray | None = field(default=None)
    grad_shift: Sequence[Mapping[str, torch.Tensor]] | None = None

    def __post_init__(self) -> None:
        n = len(self.data)
        for name in ("start_of", "group_of", "weights", "seeds"):
            arr = np.asarray(getattr(self, name))
            if arr.shape != (n,):
                raise ValueError(f"Cohort.{name} must have one entry per client ({n}), got shape {arr.shape}")
            setattr(self, name, arr)
        if self.batch_sizes is not None:
            self.batch_sizes = np.asarray(self.batch_sizes)
            if self.batch_sizes.shape != (n,):
                raise ValueError("Cohort.batch_sizes must have one entry per client")
        if n and (self.group_of.min() < 0 or self.group_of.max() >= self.num_groups):
            raise ValueError("Cohort.group_of must index groups 0..num_groups-1")
        if n and (self.start_of.min() < 0 or self.start_of.max() >= len(self.starts)):
            raise ValueError("Cohort.start_of must index Cohort.starts")
        if self.grad_shift is not None and len(self.grad_shift) != n:
            raise ValueError(
                f"Cohort.grad_shift must have one mapping per client ({n}), got {len(self.grad_shift)}; "
                "give an empty mapping for a client without a shift"
            )

    def __len__(self) -> int:
        return len(self.data)

    def batch_size_of(self, i: int, spec: LocalSpec) -> int:
        """Client i's batch size: the per-client override or the spec's."""
        return int(self.batch_sizes[i]) if self.batch_sizes is not None else spec.batch_size

    def sizes(self) -> np.ndarray:
        """Number of local samples of every client (int64)."""
        return np.fromiter((len(d) for d in self.data), dtype=np.int64, count=len(self.data))

    def schedules(self, spec: LocalSpec) -> Schedules:
        """Every client's batch order for ``spec``, built at once; the same batches in every executor."""
        return batch_schedules(
            self.sizes(),
            self.batch_sizes if self.batch_sizes is not None else spec.batch_size,
            self.seeds,
            epochs=spec.epochs,
            steps=spec.steps,
        )


def check_grad_shift(
    shift: Mapping[str, torch.Tensor], trainable: Mapping[str, torch.Tensor], i: int
) -> None:
    """Raise a ValueError unless every name of client ``i``'s ``shift`` is a trainable parameter of the model
    (``trainable``: name -> parameter) with that parameter's shape."""
    for name, value in shift.items():
        if name not in trainable:
            raise ValueError(
                f"Cohort.grad_shift[{i}] names {name!r}, which is not a trainable parameter of the model; "
                f"shift only these: {', '.join(trainable)}"
            )
        if tuple(value.shape) != tuple(trainable[name].shape):
            raise ValueError(
                f"Cohort.grad_shift[{i}][{name!r}] has shape {tuple(value.shape)}, the parameter "
                f"{tuple(trainable[name].shape)}"
            )


@dataclass
class CohortResult:
    """What came back: per-group weighted means, optional per-client states, and per-client work done."""

    group_states: list[StateDict | None]
    client_states: list[StateDict] | None
    samples: np.ndarray  # samples processed per client (forward+backward), for FLOP accounting
    steps: np.ndarray  # SGD steps per client
    train_loss: np.ndarray  # mean training loss per client (nan for clients without data)
