"""FedDKC (Wu et al., "Exploring the Distributed Knowledge Congruence in Proxy-data-free Federated
Distillation", ACM TIST 2024): FedGKT with the clients' knowledge refined before the server distils it.

Everything is FedGKT's (:mod:`edgelearn.algorithms.kit.split`, as FedGKT runs it: devices are clients, the
cloud is the server, edges relay, the same ledger phases and payloads) except the server's KD target.
Heterogeneous clients send logits of very different confidence; KKR (kernel-based knowledge refinement)
maps each client's softened probability vector linearly so that its peak probability is the same for every
client, ``peak`` (T = 0.12 in FedAgg's runs, Wu et al., INFOCOM 2024, §VI). As the authors' code (FedICT
``utils.DistributedKnowledgeCongruence`` inside ``DKC_KL_Loss``) does it, per sample with ``C`` classes::

    p   = softmax(z / (logit_scale * T)) + 1e-7          # logit_scale = S (0.05), T = KD temperature (3)
    m   = max_c p_c
    p'  = ((C * peak - 1) * p + m - peak) / (C * m - 1)  # sums to 1 (up to the 1e-7's), p'_argmax = peak
    if min_c p'_c < 0:  p' = (1 - peak) / (C - 1) everywhere, peak at argmax p   # the one-hot-like fallback

and the server minimizes ``CE + beta * T^2 * KL(p' || softmax(s / T))`` (``server_loss: paper``; ``fedml``
swaps the weights as in FedGKT). A vector with ``C * m - 1 <= KKR_MIN_SPREAD`` (numerically uniform) has
no such linear map; it gets the fallback too, the limit of nearby vectors whose peak is below ``peak``.
Clients still distil the server's plain logits (refinement is of the clients' knowledge only). The
refinement runs at the cloud on ``C`` numbers per sample and, like every elementwise operation, is not
charged as FLOPs (the ledger counts matrix products and convolutions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgelearn.algorithms.feddkc.config import FedDKCConfig
from edgelearn.algorithms.kit.distill import KD_EPS, ce_kd_loss, kd_to_targets
from edgelearn.algorithms.kit.split import SplitTransfer
from edgelearn.engine import ClientData, LossFn
from edgelearn.errors import ConfigError

TARGET_KEY = "target"
"""Extra-tensor key of the refined (probability) targets the server distils."""
KKR_MIN_SPREAD = 1e-6
"""``C * max_c p_c - 1`` at or below this means a numerically uniform vector (fallback, module docstring)."""


@torch.no_grad()
def kkr_refine(logits: torch.Tensor, peak: float, *, T: float, logit_scale: float = 1.0) -> torch.Tensor:
    """KKR: per row, soften ``logits`` and map the probabilities linearly so the largest is ``peak``.

    Returns probability vectors (rows sum to 1 up to ``C * 1e-7``); see the module docstring for the map
    and its fallback. ``peak`` must exceed ``1 / C``, else the map would not keep the argmax on top.
    """
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"kkr_refine needs logits of shape (n, C >= 2), got {tuple(logits.shape)}")
    num_classes = logits.shape[1]
    if not 1.0 / num_classes < peak < 1.0:
        raise ValueError(f"kkr_refine: peak={peak} must lie in (1/C, 1) = ({1.0 / num_classes:.4g}, 1)")
    p = F.softmax(logits / (logit_scale * T), dim=1) + KD_EPS
    p = p / p.sum(dim=1, keepdim=True)  # renormalise, so the linear map keeps rows summing to exactly 1
    m = p.max(dim=1, keepdim=True).values
    spread = num_classes * m - 1.0
    refined = ((num_classes * peak - 1.0) * p + m - peak) / spread.clamp_min(KKR_MIN_SPREAD)
    fallback = torch.full_like(p, (1.0 - peak) / (num_classes - 1))
    fallback.scatter_(1, p.argmax(dim=1, keepdim=True), peak)
    bad = (spread <= KKR_MIN_SPREAD) | (refined.min(dim=1, keepdim=True).values < 0)
    return torch.where(bad, fallback, refined)


class FedDKC(SplitTransfer):
    """FedGKT's split transfer whose server distils KKR-refined client knowledge (module docstring)."""

    name = "feddkc"
    config_class = FedDKCConfig

    def check_config(self) -> None:
        """``peak`` must exceed 1 / num_classes (else refinement would not keep the argmax on top)."""
        if not self.cfg.peak > 1.0 / self.num_classes:
            raise ConfigError(
                f"algorithm.peak={self.cfg.peak} must exceed 1/num_classes = {1.0 / self.num_classes:.4g}",
                hint="FedAgg's runs use peak 0.12 with 10 classes; pick a value between 1/C and 1",
            )

    def server_data(self, features: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor) -> ClientData:
        """Features and labels with the clients' logits refined by KKR into probability targets."""
        targets = kkr_refine(logits, self.cfg.peak, T=self.cfg.T, logit_scale=self.cfg.logit_scale)
        return ClientData(features, labels, extra={TARGET_KEY: targets})

    def server_loss(self) -> LossFn:
        """``CE + beta * KD`` (or FedML's swapped weights) against the refined targets."""
        ce_w, kd_w = self.server_weights()
        return ce_kd_loss(ce_w, kd_w, self.cfg.T, kd=kd_to_targets, key=TARGET_KEY)
