"""Algorithm names -> classes."""

from __future__ import annotations

from edgelearn.algorithms.base import Algorithm, RunContext
from edgelearn.algorithms.fedavg import FedAvg
from edgelearn.algorithms.hierfavg import HierFAVG

ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (FedAvg, HierFAVG)}


def make_algorithm(ctx: RunContext) -> Algorithm:
    """The algorithm named in ``ctx.cfg.algorithm.name``."""
    return ALGORITHMS[ctx.cfg.algorithm.name](ctx)
