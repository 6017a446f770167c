"""``edgelearn plan`` and the sweep's ``kind: landscape`` experiments: planning without training.

Two-stage configs are planned by their own planner (rounds, batches, clocks, powers); any other algorithm's
config with a ``plan:`` section by the tree planner (:func:`edgelearn.runner.tree_plan`: clocks and powers
for a recorded round). Both build a whole run context (:func:`edgelearn.runner.build_context`: data,
shift, topology, the bound constants) and two-stage's :class:`~edgelearn.algorithms.two_stage.algorithm.
TwoStage` makes its plans from it, so they sit above the runner, not in the algorithm's module (which the
runner imports).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgelearn.algorithms.two_stage.algorithm import TwoStage
from edgelearn.errors import ConfigError
from edgelearn.planning.bound import get_bound
from edgelearn.planning.feasibility import CheapestPoint
from edgelearn.planning.search import InnerSolver, ft_round_limit, log_grid, pre_round_limit
from edgelearn.run_config import RunConfig, load_config
from edgelearn.runner import build_context, tree_plan
from edgelearn.runner.planned import choose_rounds


def plan_report(cfg: RunConfig) -> dict[str, Any]:
    """Solve a two-stage config without training: the optimized Plan's JSON plus every baseline scheme's.

    Raises BudgetError (naming the smallest feasible budgets) when the budgets admit no plan.
    """
    if cfg.algorithm.name != "two_stage":
        if cfg.plan is None:
            raise ConfigError(
                f"`edgelearn plan` on a {cfg.algorithm.name} config needs a `plan:` section (objective and "
                "per-round budgets)",
                hint="e.g. --set plan.round_energy_j=50, or use configs/plan/*.yaml",
            )
        resolved, outer = choose_rounds(cfg)
        report = {"planner": "tree", "algorithm": cfg.algorithm.name, **tree_plan(resolved).summary()}
        return {**report, **({"outer": outer} if outer is not None else {})}
    algo = TwoStage(build_context(cfg))
    algo.setup()
    plans = algo.make_plans()
    report = plans["optimized"].to_json()
    report["schemes"] = {s: p.to_json() for s, p in plans.items() if s != "optimized"}
    report["round_caps"] = algo.round_caps(plans)
    report.update(algo.estimates())
    report["devices"] = int(len(algo.devices))
    return report


def landscape_report(config: Any, overrides: list[str], m_points: int, n_points: int) -> dict[str, Any]:
    """The bound over a log-spaced (M, N) grid of continuous inner optima (E6), with the optimized Plan.

    Infeasible cells hold ``inf``. Returns the grid axes, the bound matrix (rows M, columns N), the grid's
    best cell, the optimized Plan's JSON and the constants and shift they came from.
    """
    cfg = load_config(config, overrides)
    algo = TwoStage(build_context(cfg))
    algo.setup()
    problem, tcfg = algo.problem, algo.cfg
    plan = algo.make_plan("optimized")
    m_hi = pre_round_limit(problem, problem.energy_j, problem.delay_s, cap=tcfg.max_pre_rounds)
    cheap = CheapestPoint(problem)
    n_hi = ft_round_limit(problem, cheap, problem.energy_j, problem.delay_s, tcfg.max_ft_rounds)
    Ms, Ns = log_grid(0, m_hi, m_points), log_grid(0, max(n_hi, 1), n_points)
    inner, bound = InnerSolver(problem, tcfg.method), get_bound(algo.bound)
    values = np.full((len(Ms), len(Ns)), np.inf)
    for i, M in enumerate(Ms):
        for j, N in enumerate(Ns):
            if M + N == 0:
                continue
            alloc = inner.solve(M, N, bound)
            if alloc.feasible and alloc.verified:
                values[i, j] = alloc.bound
    i, j = np.unravel_index(int(np.argmin(values)), values.shape)
    return {
        "M": Ms,
        "N": Ns,
        "bound": [[float(v) if np.isfinite(v) else None for v in row] for row in values],
        "grid_best": {"M": Ms[i], "N": Ns[j], "bound": float(values[i, j])},
        "plan": plan.to_json(),
        **algo.estimates(),
    }
