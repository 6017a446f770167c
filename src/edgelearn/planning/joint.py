"""The joint design's public entry point, `solve` (problem (P1) of Lyu et al., arXiv 2404.00836): the outer
search of `search.py`, then no worse than any baseline scheme of `baselines.py` on its own bound.

`solve` lives here, above both, because the baselines reuse the searcher of `search.py` while the joint
design compares its plan with theirs: with `solve` in `search.py` the two modules imported each other.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace

from edgelearn.errors import BudgetError
from edgelearn.planning.baselines import baseline_candidates
from edgelearn.planning.bound import Bound, get_bound
from edgelearn.planning.feasibility import minimum_budgets
from edgelearn.planning.plan import Plan
from edgelearn.planning.problem import TwoStageProblem
from edgelearn.planning.search import (
    Domain,
    InnerSolver,
    Searcher,
    SearchOptions,
    finish,
    ft_round_limit,
    pre_round_limit,
)


def _check_budgets(problem: TwoStageProblem) -> None:
    budgets = minimum_budgets(problem)
    if not budgets.feasible:
        raise BudgetError(
            budgets.message(problem),
            hint=f"raise budget.energy_j to at least {budgets.energy_j:.6g} or budget.delay_s to at least "
            f"{budgets.delay_s:.6g}",
        )


def solve(
    problem: TwoStageProblem,
    *,
    bound: str | Bound = "A",
    method: str = "convex",
    options: SearchOptions | None = None,
    candidates: Mapping[str, Plan] | None = None,
) -> Plan:
    """Jointly optimise rounds, batches, clocks and powers of both stages (problem (P1) of Lyu et al.).

    ``candidates``: the baseline schemes' plans under the same problem, bound and options when the caller has
    them already (a report that shows them), so :func:`no_worse_than_baselines` does not solve them again.
    Raises BudgetError, naming the smallest feasible budgets, when no plan with N >= 1 fits.
    """
    start = time.perf_counter()
    opts = options or SearchOptions()
    bnd = get_bound(bound)
    _check_budgets(problem)
    searcher = Searcher(problem, bnd, InnerSolver(problem, method))
    m_hi = pre_round_limit(problem, problem.energy_j, problem.delay_s, opts.max_pre_rounds)
    n_hi = ft_round_limit(problem, searcher.cheap, problem.energy_j, problem.delay_s, opts.max_ft_rounds)
    domain = Domain((0, opts.min_ft_rounds), (m_hi, max(n_hi, 1)), lambda z: (z[0], z[1]))
    best = searcher.run(domain, (opts.grid_pre, opts.grid_ft), opts.refine)
    if best is None:
        raise BudgetError(
            f"no feasible plan found for energy_j={problem.energy_j:.6g} J, delay_s={problem.delay_s:.6g} s "
            f"after {searcher.solves} inner solves",
            hint="raise the budgets a little; they are at the edge of feasibility",
        )
    plan = _with_status(finish(problem, searcher, "optimized", start), searcher)
    return replace(
        no_worse_than_baselines(plan, problem, bnd, method, opts, candidates),
        solve_time_s=time.perf_counter() - start,
    )


def no_worse_than_baselines(
    plan: Plan,
    problem: TwoStageProblem,
    bound: Bound,
    method: str,
    options: SearchOptions,
    candidates: Mapping[str, Plan] | None = None,
) -> Plan:
    """``plan``, or the best baseline scheme's plan (relabelled "optimized") where one has a lower bound.

    The grid + compass search stops on its step tolerance (:data:`REFINE_RTOL`) or its patience rule, and
    rounding keeps only the best of a few continuous cells, so on some problems a baseline's own, differently
    searched plan came out lower (a random two-stage problem: 0.13 % on the bound; on coarse grids several
    %). A baseline's feasible plan within the joint design's domain (the round caps of ``options``; N = 0,
    pre-training only, when ``options.min_ft_rounds`` is 0) is a plan the joint design may return, so it
    evaluates them as candidates and is never worse than any of them on the bound it minimises. Given
    ``candidates`` (the baselines' plans, already solved), it uses those instead of solving them.
    """
    if candidates is None:
        candidates = baseline_candidates(problem, bound=bound, method=method, options=options)

    def in_domain(p: Plan) -> bool:
        n_cap = options.max_ft_rounds
        return (
            p.M <= options.max_pre_rounds and options.min_ft_rounds <= p.N and (n_cap is None or p.N <= n_cap)
        )

    best = plan
    for name, candidate in candidates.items():
        if candidate.feasible and in_domain(candidate) and candidate.bound < best.bound:
            status = f"{candidate.status}; the {name} baseline's plan, which the search did not beat"
            best = replace(candidate, scheme="optimized", status=status)
    return best


def _with_status(plan: Plan, searcher: Searcher) -> Plan:
    return replace(
        plan, status=f"{plan.status}; {searcher.solves} inner solves ({searcher.grid_solves} on the grid)"
    )
