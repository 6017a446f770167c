"""Joint resource planning for two-stage edge learning (Lyu et al., arXiv 2404.00836, problem (P1)).

Describe the system and budgets as a :class:`TwoStageProblem`, pick a convergence bound (form "A", our
step-weighted bound, by default, or "B", "C", or your own :class:`Bound`), then :func:`solve` returns a
feasible :class:`Plan` (rounds, integer batches, clocks, powers, predicted energy and delay);
:func:`solve_baselines` returns the baseline schemes on the same budgets. :func:`estimate_constants` (torch)
measures the bound constants from a model and data. Everything except ``estimate_constants`` is numpy +
cvxpy only.

Provenance: only the paper's abstract and third-party summaries were available to us. From them
come the problem (P1) (minimise a bound on the average squared gradient norm under energy, delay and power
constraints, over rounds, batches, clocks and powers of both stages), the Wasserstein shift term, and the
solution route (SCA at fixed rounds, then a 2-D search over M and N). The cost formulas, the bounds, the
convex reformulation, the closed forms and the default values are our reconstruction in the usual form of
federated edge learning (FEEL) papers; each docstring says which.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgelearn.planning.allocation import Allocation, round_to_plan
from edgelearn.planning.baselines import (
    BASELINE_SCHEMES,
    finetune_only,
    fixed_ratio,
    no_optimization,
    pretrain_only,
    separate_design,
    solve_baselines,
)
from edgelearn.planning.bound import (
    BOUND_FORMS,
    AffineParts,
    Bound,
    BoundConstants,
    FineTuneGapBound,
    StageWiseBound,
    StepWeightedBound,
    affine_parts,
    get_bound,
)
from edgelearn.planning.closed_form import DeviceSplit, device_split, server_frequency
from edgelearn.planning.defaults import spec_problem
from edgelearn.planning.feasibility import MinimumBudgets, minimum_budgets
from edgelearn.planning.joint import solve
from edgelearn.planning.plan import CostBreakdown, Plan, infeasible_plan, predict_costs
from edgelearn.planning.problem import MAX_BATCH_FT, MAX_BATCH_PRE, TwoStageProblem
from edgelearn.planning.search import METHODS, InnerSolver, SearchOptions, solve_inner

if TYPE_CHECKING:
    from edgelearn.planning.constants import estimate_constants

__all__ = [
    "BASELINE_SCHEMES",
    "BOUND_FORMS",
    "MAX_BATCH_FT",
    "MAX_BATCH_PRE",
    "METHODS",
    "AffineParts",
    "Allocation",
    "Bound",
    "BoundConstants",
    "CostBreakdown",
    "DeviceSplit",
    "FineTuneGapBound",
    "InnerSolver",
    "MinimumBudgets",
    "Plan",
    "SearchOptions",
    "StageWiseBound",
    "StepWeightedBound",
    "TwoStageProblem",
    "affine_parts",
    "device_split",
    "estimate_constants",
    "finetune_only",
    "fixed_ratio",
    "get_bound",
    "infeasible_plan",
    "minimum_budgets",
    "no_optimization",
    "predict_costs",
    "pretrain_only",
    "round_to_plan",
    "separate_design",
    "server_frequency",
    "solve",
    "solve_baselines",
    "solve_inner",
    "spec_problem",
]


def __getattr__(name: str) -> Any:
    """Import the torch-based estimator only when it is used."""
    if name == "estimate_constants":
        from edgelearn.planning.constants import estimate_constants

        return estimate_constants
    raise AttributeError(f"module 'edgelearn.planning' has no attribute {name!r}")
