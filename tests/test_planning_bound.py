"""Convergence bounds of edgelearn.planning.bound: hand-computed values, affine split, plug-in checks."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from edgelearn.errors import ConfigError
from edgelearn.planning.bound import (
    Bound,
    BoundConstants,
    FineTuneGapBound,
    LastIterateBound,
    StageWiseBound,
    StepWeightedBound,
    WarmStartBound,
    affine_parts,
    get_bound,
)

# L=2, sigma^2=4 (task), sigma~^2=3 (general), Delta=1.5, delta=0.5, loss gap 0.1; eta~=0.1, eta=0.05.
C = BoundConstants(L=2.0, sigma2_task=4.0, sigma2_general=3.0, Delta=1.5, delta=0.5, loss_gap=0.1)
ETA_PRE, ETA_FT = 0.1, 0.05
M, N = 10, 20
S_PRE, S_FT = 10 / 50, 20 / 100  # ten pre-training batches of 50, twenty rounds of 100 samples in total


def test_form_a_hand_value() -> None:
    # numerator 2*1.5 + 10*0.1*0.25 + 2*0.01*3*0.2 + 2*0.0025*4*0.2 = 3 + 0.25 + 0.012 + 0.004 = 3.266
    # denominator 10*0.1 + 20*0.05 = 2
    assert StepWeightedBound().value(M, N, S_PRE, S_FT, C, ETA_PRE, ETA_FT) == pytest.approx(1.633, rel=1e-12)
    # N = 0 (pre-training only): (3 + 0.25 + 0.012) / 1
    assert StepWeightedBound().value(M, 0, S_PRE, 0.0, C, ETA_PRE, ETA_FT) == pytest.approx(3.262, rel=1e-12)
    assert StepWeightedBound().value(0, 0, 0.0, 0.0, C, ETA_PRE, ETA_FT) == math.inf


def test_form_a_equal_steps_matches_simplified_formula() -> None:
    # form A with eta~ = eta = 0.05 simplifies to
    # 2 Delta / (eta (M+N)) + M / (M+N) delta^2 + L eta / (M+N) (sum sigma~^2 / D + sum sigma^2 / B)
    eta = 0.05
    expected = 2 * 1.5 / (eta * 30) + 10 / 30 * 0.25 + 2 * eta / 30 * (3 * S_PRE + 4 * S_FT)
    assert StepWeightedBound().value(M, N, S_PRE, S_FT, C, eta, eta) == pytest.approx(expected, rel=1e-12)


def test_form_b_hand_value() -> None:
    # mu = L / 100 = 0.02, rho = 0.998, rho^10 = 0.98017904335
    # per round: 0.1 * 0.25 / 2 + 2 * 0.01 * 3 * 0.2 / 20 = 0.0131
    # gap = 0.98017904335 * 1.5 + (1 - 0.98017904335) / 0.002 * 0.0131 = 1.60009583107
    # Phi_B = (2 * gap + 2 * 0.0025 * 4 * 0.2) / (20 * 0.05) = 3.20419166215
    assert FineTuneGapBound().value(M, N, S_PRE, S_FT, C, ETA_PRE, ETA_FT) == pytest.approx(
        3.2041916621, rel=1e-9
    )
    # N = 0: 2 L gap = 6.40038332429; M = 0: (2 * 1.5 + 0.004) / 1 = 3.004
    assert FineTuneGapBound().value(M, 0, S_PRE, 0.0, C, ETA_PRE, ETA_FT) == pytest.approx(
        6.4003833243, rel=1e-9
    )
    assert FineTuneGapBound().value(0, N, 0.0, S_FT, C, ETA_PRE, ETA_FT) == pytest.approx(3.004, rel=1e-12)
    with pytest.raises(ConfigError, match="condition_number"):
        FineTuneGapBound(condition_number=0.5)


def test_form_c_hand_value_and_missing_loss_gap() -> None:
    # (3 + 4 * 0.1 + 0.012 + 0.004) / 2 = 1.708; without pre-training the shift term disappears: 3.004 / 1
    assert StageWiseBound().value(M, N, S_PRE, S_FT, C, ETA_PRE, ETA_FT) == pytest.approx(1.708, rel=1e-12)
    assert StageWiseBound().value(0, N, 0.0, S_FT, C, ETA_PRE, ETA_FT) == pytest.approx(3.004, rel=1e-12)
    no_gap = BoundConstants(L=2.0, sigma2_task=4.0, sigma2_general=3.0, Delta=1.5, delta=0.5)
    with pytest.raises(ConfigError, match="loss_gap"):
        StageWiseBound().value(M, N, S_PRE, S_FT, no_gap, ETA_PRE, ETA_FT)


def test_form_d_hand_value_measured_mu_and_missing_loss_gap() -> None:
    # mu = L / 100 = 0.02, rho = 0.998, rho^10 = 0.98017904335; 2 eps = 0.2
    # noise = (1 - rho^10) * L eta~ sigma~^2 S_pre / (2 mu M) = 0.01982095665 * 0.3 = 0.005946286995
    # gap = 0.98017904335 * 1.7 + 0.005946286995 + 0.2 = 1.87225066069
    # Phi_D = (2 gap + 2 * 0.0025 * 4 * 0.2) / (20 * 0.05) = 3.74850132138; N = 0: 2 L gap = 7.48900264276
    bound = WarmStartBound()
    assert bound.value(M, N, S_PRE, S_FT, C, ETA_PRE, ETA_FT) == pytest.approx(3.7485013214, rel=1e-9)
    assert bound.value(M, 0, S_PRE, 0.0, C, ETA_PRE, ETA_FT) == pytest.approx(7.4890026428, rel=1e-9)
    assert WarmStartBound().value(0, N, 0.0, S_FT, C, ETA_PRE, ETA_FT) == pytest.approx(3.004, rel=1e-12)
    # a measured PL constant replaces L / condition_number: mu = 0.5, rho^10 = 0.95^10 = 0.598736939
    measured = BoundConstants(**{**C.to_dict(), "mu": 0.5})
    assert WarmStartBound().value(M, N, S_PRE, S_FT, measured, ETA_PRE, ETA_FT) == pytest.approx(
        2.449335906, rel=1e-8
    )
    no_gap = BoundConstants(L=2.0, sigma2_task=4.0, sigma2_general=3.0, Delta=1.5, delta=0.5)
    with pytest.raises(ConfigError, match="loss_gap"):
        WarmStartBound().value(M, N, S_PRE, S_FT, no_gap, ETA_PRE, ETA_FT)
    assert get_bound("d").name == "D"


def test_form_e_hand_value() -> None:
    # gap_M = 1.87225066069 (form D's, above); rho_ft = 1 - 0.02 * 0.05 = 0.999, rho^20 = 0.98018886483
    # noise = (1 - rho^20) * L eta sigma^2 S_ft / (2 mu N) = (1 - rho^20) * 0.1
    bound = LastIterateBound()
    assert bound.value(M, N, S_PRE, S_FT, C, ETA_PRE, ETA_FT) == pytest.approx(1.8371403633, rel=1e-9)
    assert bound.value(M, 0, S_PRE, 0.0, C, ETA_PRE, ETA_FT) == pytest.approx(1.8722506607, rel=1e-9)
    # no pre-training: the gap starts at Delta = 1.5
    assert bound.value(0, N, 0.0, S_FT, C, ETA_PRE, ETA_FT) == pytest.approx(
        0.98018886483 * 1.5 + (1 - 0.98018886483) * 0.1, rel=1e-9
    )
    assert math.isinf(bound.value(0, 0, 0.0, 0.0, C, ETA_PRE, ETA_FT))
    assert affine_parts(bound, M, N, C, ETA_PRE, ETA_FT).weight_ft > 0


def test_affine_parts_of_form_a() -> None:
    parts = affine_parts(StepWeightedBound(), M, N, C, ETA_PRE, ETA_FT)
    assert parts.offset == pytest.approx(1.625, rel=1e-12)  # (3 + 0.25) / 2
    assert parts.weight_pre == pytest.approx(0.03, rel=1e-9)  # 2 * 0.01 * 3 / 2
    assert parts.weight_ft == pytest.approx(0.01, rel=1e-9)  # 2 * 0.0025 * 4 / 2
    assert parts.value(S_PRE, S_FT) == pytest.approx(1.633, rel=1e-12)


@dataclass(frozen=True)
class _Quadratic:
    name: str = "quadratic"

    def value(
        self, M: int, N: int, s_pre: float, s_ft: float, constants: BoundConstants, e1: float, e2: float
    ) -> float:
        return 1.0 + s_pre**2 + s_ft


@dataclass(frozen=True)
class _RewardsSmallBatches:
    name: str = "bad"

    def value(
        self, M: int, N: int, s_pre: float, s_ft: float, constants: BoundConstants, e1: float, e2: float
    ) -> float:
        return 1.0 - s_ft


def test_affine_parts_rejects_non_affine_and_decreasing_bounds() -> None:
    with pytest.raises(ConfigError, match="not affine"):
        affine_parts(_Quadratic(), M, N, C, ETA_PRE, ETA_FT)
    with pytest.raises(ConfigError, match="decreases"):
        affine_parts(_RewardsSmallBatches(), M, N, C, ETA_PRE, ETA_FT)


def test_get_bound_by_name_and_plugin() -> None:
    assert isinstance(get_bound("a"), StepWeightedBound)
    assert isinstance(get_bound("B"), FineTuneGapBound)
    assert isinstance(get_bound("C"), StageWiseBound)
    custom = _Quadratic()
    assert isinstance(custom, Bound)
    assert get_bound(custom) is custom
    with pytest.raises(ConfigError, match="unknown form"):
        get_bound("Z")
    with pytest.raises(ConfigError, match="Bound protocol"):
        get_bound(42)  # type: ignore[arg-type]


def test_constants_validation_and_round_trip() -> None:
    assert BoundConstants.from_dict(C.to_dict()) == C
    with pytest.raises(ConfigError, match="BoundConstants.L"):
        BoundConstants(L=0.0, sigma2_task=1.0, sigma2_general=1.0, Delta=1.0, delta=0.0)
    with pytest.raises(ConfigError, match="BoundConstants.delta"):
        BoundConstants(L=1.0, sigma2_task=1.0, sigma2_general=1.0, Delta=1.0, delta=-0.1)
    with pytest.raises(ConfigError, match="finite"):
        BoundConstants(L=1.0, sigma2_task=math.nan, sigma2_general=1.0, Delta=1.0, delta=0.0)
    with pytest.raises(ConfigError, match="unknown keys"):
        BoundConstants.from_dict({**C.to_dict(), "G": 1.0})
