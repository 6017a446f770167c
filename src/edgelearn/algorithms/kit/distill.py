"""Knowledge-distillation losses and teacher inference shared by FedAgg, FedGKT, FedDKC and plugins.

``kd_per_sample`` is the official FedAgg code's ``KL_Loss(T)`` (github.com/wuzhiyuan2000/FedAgg,
``utils.py``) per sample: ``T^2 * sum_c p_c (log p_c - log q_c)`` with ``q = softmax(s / T)`` and
``p = softmax(z / T) + 1e-7``; its mean over a batch equals PyTorch's ``KLDivLoss(reduction="batchmean")``
times ``T^2``, i.e. KL(teacher || student). The loss factories return per-sample losses (shape (B,), pure
torch ops) as the engine's :data:`~edgelearn.engine.LossFn` contract asks, so any executor (serial or vmap)
can run them.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgelearn.engine.cohort import LossFn
from edgelearn.engine.precision import autocast
from edgelearn.engine.threads import usable_cores

KD_EPS = 1e-7
"""Added to the teacher's softened probabilities (official code, ``utils.KL_Loss``)."""

BRIDGE_KEY = "bridge"
"""Extra-tensor key of a leaf's bridge samples, aligned with its real samples."""
TEACHER_KEY = "teacher"
"""Extra-tensor key of the teacher's logits, aligned with the samples the student sees on the bridge."""

TEACHER_BATCH_SIZE = 128
"""Default samples per no-grad teacher forward pass: large enough to amortize per-call overhead, small
enough to stay in cache (on a 1-thread CPU, 1024-sample batches were up to 3x slower per sample for 28x28
ResNets)."""

PREFETCH_WORKERS = 1
"""Background threads of a :class:`LogitCache`: one, so prefetched teachers run one after another and each
worker-owned module is used by one thread only."""

Apply = Callable[[torch.Tensor], torch.Tensor]


