"""Learning algorithms over the device / edge / cloud tree; each hands cohorts to the executor."""

from edgelearn.algorithms.base import Algorithm, RunContext
from edgelearn.algorithms.registry import ALGORITHMS, make_algorithm

__all__ = ["ALGORITHMS", "Algorithm", "RunContext", "make_algorithm"]
