"""Baseline schemes of spec §8.5: each obeys its definition, fits the same budgets, and never beats the
joint design on the bound."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from edgelearn.errors import ConfigError
from edgelearn.planning import (
    BASELINE_SCHEMES,
    SearchOptions,
    fixed_ratio,
    no_optimization,
    separate_design,
    solve,
    solve_baselines,
    spec_problem,
)
from edgelearn.planning.baselines import NO_OPT_BATCH_FT, NO_OPT_BATCH_PRE
from edgelearn.planning.plan import predict_costs

OPTIONS = SearchOptions(grid_pre=8, grid_ft=6, grid_line=10)


@pytest.fixture(scope="module")
def problem():  # type: ignore[no-untyped-def]
    pb = spec_problem(4, seed=0, energy_j=30.0, delay_s=100.0)
    return pb.with_constants(replace(pb.constants, delta=math.sqrt(0.1)))


@pytest.fixture(scope="module")
def schemes(problem):  # type: ignore[no-untyped-def]
    return solve_baselines(problem, options=OPTIONS)


def test_every_scheme_is_feasible_on_the_same_budgets(problem, schemes) -> None:  # type: ignore[no-untyped-def]
    assert tuple(schemes) == BASELINE_SCHEMES
    for name, plan in schemes.items():
        assert plan.scheme == name
        assert plan.feasible, (name, plan.status)
        assert plan.violations(problem) == [], name
        assert (plan.energy_budget_j, plan.delay_budget_s) == (problem.energy_j, problem.delay_s)


def test_schemes_follow_their_definitions(problem, schemes) -> None:  # type: ignore[no-untyped-def]
    assert schemes["finetune_only"].M == 0 and schemes["finetune_only"].N >= 1
    assert schemes["pretrain_only"].N == 0 and schemes["pretrain_only"].M >= 1
    assert schemes["fixed_ratio"].M == schemes["fixed_ratio"].N
    plain = schemes["no_optimization"]
    np.testing.assert_array_equal(plain.f_devices, problem.f_max)
    np.testing.assert_array_equal(plain.p_devices, problem.p_max)
    np.testing.assert_array_equal(plain.batch_ft, np.minimum(NO_OPT_BATCH_FT, problem.batch_cap_ft))
    if plain.M:
        assert plain.batch_pre == NO_OPT_BATCH_PRE and plain.f_server == problem.f_max_server


def test_no_optimization_takes_the_largest_n_that_fits(problem, schemes) -> None:  # type: ignore[no-untyped-def]
    plain = schemes["no_optimization"]
    one_more = predict_costs(
        problem,
        plain.M,
        plain.N + 1,
        plain.batch_pre,
        plain.f_server,
        plain.batch_ft,
        plain.f_devices,
        plain.p_devices,
    )
    assert one_more.energy_j > problem.energy_j or one_more.delay_s > problem.delay_s


def test_separate_design_keeps_each_stage_in_its_half(problem, schemes) -> None:  # type: ignore[no-untyped-def]
    split = schemes["separate"]
    assert split.M >= 1 and split.N >= 1
    assert split.energy_pre_j <= problem.energy_j / 2 * (1 + 1e-6)
    assert split.delay_pre_s <= problem.delay_s / 2 * (1 + 1e-6)
    assert split.energy_ft_j <= problem.energy_j / 2 * (1 + 1e-6)
    assert split.delay_ft_s <= problem.delay_s / 2 * (1 + 1e-6)


def test_joint_design_is_at_least_as_good_on_the_bound(problem, schemes) -> None:  # type: ignore[no-untyped-def]
    joint = solve(problem, options=OPTIONS)
    for name, plan in schemes.items():
        if name == "pretrain_only":
            continue  # N = 0 is outside the joint design's N >= 1 (see SearchOptions.min_ft_rounds)
        assert joint.bound <= plan.bound * (1 + 1e-6), name
    pure = solve(problem, options=replace(OPTIONS, min_ft_rounds=0))
    assert pure.bound <= schemes["pretrain_only"].bound * (1 + 1e-3)


def test_impossible_budgets_give_infeasible_plans_not_errors() -> None:
    pb = spec_problem(3, energy_j=1e-6, delay_s=0.01)
    plans = solve_baselines(pb, options=OPTIONS)
    for name, plan in plans.items():
        assert not plan.feasible, name
        assert plan.bound == math.inf and plan.to_json()["bound"] is None


def test_baseline_arguments_are_validated(problem) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="ratio"):
        fixed_ratio(problem, ratio=-1.0)
    with pytest.raises(ConfigError, match="share"):
        separate_design(problem, share=1.0)
    with pytest.raises(ConfigError, match="batches"):
        no_optimization(problem, batch_ft=0)


def test_fixed_ratio_two_to_one(problem) -> None:  # type: ignore[no-untyped-def]
    plan = fixed_ratio(problem, ratio=2.0, options=OPTIONS)
    assert plan.feasible and plan.M == 2 * plan.N


def test_baselines_with_per_round_channels() -> None:
    pb = spec_problem(3, seed=5, energy_j=20.0, delay_s=60.0, fading_rounds=4)
    plans = solve_baselines(pb, options=OPTIONS)
    for name, plan in plans.items():
        assert plan.feasible and plan.violations(pb) == [], name
        if plan.N:
            assert plan.batch_ft.shape == (plan.N, 3), name
