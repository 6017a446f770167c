"""Algorithm names -> classes."""

from __future__ import annotations

from edgelearn.algorithms.base import Algorithm, RunContext
from edgelearn.algorithms.demlearn import DemLearn
from edgelearn.algorithms.fedagg import FedAgg
from edgelearn.algorithms.fedavg import FedAvg
from edgelearn.algorithms.feddkc import FedDKC
from edgelearn.algorithms.fedgkt import FedGKT
from edgelearn.algorithms.hierfavg import HierFAVG
from edgelearn.algorithms.two_stage import TwoStage

ALGORITHMS: dict[str, type[Algorithm]] = {
    cls.name: cls for cls in (FedAvg, HierFAVG, TwoStage, FedAgg, FedGKT, FedDKC, DemLearn)
}


def algorithm_class(name: str) -> type[Algorithm]:
    """The class registered under ``name``."""
    return ALGORITHMS[name]


def make_algorithm(ctx: RunContext) -> Algorithm:
    """The algorithm named in ``ctx.cfg.algorithm.name``."""
    return algorithm_class(ctx.cfg.algorithm.name)(ctx)
