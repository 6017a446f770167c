"""Algorithm names -> classes, imported on lookup.

The table maps each name to either a class or a lazy ``"module:Class"`` reference. Importing this module
imports no algorithm: a FedAvg run must not pay for two-stage's planner (cvxpy, SciPy) or DemLearn's SciPy
clustering, so a reference is imported the first time its name is looked up and the class then replaces it
in the table. ``register`` accepts either form, so a plugin registry can add entries to the same dict.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from edgelearn.errors import ConfigError

if TYPE_CHECKING:
    from edgelearn.algorithms.base import Algorithm, RunContext

ALGORITHMS: dict[str, type[Algorithm] | str] = {
    "fedavg": "edgelearn.algorithms.fedavg.algorithm:FedAvg",
    "hierfavg": "edgelearn.algorithms.hierfavg.algorithm:HierFAVG",
    "two_stage": "edgelearn.algorithms.two_stage.algorithm:TwoStage",
    "fedagg": "edgelearn.algorithms.fedagg.algorithm:FedAgg",
    "fedgkt": "edgelearn.algorithms.fedgkt.algorithm:FedGKT",
    "feddkc": "edgelearn.algorithms.feddkc.algorithm:FedDKC",
    "demlearn": "edgelearn.algorithms.demlearn.algorithm:DemLearn",
}
"""Name -> algorithm class, or a ``"package.module:ClassName"`` reference imported on first lookup."""


def register(name: str, target: type[Algorithm] | str) -> None:
    """Register ``target``, a class or a lazy ``"module:Class"`` reference, under ``name`` (replacing any)."""
    if isinstance(target, str) and target.count(":") != 1:
        raise ConfigError(
            f"algorithm reference {target!r} for {name!r} is not of the form 'package.module:ClassName'",
            hint="register a class, or a string such as 'mypkg.algo:MyAlgorithm'",
        )
    ALGORITHMS[name] = target


def _resolve(name: str, reference: str) -> type[Algorithm]:
    """Import the class a ``"module:Class"`` reference names."""
    module_name, _, attr = reference.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"algorithm {name!r} could not be loaded from {reference!r}: {exc}",
            hint="check the registered reference names an importable module and class",
        ) from exc
    return cls  # type: ignore[no-any-return]


def algorithm_class(name: str) -> type[Algorithm]:
    """The class registered under ``name``, importing its module on first use."""
    try:
        entry = ALGORITHMS[name]
    except KeyError:
        raise ConfigError(
            f"algorithm.name {name!r} is not a known algorithm",
            hint=f"use one of: {', '.join(ALGORITHMS)}",
        ) from None
    if isinstance(entry, str):
        entry = ALGORITHMS[name] = _resolve(name, entry)
    return entry


def make_algorithm(ctx: RunContext) -> Algorithm:
    """The algorithm named in ``ctx.cfg.algorithm.name``."""
    return algorithm_class(ctx.cfg.algorithm.name)(ctx)
