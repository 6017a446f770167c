"""The serial executor: one reused module, clients one after another, streaming aggregation.

With ``workers`` > 1 (CPU only), the clients of a cohort with at least two are trained by that many threads,
each with its own module, in round-robin order; PyTorch releases the GIL inside its kernels, so small cohorts
of models too different or too large to vectorize (FedAgg's edge students, say) use the spare cores. Each
client's computation is the same as in sequence and the results are folded in client order, so the output
is the same whichever ``workers``; only the finished states are held at once (no more than ``keep_states``
holds anyway), and with ``keep_states`` off, at most one cohort's states.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from edgelearn.engine.cohort import ClientData, Cohort, CohortResult, LocalSpec
from edgelearn.engine.state import StateDict, WeightedMean, clone_state


class SerialExecutor:
    """Trains clients sequentially in one module per architecture (or in ``workers`` threads, one module
    each); memory does not grow with clients."""

    name = "serial"

    def __init__(self, device: torch.device, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"serial executor: workers={workers}; need >= 1")
        self.device = device
        self.workers = workers if device.type == "cpu" else 1
        self._modules: dict[tuple[str, int], nn.Module] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def _module(self, cohort: Cohort, worker: int = 0) -> nn.Module:
        key = (cohort.arch_key, worker)
        with self._lock:
            module = self._modules.get(key)
            if module is None:
                module = cohort.model_fn().to(self.device)
                self._modules[key] = module
        return module

    def _client(
        self, cohort: Cohort, spec: LocalSpec, schedules: list, i: int, worker: int
    ) -> tuple[int, int, float, StateDict]:
        """Train client ``i`` in the worker's module; its work, mean loss and a copy of its final state."""
        module = self._module(cohort, worker)
        module.load_state_dict(cohort.starts[int(cohort.start_of[i])])
        seen, taken, loss = self._fit(module, cohort.data[i], schedules[i], spec)
        return seen, taken, loss, clone_state(module.state_dict())

    def _threaded(self, cohort: Cohort, spec: LocalSpec, schedules: list) -> list:
        """Per-client results of a cohort trained by ``workers`` threads (clients dealt round-robin)."""
        n = len(cohort)
        workers = min(self.workers, n)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="edgelearn-serial")

        def work(w: int) -> list[tuple[int, tuple[int, int, float, StateDict]]]:
            return [(i, self._client(cohort, spec, schedules, i, w)) for i in range(w, n, workers)]

        out: list = [None] * n
        for future in [self._pool.submit(work, w) for w in range(workers)]:
            for i, result in future.result():
                out[i] = result
        return out

    def train(self, cohort: Cohort, spec: LocalSpec) -> CohortResult:
        """Local SGD for each client in turn; fold each final state into its group's running mean."""
        means = [WeightedMean() for _ in range(cohort.num_groups)]
        n = len(cohort)
        samples = np.zeros(n, dtype=np.int64)
        steps = np.zeros(n, dtype=np.int64)
        losses = np.full(n, np.nan)
        kept: list[StateDict] | None = [] if cohort.keep_states else None
        schedules = cohort.schedules(spec).all_batches() if n else []
        threaded = self._threaded(cohort, spec, schedules) if self.workers > 1 and n > 1 else None
        module = self._module(cohort) if threaded is None else None
        for i, data in enumerate(cohort.data):
            if threaded is not None:
                samples[i], steps[i], losses[i], state = threaded[i]
                threaded[i] = None  # the running mean holds its share from here on
            else:
                assert module is not None
                module.load_state_dict(cohort.starts[int(cohort.start_of[i])])
                samples[i], steps[i], losses[i] = self._fit(module, data, schedules[i], spec)
                state = module.state_dict()
            means[int(cohort.group_of[i])].add(state, float(cohort.weights[i]))
            if kept is not None:
                kept.append(state if threaded is not None else clone_state(state))
        like = cohort.starts[0] if len(cohort.starts) else None
        groups = [m.result(like) if m.total_weight > 0 and like is not None else None for m in means]
        return CohortResult(
            group_states=groups, client_states=kept, samples=samples, steps=steps, train_loss=losses
        )

    @staticmethod
    def _fit(
        module: nn.Module, data: ClientData, batches: list[np.ndarray], spec: LocalSpec
    ) -> tuple[int, int, float]:
        """SGD (momentum, weight decay, proximal term as set) over the batches; returns work and mean loss."""
        if not batches:
            return 0, 0, float("nan")
        module.train()
        params = list(module.parameters())
        opt = torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
        anchor = [p.detach().clone() for p in params] if spec.prox_mu > 0 else None
        device = data.y.device
        total_loss = torch.zeros((), device=device)
        seen = 0
        for idx in batches:
            loss = spec.loss(module, data.batch(torch.as_tensor(idx, device=device))).mean()
            objective = loss if anchor is None else loss + proximal_term(params, anchor, spec.prox_mu)
            opt.zero_grad(set_to_none=True)
            objective.backward()
            opt.step()
            total_loss += loss.detach()
            seen += len(idx)
        return seen, len(batches), float(total_loss) / len(batches)


def proximal_term(params: list[torch.Tensor], anchor: list[torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx's (mu / 2) * ||w - w_start||^2 over all parameters."""
    return 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))
