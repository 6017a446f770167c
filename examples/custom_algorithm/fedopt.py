"""FedAdam and FedYogi (Reddi et al., "Adaptive Federated Optimization", ICLR 2021) as an edgelearn plugin.

FedOpt keeps FedAvg's rounds and replaces the cloud's step: the averaged device update
``Delta_t = avg_i(y_i) - x_t`` is treated as a pseudo-gradient and fed to an adaptive optimizer (the paper's
Algorithm 2, no bias correction)::

    m_t = b1 m_{t-1} + (1 - b1) Delta_t
    v_t = b2 v_{t-1} + (1 - b2) Delta_t^2                              (FedAdam)
    v_t = v_{t-1} - (1 - b2) Delta_t^2 sign(v_{t-1} - Delta_t^2)       (FedYogi)
    x_{t+1} = x_t + eta m_t / (sqrt(v_t) + tau)

with ``m_{-1} = 0`` and ``v_{-1} = tau^2`` (the paper asks for ``v_{-1} >= tau^2``). The step is
:meth:`~edgelearn.algorithms.fedavg.algorithm.FedAvg.server_update`, the one extension point overridden;
the moments ``m`` and ``v`` are in ``checkpoint_attrs``, so a resumed run continues exactly. They apply to
every floating entry of the model state (integer buffers, such as BatchNorm's batch counter, take the
average).

Algorithm 2 writes the uniform mean over the round's devices; ``weighting: data_size`` (the default) weights
by local data size as edgelearn's FedAvg does, so a comparison with FedAvg isolates the server optimizer;
``weighting: uniform`` is the formula as printed.

Load it with ``plugins: [fedopt.py]`` and select ``algorithm: {name: fedadam, server_lr: ...}`` (or
``fedyogi``). Only public names are imported.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from edgelearn.algorithms.fedavg.algorithm import FedAvg
from edgelearn.algorithms.fedavg.config import FedAvgConfig
from edgelearn.engine import StateDict
from edgelearn.plugins import register_algorithm

Rule = Literal["adam", "yogi"]


class FedOptConfig(FedAvgConfig):
    """Settings FedAdam and FedYogi share (Reddi et al., ICLR 2021, Algorithm 2); not an algorithm itself."""

    server_lr: float = Field(
        0.01,
        gt=0,
        description="server learning rate eta (Reddi et al. grid-search it on a log scale per task)",
    )
    beta1: float = Field(0.9, ge=0, lt=1, description="first-moment decay b1 (the paper's 0.9)")
    beta2: float = Field(0.99, ge=0, lt=1, description="second-moment decay b2 (the paper's 0.99)")
    tau: float = Field(
        1e-3,
        gt=0,
        description="adaptivity tau: bounds the per-coordinate step by eta m / tau and starts v at tau^2 "
        "(the paper recommends 1e-3)",
    )
    weighting: Literal["data_size", "uniform"] = Field(
        "data_size",
        description="how device updates are averaged: by local data size (as FedAvg here) or uniformly "
        "(Algorithm 2 as printed)",
    )


class FedAdamConfig(FedOptConfig):
    """FedAdam (Reddi et al., ICLR 2021): FedAvg rounds, Adam on the averaged update in the cloud."""

    name: Literal["fedadam"] = "fedadam"  # type: ignore[assignment]


class FedYogiConfig(FedOptConfig):
    """FedYogi (Reddi et al., ICLR 2021): FedAvg rounds, Yogi on the averaged update in the cloud."""

    name: Literal["fedyogi"] = "fedyogi"  # type: ignore[assignment]


def fedopt_step(
    previous: StateDict,
    averaged: StateDict,
    m: StateDict,
    v: StateDict,
    *,
    rule: Rule,
    lr: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> tuple[StateDict, StateDict, StateDict]:
    """One server step of Algorithm 2: the new model and moments ``(x, m, v)`` from the previous model, the
    average of the devices' models and the previous moments (inputs are not modified). Floating entries
    only; any other entry (an integer buffer) takes the average."""
    x_new, m_new, v_new = {}, {}, {}
    for k, x in previous.items():
        if not x.is_floating_point():
            x_new[k] = averaged[k]
            continue
        delta = averaged[k] - x
        square = delta * delta
        m_new[k] = beta1 * m[k] + (1.0 - beta1) * delta
        if rule == "adam":
            v_new[k] = beta2 * v[k] + (1.0 - beta2) * square
        else:
            v_new[k] = v[k] - (1.0 - beta2) * square * torch.sign(v[k] - square)
        x_new[k] = x + lr * m_new[k] / (v_new[k].sqrt() + tau)
    return x_new, m_new, v_new


class FedAdam(FedAvg):
    """FedAvg whose cloud applies Adam to the averaged device update (Reddi et al., ICLR 2021)."""

    name = "fedadam"
    rule: ClassVar[Rule] = "adam"
    checkpoint_attrs = ("global_state", "moment1", "moment2")

    def init(self) -> None:
        """FedAvg's initial model, ``m = 0`` and ``v = tau^2`` for every floating entry."""
        super().init()
        floats = {k: v for k, v in self.global_state.items() if v.is_floating_point()}
        self.moment1: StateDict = {k: torch.zeros_like(v) for k, v in floats.items()}
        self.moment2: StateDict = {k: torch.full_like(v, self.cfg.tau**2) for k, v in floats.items()}

    def cohort_options(self, trainers: np.ndarray, round_: int) -> dict[str, Any]:
        """Uniform aggregation weights when ``weighting: uniform``; FedAvg's data sizes otherwise."""
        return {"weights": np.ones(len(trainers))} if self.cfg.weighting == "uniform" else {}

    def server_update(self, previous: StateDict, averaged: StateDict, round_: int) -> StateDict:
        """The adaptive step from ``previous`` along ``averaged - previous`` (:func:`fedopt_step`)."""
        cfg = self.cfg
        x, self.moment1, self.moment2 = fedopt_step(
            previous,
            averaged,
            self.moment1,
            self.moment2,
            rule=self.rule,
            lr=cfg.server_lr,
            beta1=cfg.beta1,
            beta2=cfg.beta2,
            tau=cfg.tau,
        )
        return x


class FedYogi(FedAdam):
    """FedAvg whose cloud applies Yogi to the averaged device update (Reddi et al., ICLR 2021)."""

    name = "fedyogi"
    rule: ClassVar[Rule] = "yogi"


register_algorithm("fedadam", FedAdam, FedAdamConfig)
register_algorithm("fedyogi", FedYogi, FedYogiConfig)
