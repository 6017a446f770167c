"""Test-set evaluation of a model state in large no-grad batches."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def evaluate_state(
    module: nn.Module,
    state: Mapping[str, torch.Tensor] | None,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
) -> tuple[float, float]:
    """Accuracy (0..1) and mean cross-entropy of ``module`` loaded with ``state`` on (x, y)."""
    if state is not None:
        module.load_state_dict(state)
    correct, loss = prediction_totals(module, x, y, batch_size)
    n = max(1, len(y))
    return correct / n, loss / n


@torch.no_grad()
def prediction_totals(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[int, float]:
    """(correct predictions, summed cross-entropy) of ``module`` in eval mode on (x, y): totals, so callers
    can pool several parts (e.g. FedGKT's extractor + server evaluated chunk by chunk)."""
    module.eval()
    correct = torch.zeros((), dtype=torch.int64, device=y.device)
    loss = torch.zeros((), dtype=torch.float64, device=y.device)
    for i in range(0, len(y), batch_size):
        logits = module(x[i : i + batch_size])
        target = y[i : i + batch_size]
        loss += F.cross_entropy(logits, target, reduction="sum").to(torch.float64)
        correct += (logits.argmax(dim=1) == target).sum()
    return int(correct), float(loss)
