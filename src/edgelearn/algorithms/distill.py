"""Knowledge-distillation losses and teacher inference shared by FedAgg and the KD baselines.

``kd_per_sample`` is the official FedAgg code's ``KL_Loss(T)`` (paper_fedagg.md §4.3) per sample:
``T^2 * sum_c p_c (log p_c - log q_c)`` with ``q = softmax(s / T)`` and ``p = softmax(z / T) + 1e-7``; its
mean over a batch equals PyTorch's ``KLDivLoss(reduction="batchmean")`` times ``T^2``, i.e.
KL(teacher || student). The loss factories return per-sample losses (shape (B,), pure torch ops) as the
engine's :data:`~edgelearn.engine.LossFn` contract asks, so any executor (serial or vmap) can run them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

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

Apply = Callable[[torch.Tensor], torch.Tensor]


def kd_per_sample(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """Per-sample ``T^2 * KL(softmax(z/T) + 1e-7 || softmax(s/T))``; the teacher side is detached."""
    log_q = F.log_softmax(student_logits / T, dim=1)
    p = F.softmax(teacher_logits.detach() / T, dim=1) + KD_EPS
    return (T * T) * (p * (torch.log(p) - log_q)).sum(dim=1)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """Batch-mean KD loss (the official ``KL_Loss(T)``): the mean of :func:`kd_per_sample`."""
    return kd_per_sample(student_logits, teacher_logits, T).mean()


def non_leaf_loss(beta: float, T: float) -> Callable[[Apply, Mapping[str, torch.Tensor]], torch.Tensor]:
    """Eq. (2): ``CE(s, y) + beta * KD_T(s, z)`` on bridge samples ``x`` with teacher logits ``teacher``."""

    def loss(apply: Apply, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        logits = apply(batch["x"])
        ce = F.cross_entropy(logits, batch["y"], reduction="none")
        return ce + beta * kd_per_sample(logits, batch[TEACHER_KEY], T)

    return loss


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
    parts = [module(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    return torch.cat(parts, dim=0)
