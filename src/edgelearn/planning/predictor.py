"""Form P: a planning objective calibrated on a pilot run, not derived from a bound (our addition; the
planner keeps the objective pluggable).

The analytic forms A-E rank plans by constants (L, sigma^2, delta) that are worst-case suprema; on
Fashion-MNIST none of them ranks pre-train-then-fine-tune plans the way training does (docs/reproduction.md,
E1). Form P instead predicts the task metric (error rate or loss) of the model a plan delivers from a
measured table: a pilot pre-trains on the general data, and from each of several pre-training checkpoints
fine-tunes on task samples, so the table holds the metric after M pre-training and N fine-tuning steps at
the pilot's batch sizes (:mod:`edgelearn.planning.calibrate` measures it). Between grid points the table is
interpolated linearly; beyond the pilot's range it is held constant (no further progress is assumed).

Batch sizes enter through a measured sensitivity to the inverse batch (metric change per unit of 1/B, from
two pilot runs at B and 4 B), which keeps the objective affine and non-decreasing in the planner's
inverse-batch sums, as every bound must be (:func:`edgelearn.planning.bound.affine_parts`):

    P(M, N, S_pre, S_ft) = table(M, N) + s_pre (S_pre / M - 1 / B~_pilot) + s_ft (S_ft / N - 1 / B_pilot),

the batch terms present only when M >= 1, respectively N >= 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from edgelearn.errors import ConfigError
from edgelearn.planning.bound import BoundConstants

METRICS: tuple[str, ...] = ("error", "loss")
"""What a calibration table holds: task error rate (1 - accuracy) or mean task cross-entropy."""


@dataclass(frozen=True)
class Calibration:
    """A measured table of the task metric after M pre-training and N fine-tuning steps.

    ``table[i][j]`` is the metric after ``pre_steps[i]`` pre-training steps (batch ``batch_pre``) followed by
    ``ft_steps[j]`` fine-tuning steps (total batch ``batch_ft``); both step lists start at 0 and increase.
    """

    pre_steps: tuple[int, ...]
    ft_steps: tuple[int, ...]
    table: tuple[tuple[float, ...], ...]
    batch_pre: int
    batch_ft: int
    sensitivity_pre: float
    """Metric change per unit of the mean inverse pre-training batch (>= 0)."""
    sensitivity_ft: float
    """Metric change per unit of the mean inverse total fine-tuning batch (>= 0)."""
    metric: str = "error"
    _grid: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        def fail(what: str) -> None:
            raise ConfigError(
                f"Calibration: {what}", hint="measure it with edgelearn.planning.calibrate.Calibrator"
            )

        pre, ft = tuple(int(m) for m in self.pre_steps), tuple(int(n) for n in self.ft_steps)
        for name, steps in (("pre_steps", pre), ("ft_steps", ft)):
            if not steps or steps[0] != 0 or any(b <= a for a, b in zip(steps, steps[1:])):
                fail(f"{name}={list(steps)}; need increasing step counts starting at 0")
        grid = np.asarray(self.table, dtype=np.float64)
        if grid.shape != (len(pre), len(ft)) or not np.all(np.isfinite(grid)):
            fail(f"table has shape {grid.shape} (or non-finite values); need finite ({len(pre)}, {len(ft)})")
        if self.batch_pre < 1 or self.batch_ft < 1:
            fail(f"batches ({self.batch_pre}, {self.batch_ft}); need >= 1")
        for name in ("sensitivity_pre", "sensitivity_ft"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                fail(f"{name}={value!r}; need a finite number >= 0")
            object.__setattr__(self, name, value)
        if self.metric not in METRICS:
            fail(f"metric={self.metric!r}; use one of {list(METRICS)}")
        object.__setattr__(self, "pre_steps", pre)
        object.__setattr__(self, "ft_steps", ft)
        object.__setattr__(self, "table", tuple(tuple(float(v) for v in row) for row in grid))
        object.__setattr__(self, "_grid", grid)

    def predict(self, M: int, N: int) -> float:
        """The table at (M, N): linear in N along the two neighbouring pre-training rows, then linear in M;
        held constant beyond the measured range."""
        ft = np.asarray(self.ft_steps, dtype=np.float64)
        rows = [float(np.interp(N, ft, row)) for row in self._grid]
        return float(np.interp(M, np.asarray(self.pre_steps, dtype=np.float64), rows))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready), e.g. to cache the calibration."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError."""
        known = {f.name for f in fields(cls) if f.init}
        extra = sorted(set(data) - known)
        if extra:
            raise ConfigError(f"Calibration: unknown keys {extra}", hint=f"use only {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True)
class CalibratedBound:
    """Form P: the pilot-calibrated prediction of the delivered model's task metric (module docstring)."""

    calibration: Calibration
    name: str = "P"

    def value(
        self,
        M: int,
        N: int,
        inv_batch_pre_sum: float,
        inv_batch_ft_sum: float,
        constants: BoundConstants,
        eta_pre: float,
        eta_ft: float,
    ) -> float:
        """P(M, N, S_pre, S_ft) of the module docstring; inf for M = N = 0. The step sizes and the bound
        constants are unused: the pilot ran with the run's own step sizes."""
        if M + N <= 0:
            return math.inf
        cal = self.calibration
        value = cal.predict(M, N)
        if M > 0:
            value += cal.sensitivity_pre * (inv_batch_pre_sum / M - 1.0 / cal.batch_pre)
        if N > 0:
            value += cal.sensitivity_ft * (inv_batch_ft_sum / N - 1.0 / cal.batch_ft)
        return value
