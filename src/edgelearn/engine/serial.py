"""The serial executor: one reused module, clients one after another, streaming aggregation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgelearn.engine.batches import batch_schedule
from edgelearn.engine.cohort import Cohort, CohortResult, LocalSpec
from edgelearn.engine.state import StateDict, WeightedMean, clone_state


class SerialExecutor:
    """Trains clients sequentially in one module per architecture; memory does not grow with clients."""

    name = "serial"

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._modules: dict[str, nn.Module] = {}

    def _module(self, cohort: Cohort) -> nn.Module:
        module = self._modules.get(cohort.arch_key)
        if module is None:
            module = cohort.model_fn().to(self.device)
            self._modules[cohort.arch_key] = module
        return module

    def train(self, cohort: Cohort, spec: LocalSpec) -> CohortResult:
        """Local SGD for each client in turn; fold each final state into its group's running mean."""
        module = self._module(cohort)
        means = [WeightedMean() for _ in range(cohort.num_groups)]
        n = len(cohort)
        samples = np.zeros(n, dtype=np.int64)
        steps = np.zeros(n, dtype=np.int64)
        losses = np.full(n, np.nan)
        kept: list[StateDict] | None = [] if cohort.keep_states else None
        for i, data in enumerate(cohort.data):
            module.load_state_dict(cohort.starts[int(cohort.start_of[i])])
            batches = batch_schedule(
                len(data),
                cohort.batch_size_of(i, spec),
                seed=int(cohort.seeds[i]),
                epochs=spec.epochs,
                steps=spec.steps,
            )
            samples[i], steps[i], losses[i] = self._fit(module, data.x, data.y, batches, spec)
            state = module.state_dict()
            means[int(cohort.group_of[i])].add(state, float(cohort.weights[i]))
            if kept is not None:
                kept.append(clone_state(state))
        like = cohort.starts[0] if len(cohort.starts) else None
        groups = [m.result(like) if m.total_weight > 0 and like is not None else None for m in means]
        return CohortResult(
            group_states=groups, client_states=kept, samples=samples, steps=steps, train_loss=losses
        )

    @staticmethod
    def _fit(
        module: nn.Module, x: torch.Tensor, y: torch.Tensor, batches: list[np.ndarray], spec: LocalSpec
    ) -> tuple[int, int, float]:
        """Plain SGD (optional momentum / weight decay) over the given batches; returns work and mean loss."""
        if not batches:
            return 0, 0, float("nan")
        module.train()
        opt = torch.optim.SGD(
            module.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
        )
        total_loss = torch.zeros((), device=x.device)
        seen = 0
        for idx in batches:
            index = torch.as_tensor(idx, device=x.device)
            loss = F.cross_entropy(module(x[index]), y[index])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += loss.detach()
            seen += len(idx)
        return seen, len(batches), float(total_loss) / len(batches)
