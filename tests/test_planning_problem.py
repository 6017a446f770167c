"""TwoStageProblem construction and validation, the cost prediction, and Plan serialisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgelearn.errors import BudgetError, ConfigError
from edgelearn.planning import BoundConstants, TwoStageProblem, infeasible_plan, predict_costs, spec_problem

CONSTANTS = BoundConstants(L=1.0, sigma2_task=10.0, sigma2_general=10.0, Delta=2.3, delta=0.5)


def hand_problem(**overrides: object) -> TwoStageProblem:
    """K = 2; W = 1e5 Hz, N0 = 1e-20 W/Hz, q = 1e4 bits; at full power the SNRs are 3 and 1."""
    args: dict[str, object] = dict(
        f_max_server=5e9,
        kappa_server=1e-28,
        cycles_per_sample_server=1e6,
        general_size=1000,
        eta_pre=0.05,
        f_max=[1e9, 1e9],
        kappa=1e-28,
        cycles_per_sample=1e6,
        p_max=[0.1, 0.05],
        bandwidth=1e5,
        gain=[3e-14, 2e-14],
        data_sizes=[300, 500],
        noise_psd=1e-20,
        payload_bits=1e4,
        eta_ft=0.05,
        energy_j=10.0,
        delay_s=10.0,
        constants=CONSTANTS,
        downlink_s=0.01,
    )
    args.update(overrides)
    return TwoStageProblem.from_arrays(**args)  # type: ignore[arg-type]


def test_from_arrays_broadcasts_and_derives_radio_quantities() -> None:
    pb = hand_problem()
    assert pb.num_devices == 2 and not pb.per_round and pb.rounds_available is None
    np.testing.assert_array_equal(pb.kappa, [1e-28, 1e-28])
    np.testing.assert_array_equal(pb.batch_cap_ft, [300, 500])
    assert pb.batch_cap_pre == 1000
    # tau_min = q / (W log2(1 + SNR_max)): 1e4 / (1e5 * 2) and 1e4 / (1e5 * 1)
    np.testing.assert_allclose(pb.min_upload_time(pb.gains())[0], [0.05, 0.1], rtol=1e-12)
    np.testing.assert_allclose(pb.noise_over_gain(pb.gains())[0], [1e-15 / 3e-14, 1e-15 / 2e-14], rtol=1e-12)
    assert pb.bound_valid  # eta = 0.05 <= 1 / L = 1
    assert not pb.with_constants(
        BoundConstants(L=50.0, sigma2_task=1, sigma2_general=1, Delta=1, delta=0)
    ).bound_valid
    cheaper = pb.with_budgets(energy_j=3.0)
    assert cheaper.energy_j == 3.0 and cheaper.delay_s == 10.0
    assert pb.f_max.flags.writeable is False


def test_per_round_gains_shape() -> None:
    pb = hand_problem(gain=np.full((4, 2), 3e-14))
    assert pb.per_round and pb.rounds_available == 4
    assert pb.gains(3).shape == (3, 2)
    with pytest.raises(ConfigError, match="gains are given for 4 rounds"):
        pb.gains(5)


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"f_max": [1e9, -1.0]}, ConfigError, "f_max"),
        ({"kappa": [1e-28, 1e-28, 1e-28]}, ConfigError, "disagree"),
        ({"gain": np.ones((2, 3))}, ConfigError, "disagree"),
        ({"data_sizes": [300.5, 500]}, ConfigError, "whole numbers"),
        ({"general_size": 0}, ConfigError, "general_size"),
        ({"eta_ft": 0.0}, ConfigError, "eta_ft"),
        ({"noise_psd": math.inf}, ConfigError, "noise_psd"),
        ({"downlink_s": -1.0}, ConfigError, "downlink_s"),
        ({"energy_j": 0.0}, BudgetError, "energy_j"),
        ({"delay_s": -5.0}, BudgetError, "delay_s"),
        ({"constants": {"L": 1.0}}, ConfigError, "BoundConstants"),
    ],
)
def test_validation_names_the_field(overrides: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        hand_problem(**overrides)


def test_direct_constructor_rejects_wrong_lengths() -> None:
    pb = hand_problem()
    with pytest.raises(ConfigError, match="kappa: shape"):
        TwoStageProblem(**{**_fields(pb), "kappa": np.ones(3)})


def _fields(pb: TwoStageProblem) -> dict[str, object]:
    from dataclasses import fields

    return {f.name: getattr(pb, f.name) for f in fields(pb)}


def test_predict_costs_hand_values() -> None:
    pb = hand_problem()
    # server: D = 100 at 2 GHz: 1e8 cycles -> 0.05 s and 1e-28 * 1e8 * 4e18 = 0.04 J per round; M = 3
    # devices: B = (10, 20) at (1, 0.5) GHz: compute (0.01 s, 1e-3 J) and (0.04 s, 5e-4 J)
    #          power (0.1, 0.05) W -> SNR (3, 1) -> rates (2e5, 1e5) b/s
    #          -> uploads (0.05, 0.1) s and (5e-3, 5e-3) J
    # round: max(0.06, 0.14) + 0.01 downlink = 0.15 s, 0.0115 J; N = 4
    costs = predict_costs(pb, 3, 4, 100, 2e9, np.array([10, 20]), np.array([1e9, 5e8]), np.array([0.1, 0.05]))
    assert costs.energy_pre_j == pytest.approx(0.12, rel=1e-12)
    assert costs.delay_pre_s == pytest.approx(0.15, rel=1e-12)
    assert costs.energy_ft_j == pytest.approx(0.046, rel=1e-12)
    assert costs.delay_ft_s == pytest.approx(0.6, rel=1e-12)
    assert costs.energy_j == pytest.approx(0.166, rel=1e-12)
    assert costs.delay_s == pytest.approx(0.75, rel=1e-12)
    np.testing.assert_allclose(costs.round_delay_ft_s, [0.15], rtol=1e-12)
    # the same allocation written per round gives the same totals
    per_round = predict_costs(
        pb,
        3,
        4,
        100,
        2e9,
        np.tile([10, 20], (4, 1)),
        np.tile([1e9, 5e8], (4, 1)),
        np.tile([0.1, 0.05], (4, 1)),
    )
    assert per_round.energy_j == pytest.approx(0.166, rel=1e-12)
    assert per_round.delay_s == pytest.approx(0.75, rel=1e-12)


def test_infeasible_plan_json_is_strict_json() -> None:
    pb = hand_problem()
    plan = infeasible_plan("pretrain_only", pb, status="nothing fits", bound_name="A")
    data = plan.to_json()
    assert {"M", "N", "energy_j", "delay_s", "bound", "feasible"} <= set(data)
    assert data["bound"] is None and data["feasible"] is False
    json.loads(json.dumps(data, allow_nan=False))
    assert plan.violations(pb) == ["plan is marked infeasible"]


def test_spec_problem_defaults() -> None:
    pb = spec_problem(10, seed=3)
    assert pb.num_devices == 10
    np.testing.assert_allclose(pb.bandwidth, 1e5)  # W = 1 MHz split over 10 devices
    # path loss 128.1 + 37.6 log10(d_km) with d in [50, 250] m -> gains in [10^-10.55, 10^-7.92]
    assert np.all(pb.gain >= 10**-10.56) and np.all(pb.gain <= 10**-7.91)
    assert spec_problem(4, fading_rounds=6).gain.shape == (6, 4)
