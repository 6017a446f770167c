"""Model states (name -> tensor) and their streaming weighted averages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

StateDict = dict[str, torch.Tensor]


def clone_state(state: Mapping[str, torch.Tensor], device: torch.device | None = None) -> StateDict:
    """A detached copy of a state (optionally moved), so later in-place training cannot alias it."""
    return {k: v.detach().to(device if device is not None else v.device, copy=True) for k, v in state.items()}


class WeightedMean:
    """Running weighted mean of states: memory stays one state however many are added.

    Floating tensors are averaged with the given weights; integer buffers (e.g. BatchNorm's
    ``num_batches_tracked``) keep the maximum, as no average of counters is meaningful.
    """

    def __init__(self) -> None:
        self._sum: StateDict | None = None
        self.total_weight = 0.0

    def add(self, state: Mapping[str, torch.Tensor], weight: float) -> None:
        """Fold one state in with a non-negative weight."""
        if weight < 0:
            raise ValueError("aggregation weights must be non-negative")
        if self._sum is None:
            self._sum = {
                k: (v.detach().to(torch.float64) * weight if v.is_floating_point() else v.detach().clone())
                for k, v in state.items()
            }
        else:
            for k, v in state.items():
                acc = self._sum[k]
                if v.is_floating_point():
                    acc.add_(v.detach().to(torch.float64), alpha=weight)
                else:
                    torch.maximum(acc, v.detach(), out=acc)
        self.total_weight += weight

    def add_stacked(self, stacked: Mapping[str, torch.Tensor], weights: torch.Tensor) -> None:
        """Fold in a batch of states stacked on dim 0 (vectorized executors) with one weight each."""
        w = weights.detach().to(torch.float64)
        total = float(w.sum())
        summed: StateDict = {}
        for k, v in stacked.items():
            if v.is_floating_point():
                summed[k] = torch.tensordot(w.to(v.device), v.detach().to(torch.float64), dims=([0], [0]))
            else:
                summed[k] = v.detach().amax(dim=0)
        if self._sum is None:
            self._sum = summed
        else:
            for k, v in summed.items():
                acc = self._sum[k]
                if v.is_floating_point():
                    acc.add_(v)
                else:
                    torch.maximum(acc, v, out=acc)
        self.total_weight += total

    def result(self, like: Mapping[str, torch.Tensor]) -> StateDict:
        """The mean, cast back to the dtypes of ``like``."""
        if self._sum is None or self.total_weight <= 0:
            raise ValueError("no state with positive weight was added")
        return {
            k: (v / self.total_weight).to(like[k].dtype)
            if like[k].is_floating_point()
            else v.to(like[k].dtype)
            for k, v in self._sum.items()
        }


def average_states(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> StateDict:
    """Weighted mean of several states (see :class:`WeightedMean`)."""
    if len(states) != len(weights):
        raise ValueError("one weight per state is needed")
    mean = WeightedMean()
    for s, w in zip(states, weights):
        mean.add(s, float(w))
    return mean.result(states[0])
