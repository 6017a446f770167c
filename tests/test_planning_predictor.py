"""Form P: the pilot-calibrated objective (planning/predictor.py) and its pilot (planning/calibrate.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny import TWO_STAGE_CONFIG, TWO_STAGE_TINY
from torch import nn

from edgelearn.errors import ConfigError
from edgelearn.planning import affine_parts, solve, solve_baselines, spec_problem
from edgelearn.planning.calibrate import SENSITIVITY_BATCH_FACTOR, Calibrator, step_grid
from edgelearn.planning.predictor import CalibratedBound, Calibration

CONSTANTS = spec_problem(3).constants


def _cal(**kw: object) -> Calibration:
    base: dict[str, object] = {
        "pre_steps": (0, 10, 30),
        "ft_steps": (0, 4, 8),
        "table": ((0.9, 0.5, 0.4), (0.6, 0.3, 0.2), (0.7, 0.35, 0.3)),
        "batch_pre": 64,
        "batch_ft": 8,
        "sensitivity_pre": 2.0,
        "sensitivity_ft": 0.5,
    }
    base.update(kw)
    return Calibration(**base)  # type: ignore[arg-type]


def test_predict_interpolates_the_table_by_hand() -> None:
    cal = _cal()
    assert cal.predict(10, 4) == pytest.approx(0.3)  # a grid point
    assert cal.predict(10, 6) == pytest.approx(0.25)  # halfway between 0.3 and 0.2 along N
    assert cal.predict(20, 4) == pytest.approx(0.325)  # halfway between 0.3 and 0.35 along M
    # bilinear: rows at N = 2 are 0.7, 0.45, 0.525; M = 5 is halfway between the first two
    assert cal.predict(5, 2) == pytest.approx(0.575)
    assert cal.predict(100, 50) == pytest.approx(0.3)  # held at the last measured value beyond the range


def test_value_adds_the_batch_terms_by_hand() -> None:
    bound = CalibratedBound(_cal())
    # M = 10 at batch 32 (S_pre = 10 / 32), N = 4 at total batch 16 (S_ft = 4 / 16)
    expected = 0.3 + 2.0 * (1 / 32 - 1 / 64) + 0.5 * (1 / 16 - 1 / 8)
    assert bound.value(10, 4, 10 / 32, 4 / 16, CONSTANTS, 0.05, 0.05) == pytest.approx(expected)
    assert bound.value(0, 4, 0.0, 4 / 8, CONSTANTS, 0.05, 0.05) == pytest.approx(0.5)  # no pre-training term
    assert bound.value(10, 0, 10 / 64, 0.0, CONSTANTS, 0.05, 0.05) == pytest.approx(0.6)
    assert math.isinf(bound.value(0, 0, 0.0, 0.0, CONSTANTS, 0.05, 0.05))


@settings(max_examples=50, deadline=None)
@given(M=st.integers(0, 40), N=st.integers(0, 12))
def test_form_p_is_affine_and_non_decreasing_in_the_inverse_batch_sums(M: int, N: int) -> None:
    parts = affine_parts(CalibratedBound(_cal()), M, N, CONSTANTS, 0.05, 0.05)  # raises if not affine
    if M + N == 0:
        assert math.isinf(parts.offset)
        return
    assert parts.weight_pre == pytest.approx(2.0 / M if M else 0.0)
    assert parts.weight_ft == pytest.approx(0.5 / N if N else 0.0)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"pre_steps": (1, 10, 30)}, "pre_steps"),
        ({"ft_steps": (0, 8, 4)}, "ft_steps"),
        ({"table": ((0.9, 0.5), (0.6, 0.3), (0.7, 0.35))}, "shape"),
        ({"table": ((0.9, 0.5, float("nan")), (0.6, 0.3, 0.2), (0.7, 0.35, 0.3))}, "non-finite"),
        ({"sensitivity_ft": -1.0}, "sensitivity_ft"),
        ({"batch_pre": 0}, "batches"),
        ({"metric": "accuracy"}, "metric"),
    ],
)
def test_bad_calibrations_name_what_is_wrong(change: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        _cal(**change)


def test_calibration_round_trips_through_a_dict() -> None:
    cal = _cal()
    assert Calibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(ConfigError, match="unknown keys"):
        Calibration.from_dict({**cal.to_dict(), "extra": 1})


def test_the_planner_with_form_p_finds_the_tables_best_affordable_cell() -> None:
    """A table that rewards both stages, with a clear interior optimum once costs bind: the joint plan
    beats every baseline in its own objective and spends within the budgets."""
    pb = spec_problem(3)
    base = solve(pb, bound="A")
    m_hi, n_hi = 4 * max(base.N, 10), 4 * max(base.N, 10)
    pre = tuple(int(v) for v in np.linspace(0, m_hi, 9))
    ft = tuple(int(v) for v in np.linspace(0, n_hi, 9))
    # error falls with both: pre-training helps up to a floor, fine-tuning keeps helping
    table = tuple(
        tuple(0.1 + 0.5 * math.exp(-3 * m / m_hi) * 0.6 + 0.3 * math.exp(-2 * n / n_hi) for n in ft)
        for m in pre
    )
    bound = CalibratedBound(
        _cal(pre_steps=pre, ft_steps=ft, table=table, sensitivity_pre=0.5, sensitivity_ft=0.5)
    )
    plan = solve(pb, bound=bound)
    assert (
        plan.feasible
        and plan.energy_j <= pb.energy_j * (1 + 1e-6)
        and plan.delay_s <= pb.delay_s * (1 + 1e-6)
    )
    for name, other in solve_baselines(pb, bound=bound).items():
        if other.feasible:
            assert plan.bound <= other.bound * (1 + 1e-6), name


# ---------------------------------------------------------------------------------------------- the pilot
def _blobs(n: int, shift: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(3, (n,), generator=g)
    centers = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    x = centers[y] + 0.6 * torch.randn(n, 2, generator=g) + shift
    return x, y


def _calibrator(**kw: object) -> Calibrator:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))
    args: dict[str, object] = {"batch_ft": 8, "lr_pre": 0.1, "lr_ft": 0.1, "probe_samples": 200, "seed": 3}
    args.update(kw)
    return Calibrator(model, _blobs(600, 0.5, 1), _blobs(600, 0.0, 2), **args)  # type: ignore[arg-type]


def _pilot(max_pre: int = 40, **kw: object) -> Calibration:
    return _calibrator(**kw).measure(
        max_pre=max_pre, max_ft=30, batch_pre=16, pre_points=4, ft_points=4, sensitivity_steps=20
    )


def test_pilot_is_deterministic_and_shaped_by_its_grids() -> None:
    a, b = _pilot(), _pilot()
    assert a == b
    assert a.pre_steps == tuple(step_grid(40, 4)) and a.ft_steps == tuple(step_grid(30, 4))
    table = np.asarray(a.table)
    assert table.shape == (len(a.pre_steps), len(a.ft_steps))
    assert np.all(np.diff(table, axis=1) <= 1e-12)  # isotonic: more fine-tuning never predicts worse
    assert np.all((table >= 0) & (table <= 1))  # error rates
    assert table[0, 0] > table[-1, -1]  # training does learn the blobs
    assert a.sensitivity_pre >= 0 and a.sensitivity_ft >= 0


def test_pilot_measures_loss_on_request_and_handles_no_pre_training() -> None:
    cal = _pilot(metric="loss", max_pre=0)
    assert cal.pre_steps == (0,) and cal.sensitivity_pre == 0.0 and cal.metric == "loss"
    assert cal.table[0][0] > cal.table[0][-1] > 0


def test_sensitivities_are_slopes_over_the_measured_batch_ranges() -> None:
    assert SENSITIVITY_BATCH_FACTOR == 4  # documented in the module; the slopes are per unit of 1/B
    cal = _pilot()
    # pre-training compares batch 16 with 1, fine-tuning batch 2 with 32: over those ranges of 1/B the
    # slopes must stay plausible changes of an error rate
    assert cal.sensitivity_pre * (1 - 1 / 16) <= 1.0
    assert cal.sensitivity_ft * (1 / 2 - 1 / 32) <= 1.0


def test_pre_sensitivity_is_a_chord_to_the_tables_batch() -> None:
    calibrator = _calibrator()
    cal = calibrator.measure(
        max_pre=40, max_ft=30, batch_pre=16, pre_points=4, ft_points=4, sensitivity_steps=20
    )
    assert calibrator.pre_sensitivity(cal, 20, 16) == 0.0  # not below the table's batch: nothing to charge
    assert calibrator.pre_sensitivity(cal, 0, 2) == 0.0
    slope = calibrator.pre_sensitivity(cal, 20, 2)
    assert slope >= 0 and slope == calibrator.pre_sensitivity(cal, 20, 2)  # deterministic
    # the chord's rise over 1/2 - 1/16 is an error-rate difference: at most 1
    assert slope * (1 / 2 - 1 / 16) <= 1.0


def test_step_grid_joins_log_and_even_spacing() -> None:
    # log-spaced: 0 and geomspace(1, 100, 4) = 1, 4.6, 21.5, 100 rounded; evenly spaced: 0, 25, ..., 100
    assert step_grid(100, 5) == [0, 1, 5, 22, 25, 50, 75, 100]
    assert step_grid(0, 5) == [0]


def test_two_stage_with_form_p_plans_from_a_cached_pilot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgelearn.algorithms.two_stage import algorithm as two_stage
    from edgelearn.commands.plan import plan_report
    from edgelearn.run_config import load_config

    overrides = [
        *TWO_STAGE_TINY,
        "algorithm.bound=P",
        f"algorithm.constants_cache={tmp_path}",
        "algorithm.calibration.max_pre_steps=60",
        "algorithm.calibration.max_ft_steps=40",
        "algorithm.calibration.probe_samples=128",
    ]
    report = plan_report(load_config(TWO_STAGE_CONFIG, overrides))
    assert report["feasible"] and report["bound_name"] == "P"
    cal = report["calibration"]
    assert cal["pre_steps"][-1] <= 60 and cal["ft_steps"][-1] <= 40
    assert 0 <= report["bound"] <= 1.5  # a predicted error rate, plus batch terms
    assert len(list(tmp_path.glob("calibration-*.json"))) == 1

    def fail(*args: object, **kw: object) -> None:
        raise AssertionError("the cached calibration should have been used")

    monkeypatch.setattr("edgelearn.planning.calibrate.Calibrator.measure", fail)
    again = plan_report(load_config(TWO_STAGE_CONFIG, overrides))
    assert again["calibration"] == cal and again["M"] == report["M"] and again["N"] == report["N"]
    assert two_stage.CONSTANTS_CACHE_VERSION >= 3
