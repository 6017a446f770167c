"""Two-stage edge learning's settings (Lyu et al., arXiv 2404.00836): the data shift, budgets, the bound or
calibrated predictor the planner uses, and the fine-tuning step size."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from edgelearn.config.base import NonNegInt, PositiveFloat, PositiveInt, Section


class ShiftConfig(Section):
    """How the server's general data and the devices' task data differ (data/shift.py)."""

    kind: Literal["label", "rotation", "noise"] = "rotation"
    level: float = Field(0.3, ge=0, le=1, description="0 = same distribution, 1 = strongest shift")
    general_fraction: float = Field(0.5, gt=0, lt=1, description="share of the train split on the server")
    w1_samples: PositiveInt = Field(500, description="subsample size of the exact Wasserstein-1 estimate")


BUDGET_MAX = 1e30
"""Largest energy (J) or delay (s) budget accepted: far beyond any device, and below where the planner's
float arithmetic (e.g. E T^2 in the round limits) would overflow. Huge budgets up to here give a valid plan
held to ``max_pre_rounds`` / ``max_ft_rounds`` (reported when they bind)."""


class BudgetConfig(Section):
    """Total energy and delay budgets over both stages (the constraints of problem (P1))."""

    energy_j: Annotated[float, Field(gt=0, le=BUDGET_MAX)] = 20.0
    delay_s: Annotated[float, Field(gt=0, le=BUDGET_MAX)] = 60.0


class CalibrationConfig(Section):
    """The pilot that calibrates bound form P (planning/predictor.py, planning/calibrate.py)."""

    metric: Literal["error", "loss"] = Field("error", description="what form P predicts: task error or loss")
    batch_pre: PositiveInt = Field(
        256, description="pre-training batch of the pilot (it pre-trains as long as half this batch allows)"
    )
    batch_ft: PositiveInt = Field(
        20, description="total fine-tuning batch per pilot step (summed over devices)"
    )
    pre_points: int = Field(
        7, ge=2, description="pre-training checkpoints: this many log-spaced and this many evenly spaced"
    )
    ft_points: int = Field(
        12, ge=2, description="fine-tuning evaluations per checkpoint: this many log- and evenly spaced"
    )
    probe_samples: PositiveInt = Field(1024, description="task samples held out of the pilot to measure on")
    sensitivity_steps: PositiveInt = Field(60, description="steps of each batch-sensitivity run")
    repeats: PositiveInt = Field(3, description="pilot fine-tuning and sensitivity runs averaged per point")
    refine_rounds: NonNegInt = Field(
        3,
        description="times the pre-training batch sensitivity is re-measured at the joint plan's batch when "
        "that is below half the pilot's (planning/calibrate.py); 0 = keep the first chord",
    )
    max_pre_steps: PositiveInt = Field(
        5000, description="the pilot pre-trains at most this long; beyond it form P assumes no progress"
    )
    max_ft_steps: PositiveInt = Field(
        1000, description="the pilot fine-tunes at most this long; beyond it form P assumes no progress"
    )


class PlannedLocalConfig(Section):
    """Fine-tuning SGD whose batch sizes and step counts the two-stage plan chooses: only the step size is
    set here (our default 0.05); the planner's bound assumes plain SGD."""

    lr: PositiveFloat = Field(0.05, description="fine-tuning step size eta")


class TwoStageConfig(Section):
    """Two-stage edge learning: plan rounds, batches, clocks and powers, then execute the plan."""

    name: Literal["two_stage"] = "two_stage"
    renamed: ClassVar[Mapping[str, str]] = {"eta_ft": "local.lr"}
    scheme: Literal[
        "optimized", "finetune_only", "pretrain_only", "fixed_ratio", "no_optimization", "separate"
    ] = Field("optimized", description="the joint design or one of the baseline schemes")
    shift: ShiftConfig = ShiftConfig()
    budget: BudgetConfig = BudgetConfig()
    eta_pre: PositiveFloat = Field(0.05, description="pre-training step size eta~")
    local: PlannedLocalConfig = Field(
        PlannedLocalConfig(),
        description="devices' fine-tuning SGD (its batches and steps come from the plan)",
    )
    bound: Literal["A", "B", "C", "D", "E", "P"] = Field(
        "A",
        description="bound form: A (step-weighted, ours), B, C (alternatives), D (warm start), "
        "E (last iterate), P (not a bound: the task error predicted from a pilot run, `calibration`)",
    )
    calibration: CalibrationConfig = CalibrationConfig()
    method: Literal["convex", "sca"] = Field(
        "convex", description="inner solver: exact convex (our reformulation) or SCA (the paper's)"
    )
    max_batch_pre: PositiveInt = Field(5000, description="cap on the pre-training batch")
    max_batch_ft: PositiveInt = Field(1000, description="cap on a device's batch (also |D_k|)")
    max_ft_rounds: PositiveInt = Field(
        500,
        description="most fine-tuning rounds any scheme may plan (keep small with fading: one program per N, "
        "and the per-round gains are drawn for this many rounds); `plan` and summary.json report it under "
        "round_caps when the budgets would allow more",
    )
    max_pre_rounds: PositiveInt = Field(
        1_000_000,
        description="most pre-training steps any scheme may plan; reported under round_caps when it binds",
    )
    constants_seed: NonNegInt = Field(0, description="seed of the bound-constant estimators")
    pilot_steps: NonNegInt = Field(
        300,
        description="SGD steps of a pilot pre-training on general data whose checkpoints join the estimate "
        "of delta and L (max over checkpoints: at an untrained model the shift barely shows in "
        "the gradients); 0 = estimate at the initial model only. Planning-time work, not charged to budgets",
    )
    pilot_batch: PositiveInt = Field(64, description="batch of the pilot pre-training")
    pilot_checkpoints: PositiveInt = Field(3, description="evenly spaced pilot states added to the estimate")
    constants_cache: str | None = Field(
        None,
        description="folder caching estimated constants by a hash of everything they depend on (sweeps "
        "over budgets and schemes then estimate once); None = no cache",
    )
    joint_min_ft_rounds: Literal[0, 1] = Field(
        0,
        description="least N the joint design considers: 0 lets it pick pure pre-training when the bound "
        "prefers it (so it is never worse in bound than a baseline); 1 = the devices always fine-tune",
    )
    pretrain_log_points: PositiveInt = Field(
        20, description="pre-training steps are run and logged in at most this many chunks (runner rounds)"
    )
    retransmissions: NonNegInt = Field(
        0,
        description="under faults.uplink_loss: times a device re-sends a lost gradient in the same round "
        "(each try costs energy and time beyond the plan); 0 = a lost gradient is simply missing",
    )
    grad_norm_samples: NonNegInt = Field(
        512, description="task samples for the measured squared gradient norm per evaluation (0 = off)"
    )
