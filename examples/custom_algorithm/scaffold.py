"""SCAFFOLD (Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for Federated Learning",
ICML 2020) as an edgelearn plugin.

Client drift on non-IID data is corrected with control variates: the cloud keeps ``c`` and every device
``c_i``, estimates of the global and the local gradient. Each local SGD step follows the corrected gradient
``y <- y - eta_l (g_i(y) + c - c_i)``; after ``K`` steps a device's new control variate is (option II of the
paper's Algorithm 1)::

    c_i+ = c_i - c + (x - y_i) / (K eta_l)

and the cloud steps ``x <- x + eta_g avg_i(y_i - x)`` and ``c <- c + |S|/N avg_i(c_i+ - c_i)``.

How it maps onto edgelearn's public API, with no change to the package:

* the correction ``c - c_i`` is the engine's ``Cohort.grad_shift`` (added to every step's gradient in the
  serial, vmap and Ray executors alike), handed over by :meth:`FedAvg.cohort_options`, which also asks for
  each device's final model (``keep_states``);
* :meth:`FedAvg.client_results` computes ``c_i+`` from each device's final model and its number of steps
  ``K`` (``CohortResult.steps``: with ``epochs`` it differs per device) and updates ``c``;
* :meth:`FedAvg.server_update` takes the step ``eta_g`` from the previous model toward the average;
* :meth:`FedAvg.upload_bytes` / :meth:`FedAvg.download_bytes` add the control variates to what each device
  sends (``y_i - x`` and ``c_i+ - c_i``) and receives (``x`` and ``c``): SCAFFOLD's doubled communication is
  charged in the ledger, energy and delay included.

Control variates start at zero and cover the trainable parameters. A device whose upload is lost (faults)
keeps its old ``c_i``: the cloud never saw the new one, and ``c`` stays the mean of the ``c_i`` it knows.

Averages: Algorithm 1 writes uniform means (``weighting: uniform``, where ``|S|/N avg`` is ``1/N`` times the
sum). ``weighting: data_size`` (the default, as edgelearn's FedAvg) weights device ``i`` by its share of the
data ``p_i = n_i / n`` in both: ``x`` moves to the data-weighted average, and
``c <- c + sum_i p_i (c_i+ - c_i)`` keeps ``c = sum_i p_i c_i`` over all devices, the control variate of the
data-weighted objective.

Load it with ``plugins: [scaffold.py]`` and select ``algorithm: {name: scaffold}``. Only public names are
imported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from edgelearn.algorithms.fedavg.algorithm import FedAvg
from edgelearn.algorithms.fedavg.config import FedAvgConfig
from edgelearn.algorithms.kit.comm import aggregate_cost
from edgelearn.engine import CohortResult, StateDict
from edgelearn.plugins import register_algorithm


class ScaffoldConfig(FedAvgConfig):
    """SCAFFOLD (Karimireddy et al., ICML 2020): FedAvg with control variates correcting client drift."""

    name: Literal["scaffold"] = "scaffold"  # type: ignore[assignment]
    global_lr: float = Field(
        1.0, gt=0, description="server step eta_g toward the averaged device model (the paper's runs use 1)"
    )
    weighting: Literal["data_size", "uniform"] = Field(
        "data_size",
        description="how device updates and control-variate deltas are averaged: by local data size (as "
        "FedAvg here) or uniformly (Algorithm 1 as printed)",
    )


def control_update(
    x: Mapping[str, torch.Tensor],
    c: Mapping[str, torch.Tensor],
    clients: Sequence[tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor], int, float]],
    lr: float,
) -> tuple[list[StateDict], StateDict]:
    """Option II of SCAFFOLD's Algorithm 1: every client's new control variate and the cloud's new one.

    ``x`` is the model the round started from, ``c`` the cloud's control variate, ``clients`` one
    ``(y_i, c_i, K_i, p_i)`` per client: its final model, its control variate, its number of local steps and
    its weight in ``c``'s update (``1/N`` for the paper's uniform mean). Returns ``[c_i+]`` and
    ``c + sum_i p_i (c_i+ - c_i)``, over the names of ``c``; inputs are not modified.
    """
    new_clients: list[StateDict] = []
    delta = {k: torch.zeros_like(v) for k, v in c.items()}
    for y, c_i, steps, weight in clients:
        new = {k: c_i[k] - c[k] + (x[k] - y[k]) / (steps * lr) for k in c}
        for k in c:
            delta[k] += weight * (new[k] - c_i[k])
        new_clients.append(new)
    return new_clients, {k: c[k] + delta[k] for k in c}


class Scaffold(FedAvg):
    """FedAvg with SCAFFOLD's control variates (option II)."""

    name = "scaffold"
    checkpoint_attrs = ("global_state", "control", "client_controls")

    def init(self) -> None:
        """FedAvg's initial model and zero control variates over the trainable parameters."""
        super().init()
        with torch.random.fork_rng(devices=[]):  # building a model must not move the run's torch RNG
            module = self.ctx.model_fn()
        names = [n for n, p in module.named_parameters() if p.requires_grad]
        self.control: StateDict = {k: torch.zeros_like(self.global_state[k]) for k in names}
        self.client_controls: dict[int, StateDict] = {}  # device node id -> c_i (zero until it trains)
        self.control_bytes = sum(v.numel() * v.element_size() for v in self.control.values())
        self.control_params = sum(v.numel() for v in self.control.values())
        sizes = self.ctx.data_sizes(self.eligible).astype(np.float64)
        self.share = dict(zip(self.eligible.tolist(), (sizes / sizes.sum()).tolist()))
        if self.cfg.weighting == "uniform":
            self.share = dict.fromkeys(self.share, 1.0 / len(self.eligible))

    def _client_control(self, node: int) -> Mapping[str, torch.Tensor]:
        return self.client_controls.get(node) or {k: torch.zeros_like(v) for k, v in self.control.items()}

    def cohort_options(self, trainers: np.ndarray, round_: int) -> dict[str, Any]:
        """Each trainer's gradient correction ``c - c_i``, kept final states, and the averaging weights."""
        options: dict[str, Any] = {
            "grad_shift": [
                {k: c - self._client_control(int(n))[k] for k, c in self.control.items()} for n in trainers
            ],
            "keep_states": True,
        }
        if self.cfg.weighting == "uniform":
            options["weights"] = np.ones(len(trainers))
        return options

    def client_results(
        self, trainers: np.ndarray, arrived: np.ndarray, result: CohortResult, round_: int
    ) -> None:
        """New ``c_i`` for every device whose upload arrived, and the cloud's ``c`` from their deltas."""
        assert result.client_states is not None  # cohort_options asked for them
        lr = self.local_training(round_).lr
        got = [j for j in np.flatnonzero(arrived) if result.steps[j] > 0]
        nodes = [int(trainers[j]) for j in got]
        clients = [
            (result.client_states[j], self._client_control(n), int(result.steps[j]), self.share[n])
            for j, n in zip(got, nodes)
        ]
        new_clients, self.control = control_update(self.global_state, self.control, clients, lr)
        self.client_controls.update(zip(nodes, new_clients))
        aggregate_cost(self.ctx.system, 0, len(nodes), self.control_params, phase="aggregate")

    def server_update(self, previous: StateDict, averaged: StateDict, round_: int) -> StateDict:
        """``x + eta_g (avg(y_i) - x)`` on floating entries (integer buffers take the average)."""
        lr = self.cfg.global_lr
        return {
            k: x + lr * (averaged[k] - x) if x.is_floating_point() else averaged[k]
            for k, x in previous.items()
        }

    def upload_bytes(self) -> int:
        """A model update and a control-variate update per device."""
        return super().upload_bytes() + self.control_bytes

    def download_bytes(self) -> int:
        """The global model and the cloud's control variate per device."""
        return super().download_bytes() + self.control_bytes


register_algorithm("scaffold", Scaffold, ScaffoldConfig)
