"""Round caps of the two-stage planner: absurd budgets give a valid plan (no int64 overflow into numpy object
arrays), every scheme obeys the same caps so the joint design is never beaten because of one, and a cap that
binds is reported (JSON and the `plan` table)."""

from __future__ import annotations

import math

import pytest
from tiny import TWO_STAGE_CONFIG, TWO_STAGE_TINY

from edgelearn.errors import ConfigError
from edgelearn.planning import SearchOptions, solve
from edgelearn.planning.baselines import no_optimization, solve_baselines
from edgelearn.planning.defaults import spec_problem
from edgelearn.planning.search import log_grid, pre_round_limit
from edgelearn.run_config import load_config


@pytest.mark.parametrize("budget", [1e12, 1e30])
def test_huge_budgets_give_valid_capped_plans(budget: float) -> None:
    problem = spec_problem(4, energy_j=budget, delay_s=budget)
    options = SearchOptions(max_ft_rounds=200, max_pre_rounds=10_000)
    plans = {"optimized": solve(problem, options=options), **solve_baselines(problem, options=options)}
    for name, plan in plans.items():
        assert plan.feasible and math.isfinite(plan.bound), name
        assert plan.M <= 10_000 and plan.N <= 200, name
    uncapped = no_optimization(problem)  # library default: no cap on N; clipped to an exact int, no crash
    assert uncapped.feasible and uncapped.N > 0
    assert log_grid(0, 10**40, 5)[-1] == 10**40 and pre_round_limit(problem, budget, budget, None) > 10_000


@pytest.mark.parametrize(
    ("energy_j", "delay_s", "cap"), [(200.0, 600.0, 50), (30.0, 300.0, 20), (5.0, 60.0, 40)]
)
def test_the_joint_design_is_never_worse_than_no_optimization_under_the_same_cap(
    energy_j: float, delay_s: float, cap: int
) -> None:
    problem = spec_problem(4, energy_j=energy_j, delay_s=delay_s)
    options = SearchOptions(max_ft_rounds=cap)
    best, base = solve(problem, options=options), no_optimization(problem, options=options)
    assert base.N <= cap
    assert best.bound <= base.bound * (1 + 1e-6)


def test_plan_report_names_a_binding_cap_and_the_table_warns() -> None:
    from edgelearn.commands.plan import plan_report
    from edgelearn.report.tables import plans_table

    cfg = load_config(
        TWO_STAGE_CONFIG,
        [
            *TWO_STAGE_TINY,
            "algorithm.budget.energy_j=200",
            "algorithm.budget.delay_s=600",
            "algorithm.max_ft_rounds=40",
        ],
    )
    report = plan_report(cfg)
    caps = {c["key"]: c for c in report["round_caps"]}
    ft = caps["algorithm.max_ft_rounds"]
    assert ft["cap"] == 40 and ft["budgets_allow"] > 40 and "no_optimization" in ft["schemes"]
    assert report["N"] <= 40 and report["schemes"]["no_optimization"]["N"] <= 40
    assert report["bound"] <= report["schemes"]["no_optimization"]["bound"] * (1 + 1e-6)
    caption = str(plans_table(report).caption)
    assert "warning" in caption and "algorithm.max_ft_rounds=40 binds" in caption


def test_budgets_beyond_the_float_safe_range_name_the_key() -> None:
    with pytest.raises(
        ConfigError, match=r"`algorithm.budget.energy_j`: Input should be less than or equal to 10{30}"
    ):
        load_config(TWO_STAGE_CONFIG, ["algorithm.budget.energy_j=1e300"])
