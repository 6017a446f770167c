"""Training engine: cohorts of same-architecture models handed to an executor (serial, vmap, ray) to train
or to infer."""

from edgelearn.engine.batches import batch_schedule
from edgelearn.engine.cohort import ClientData, Cohort, CohortResult, LocalSpec, LossFn, cross_entropy_loss
from edgelearn.engine.device import resolve_device
from edgelearn.engine.evaluate import evaluate_state, prediction_totals
from edgelearn.engine.executor import Executor, make_executor
from edgelearn.engine.infer import InferCohort, InferResult, InferSpec
from edgelearn.engine.serial import SerialExecutor
from edgelearn.engine.state import StateDict, WeightedMean, average_states, clone_state

__all__ = [
    "ClientData",
    "Cohort",
    "CohortResult",
    "Executor",
    "InferCohort",
    "InferResult",
    "InferSpec",
    "LocalSpec",
    "LossFn",
    "cross_entropy_loss",
    "SerialExecutor",
    "StateDict",
    "WeightedMean",
    "average_states",
    "batch_schedule",
    "clone_state",
    "evaluate_state",
    "prediction_totals",
    "make_executor",
    "resolve_device",
]
