"""Baseline schemes: each obeys its definition, fits the same budgets, and never beats the joint design on
the bound."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny import random_systems

from edgelearn.errors import ConfigError
from edgelearn.planning import (
    BASELINE_SCHEMES,
    BoundConstants,
    SearchOptions,
    TwoStageProblem,
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

BOUND_RTOL = 1e-9
"""Slack of the joint-vs-baseline comparison. The joint design takes a baseline's plan as its own where its
search ends worse (joint.no_worse_than_baselines), and the baselines here are recomputed by the same
deterministic solver calls, so the bounds compare bit for bit; 1e-9 only absorbs floating-point
reassociation (e.g. a BLAS at another thread count), six orders below the misses it must catch: before that
fix, 0.27 % to 0.96 % (separate design, see the test below) and up to 167 % (pretrain_only, whose N = 0
inner solves often come back unverified at the cells the 2-D search tries) on problems hypothesis drew."""


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
        assert joint.bound <= plan.bound * (1 + BOUND_RTOL), name
    pure = solve(problem, options=replace(OPTIONS, min_ft_rounds=0))
    assert pure.bound <= schemes["pretrain_only"].bound * (1 + BOUND_RTOL)


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


PROPERTY_OPTIONS = SearchOptions(grid_pre=6, grid_ft=5, grid_line=10)
"""Coarse grids (the property must hold at any grid size; coarse ones made the search's misses largest)."""


@settings(
    max_examples=20,  # ~16 s; without the fix these include a miss (joint bound 4.46 vs pretrain_only 2.24)
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(random_systems(), st.sampled_from("ABCDE"), st.floats(0.0, 1.0), st.booleans())
def test_joint_plan_is_no_worse_than_any_baseline_on_its_bound(
    system: TwoStageProblem, form: str, loss_gap: float, pure_pretraining: bool
) -> None:
    """The joint design minimises the bound over a domain holding every baseline's plan (pretrain_only's
    N = 0 only with min_ft_rounds = 0), so its (integer, rounded) plan's bound is never higher."""
    problem = system.with_constants(replace(system.constants, loss_gap=loss_gap))  # forms C, D need it
    options = replace(PROPERTY_OPTIONS, min_ft_rounds=0 if pure_pretraining else 1)
    joint = solve(problem, bound=form, options=options)
    assert joint.feasible and joint.scheme == "optimized"
    for name, plan in solve_baselines(problem, bound=form, options=options).items():
        if not plan.feasible or (name == "pretrain_only" and not pure_pretraining):
            continue
        assert joint.bound <= plan.bound * (1 + BOUND_RTOL), (name, (joint.M, joint.N), (plan.M, plan.N))


def test_joint_plan_beats_separate_design_where_the_search_alone_stopped_short() -> None:
    """A problem hypothesis found (2 devices, 0.23 mJ / 1.11 s): at the default grids the search's plan,
    (M, N) = (58, 1) at bound 4.8569, was 0.96 % worse than the separate design's (43, 5) at 4.8107 (at
    6 x 5 grids, (60, 1) at 4.8236: 0.27 %). The joint design now keeps the separate design's plan there."""
    problem = TwoStageProblem.from_arrays(
        f_max_server=2000000000.0000002,
        kappa_server=1e-28,
        cycles_per_sample_server=1637578.9317981005,
        general_size=100,
        eta_pre=0.05,
        f_max=np.array([1.7878968798670738e09, 1.5460520435890460e09]),
        kappa=np.array([6.412660218314743e-29, 1.963433527455134e-28]),
        cycles_per_sample=np.array([1641709.5529855294, 1679096.4579154307]),
        p_max=np.array([0.06921704490133189, 0.11755789068433509]),
        bandwidth=5e5,
        gain=np.array([6.018239532096256e-11, 2.671228675377535e-10]),
        data_sizes=np.array([410, 309]),
        noise_psd=3.98e-21,
        payload_bits=1e5,
        eta_ft=0.05,
        energy_j=0.00023243043921046126,
        delay_s=1.1104181115312193,
        constants=BoundConstants(
            L=1.1,
            sigma2_task=25.763516955571962,
            sigma2_general=29.058464540959513,
            Delta=1.5823865921480076,
            delta=1.4983189171631,
        ),
        downlink_s=0.01,
    )
    separate = separate_design(problem)
    joint = solve(problem)
    assert separate.feasible and (separate.M, separate.N) == (43, 5)
    assert joint.bound <= separate.bound * (1 + BOUND_RTOL)
