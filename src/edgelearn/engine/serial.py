"""The serial executor: one reused module, clients one after another, streaming aggregation."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from edgelearn.engine.cohort import ClientData, Cohort, CohortResult, LocalSpec, check_grad_shift
from edgelearn.engine.infer import InferCohort, InferResult, InferSpec, infer_serial, template_module
from edgelearn.engine.precision import autocast
from edgelearn.engine.state import StateDict, WeightedMean, clone_state


class SerialExecutor:
    """Trains clients sequentially in one module per architecture; memory does not grow with clients."""

    name = "serial"

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._modules: dict[str, nn.Module] = {}
        self._infer_modules: dict[str, nn.Module] = {}

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
        schedules = cohort.schedules(spec).all_batches() if n else []
        trainable = {k: p for k, p in module.named_parameters() if p.requires_grad}
        for i, data in enumerate(cohort.data):
            module.load_state_dict(cohort.starts[int(cohort.start_of[i])])
            shift = None
            if cohort.grad_shift is not None and cohort.grad_shift[i]:
                check_grad_shift(cohort.grad_shift[i], trainable, i)
                shift = {
                    k: v.to(device=self.device, dtype=trainable[k].dtype)
                    for k, v in cohort.grad_shift[i].items()
                }
            samples[i], steps[i], losses[i] = self._fit(module, data, schedules[i], spec, shift)
            state = module.state_dict()
            means[int(cohort.group_of[i])].add(state, float(cohort.weights[i]))
            if kept is not None:
                kept.append(clone_state(state))
        like = cohort.starts[0] if len(cohort.starts) else None
        groups = [m.result(like) if m.total_weight > 0 and like is not None else None for m in means]
        return CohortResult(
            group_states=groups, client_states=kept, samples=samples, steps=steps, train_loss=losses
        )

    def infer(self, cohort: InferCohort, spec: InferSpec) -> InferResult:
        """Each node's outputs in turn, one module per architecture (:func:`infer_serial`).

        Inference keeps modules of its own, built without touching the torch RNG, so adding inference to a
        run never changes what training's modules draw.
        """
        module = self._infer_modules.get(cohort.arch_key)
        if module is None:
            module = self._infer_modules[cohort.arch_key] = template_module(cohort.model_fn, self.device)
        return infer_serial(module, cohort, spec, self.device)

    @staticmethod
    def _fit(
        module: nn.Module,
        data: ClientData,
        batches: list[np.ndarray],
        spec: LocalSpec,
        shift: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[int, int, float]:
        """SGD (momentum, weight decay, proximal term, gradient shift as set) over the batches; returns work
        and mean loss. ``shift`` maps parameter names to what is added to their gradient at every step."""
        if not batches:
            return 0, 0, float("nan")
        module.train()
        params = list(module.parameters())
        shifted = [(p, shift[k]) for k, p in module.named_parameters() if k in shift] if shift else []
        opt = torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
        anchor = [p.detach().clone() for p in params] if spec.prox_mu > 0 else None
        device = data.y.device
        total_loss = torch.zeros((), device=device)
        seen = 0
        for idx in batches:
            with autocast(device):  # forward and loss; backward and the update stay in the parameters' dtype
                loss = spec.loss(module, data.batch(torch.as_tensor(idx, device=device))).mean()
            objective = loss if anchor is None else loss + proximal_term(params, anchor, spec.prox_mu)
            opt.zero_grad(set_to_none=True)
            objective.backward()
            for p, s in shifted:  # after the loss and proximal gradients, before weight decay and momentum
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                p.grad.add_(s)
            opt.step()
            total_loss += loss.detach()
            seen += len(idx)
        return seen, len(batches), float(total_loss) / len(batches)


def proximal_term(params: list[torch.Tensor], anchor: list[torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx's (mu / 2) * ||w - w_start||^2 over all parameters."""
    return 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))