def kd_per_sample(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """Per-sample ``T^2 * KL(softmax(z/T) + 1e-7 || softmax(s/T))``; the teacher side is detached."""
    log_q = F.log_softmax(student_logits / T, dim=1)
    p = F.softmax(teacher_logits.detach() / T, dim=1) + KD_EPS
    return (T * T) * (p * (torch.log(p) - log_q)).sum(dim=1)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """Batch-mean KD loss (the official ``KL_Loss(T)``): the mean of :func:`kd_per_sample`."""
    return kd_per_sample(student_logits, teacher_logits, T).mean()


def ce_kd_loss(
    ce_weight: float,
    kd_weight: float,
    T: float,
    kd: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] = kd_per_sample,
    key: str = TEACHER_KEY,
) -> LossFn:
    """Per-sample ``ce_weight * CE(s, y) + kd_weight * kd(s, batch[key], T)``: by default KD_T towards the
    batch's ``teacher`` logits (FedDKC passes its refined target probabilities instead)."""

    def loss(
        apply: Callable[[torch.Tensor], torch.Tensor], batch: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        logits = apply(batch["x"])
        ce = F.cross_entropy(logits, batch["y"], reduction="none")
        return ce_weight * ce + kd_weight * kd(logits, batch[key], T)

    return loss


def kd_to_targets(student_logits: torch.Tensor, targets: torch.Tensor, T: float) -> torch.Tensor:
    """Per-sample ``T^2 * KL(targets || softmax(s / T))`` for given target probabilities (0 log 0 = 0)."""
    log_q = F.log_softmax(student_logits / T, dim=1)
    t = targets.detach()
    return (T * T) * (torch.special.xlogy(t, t) - t * log_q).sum(dim=1)


def non_leaf_loss(beta: float, T: float) -> Callable[[Apply, Mapping[str, torch.Tensor]], torch.Tensor]:
    """Eq. (2) of FedAgg: ``CE(s, y) + beta * KD_T(s, z)`` on bridge samples ``x`` with teacher logits
    ``teacher`` (FedGKT's client loss too)."""
    return ce_kd_loss(1.0, beta, T)


def leaf_loss(
    gamma: float, beta_leaf: float, T: float, *, joint_forward: bool = True
) -> Callable[[Apply, Mapping[str, torch.Tensor]], torch.Tensor]:
    """Eq. (4): ``CE(f(x), y) + gamma * [CE(f(b), y) + beta_leaf * KD_T(f(b), z)]`` per real sample.

    ``x`` is the real sample, ``bridge`` its bridge sample dec(enc(x)) and ``teacher`` the parent's logits on
    it (same row = same image, as in the official code). ``joint_forward`` runs real and bridge samples in
    one forward pass (identical for models without batch statistics, e.g. GroupNorm ResNets and the small
    CNN); set it False for BatchNorm models to keep the two passes' statistics apart, as the demo does.
    """

    def loss(apply: Apply, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x, bridge, y = batch["x"], batch[BRIDGE_KEY], batch["y"]
        if joint_forward:
            logits = apply(torch.cat([x, bridge], dim=0))
            real, fake = logits[: x.shape[0]], logits[x.shape[0] :]
        else:
            real, fake = apply(x), apply(bridge)
        ce_real = F.cross_entropy(real, y, reduction="none")
        ce_fake = F.cross_entropy(fake, y, reduction="none")
        return ce_real + gamma * (ce_fake + beta_leaf * kd_per_sample(fake, batch[TEACHER_KEY], T))

    return loss


@torch.no_grad()
def teacher_logits(
    module: nn.Module,
    x: torch.Tensor,
    *,
    batch_size: int = TEACHER_BATCH_SIZE,
    train_mode: bool = False,
) -> torch.Tensor:
    """Logits of ``module`` on ``x`` without gradients, in chunks of ``batch_size``.

    Eval mode by default. ``train_mode`` reproduces the official demo's quirk (teachers in train mode, so
    BatchNorm uses batch statistics and updates its running buffers in place); the caller then passes the
    student's batch size and saves the module's buffers back.
    """
    if x.shape[0] == 0:
        raise ValueError("teacher_logits needs at least one sample")
    module.train(train_mode)
    with autocast(x.device):  # engine.precision; the logits sent on are float32 either way
        parts = [module(x[i : i + batch_size]).float() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(parts, dim=0)


@dataclass
class _Entry:
    """Logits of one teacher on ``rows``, from the state object ``state`` (a tensor, or a pending future)."""

    state: object
    rows: tuple[int, ...]
    value: torch.Tensor | Future[tuple[torch.Tensor, float]]


class LogitCache:
    """Teachers' no-grad logits, memoized while the teacher's state object stays the same, and optionally
    computed ahead of time by a background thread.

    Keys are (teacher, rows): the latest logits of each teacher on a tuple of data rows, valid only while the
    caller's state *object* for that teacher is the one they were computed from (``is``): callers replace a
    trained model's state with a new object and never mutate it in place, so a changed model never hits.
    A background computation (:meth:`prefetch`) runs :func:`teacher_logits` with the same batch size on a
    worker-owned copy of the module, so it returns exactly what a foreground call would.
    """

    def __init__(self, *, batch_size: int, background: bool) -> None:
        self.batch_size = int(batch_size)
        self._entries: dict[Hashable, _Entry] = {}
        self._modules: dict[Hashable, nn.Module] = {}
        self._pool = (
            ThreadPoolExecutor(PREFETCH_WORKERS, thread_name_prefix="edgelearn-teacher")
            if background
            else None
        )

    @property
    def background(self) -> bool:
        """Whether :meth:`prefetch` computes in a background thread (else it does nothing)."""
        return self._pool is not None

    def lookup(
        self, teacher: Hashable, state: object, rows: tuple[int, ...]
    ) -> tuple[torch.Tensor, float] | None:
        """The cached logits and the background seconds they took (0 if computed in the foreground), waiting
        for a pending prefetch; None when the teacher's entry is for another state or other rows."""
        entry = self._entries.get(teacher)
        if entry is None or entry.state is not state or entry.rows != rows:
            return None
        if isinstance(entry.value, Future):
            logits, seconds = entry.value.result()
            entry.value = logits
            return logits, seconds
        return entry.value, 0.0

    def store(self, teacher: Hashable, state: object, rows: tuple[int, ...], logits: torch.Tensor) -> None:
        """Remember ``teacher``'s logits on ``rows`` from ``state``, replacing its previous entry."""
        self._entries[teacher] = _Entry(state, rows, logits)

    def prefetch(
        self,
        teacher: Hashable,
        state: Mapping[str, torch.Tensor],
        rows: tuple[int, ...],
        arch: Hashable,
        template: Callable[[], nn.Module],
        inputs: Callable[[], torch.Tensor],
    ) -> bool:
        """Start computing ``teacher``'s logits on ``inputs()`` (the samples of ``rows``) from ``state`` in
        the background, unless that entry exists already; True if a computation was started.

        The first time architecture ``arch`` is seen, the worker gets its own deep copy of ``template()``
        (made here, in the calling thread, so no random initialization runs concurrently); it loads
        ``state`` into that copy before each use. ``inputs`` is called here too, only when a computation
        starts.
        """
        if self._pool is None:
            return False
        entry = self._entries.get(teacher)
        if entry is not None and entry.state is state and entry.rows == rows:
            return False
        module = self._modules.get(arch)
        if module is None:
            module = self._modules[arch] = copy.deepcopy(template())
        future = self._pool.submit(_timed_logits, module, state, inputs(), self.batch_size)
        self._entries[teacher] = _Entry(state, rows, future)
        return True

    def forget(self, teachers: Iterable[Hashable]) -> None:
        """Drop these teachers' entries (their models changed), releasing the old states they reference."""
        for t in teachers:
            entry = self._entries.pop(t, None)
            if entry is not None and isinstance(entry.value, Future):
                entry.value.cancel()


def spare_cpu_core(device: torch.device) -> bool:
    """True on a CPU device with more usable cores than torch's intra-op threads: a background teacher
    thread then runs beside training instead of competing with it."""
    if device.type != "cpu":
        return False
    return usable_cores() > torch.get_num_threads()


def _timed_logits(
    module: nn.Module, state: Mapping[str, torch.Tensor], x: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, float]:
    """:func:`teacher_logits` of ``module`` loaded with ``state`` (eval mode) and the seconds it took."""
    started = time.perf_counter()
    module.load_state_dict(state)
    logits = teacher_logits(module, x, batch_size=batch_size)
    return logits, time.perf_counter() - started
