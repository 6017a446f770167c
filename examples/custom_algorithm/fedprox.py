"""FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020) as an edgelearn plugin.

Each device minimizes its loss plus the proximal term (mu / 2) ||w - w_global||^2, which keeps its local
model near the round's global model and so limits client drift on heterogeneous (non-IID) data; mu = 0 is
FedAvg. The engine already implements the term in every executor (``LocalSpec.prox_mu``: serial, vmap and
Ray train the same objective), so FedProx is FedAvg with one extension point overridden:
:meth:`~edgelearn.algorithms.fedavg.algorithm.FedAvg.local_training`.

The cloud keeps FedAvg's average weighted by local data size: FedProx's Algorithm 2 samples devices with
probability p_k = n_k / n and averages them uniformly, whose expectation is that weighted average. Every
device runs the configured local epochs (the paper's variable local work, gamma-inexact solutions for
stragglers, is not modelled; edgelearn's fault model drops stragglers instead).

Load it with ``plugins: [fedprox.py]`` in a run config (the path is relative to the config file) and select
it with ``algorithm: {name: fedprox, mu: 0.01}``. Only public names are imported.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import Field

from edgelearn.algorithms.fedavg.algorithm import FedAvg
from edgelearn.algorithms.fedavg.config import FedAvgConfig
from edgelearn.engine import LocalSpec
from edgelearn.plugins import register_algorithm


class FedProxConfig(FedAvgConfig):
    """FedProx (Li et al., MLSys 2020): FedAvg whose devices add (mu/2)||w - w_global||^2 to their loss."""

    name: Literal["fedprox"] = "fedprox"  # type: ignore[assignment]
    mu: float = Field(
        0.01,
        ge=0,
        description="proximal coefficient mu: how strongly local models are pulled to the global one "
        "(0 = FedAvg; Li et al. tune it over {0.001, 0.01, 0.1, 1})",
    )


class FedProx(FedAvg):
    """FedAvg with FedProx's proximal local objective."""

    name = "fedprox"

    def local_training(self, round_: int) -> LocalSpec:
        """The configured local SGD, with the proximal coefficient ``mu`` added to the objective."""
        return dataclasses.replace(super().local_training(round_), prox_mu=float(self.cfg.mu))


register_algorithm("fedprox", FedProx, FedProxConfig)
