"""Measure form P's calibration table (planning/predictor.py) with a pilot run, in torch.

1. Pre-train a copy of the model by SGD on the general data up to ``max_pre`` steps, keeping the states at a
   grid of step counts (0 included; :func:`step_grid`).
2. From every kept state, fine-tune by SGD on pooled task samples for ``max_ft`` steps, recording the task
   metric on a held-out probe of task samples at a grid of step counts, averaged over ``repeats`` runs
   with different batch draws (one run's noise is as large as the differences between plans). One step
   at total batch B is what a FEEL round computes (every device one gradient, averaged weighted by
   batch). Every row draws the same batch indices (common random numbers), so rows differ by their start
   only; each row is then fitted by isotonic regression to be non-increasing in the number of steps (in
   expectation more fine-tuning does not hurt; the planner should not chase one trajectory's noise).
3. Sensitivity to the batch, as the metric difference per unit of 1/B (clipped at zero). Pre-training
   (:meth:`Calibrator.pre_sensitivity`): the steps of a checkpoint are run again at a smaller batch b, then
   fine-tuned exactly like the table's rows; the two are compared over the second half of the
   fine-tuning range, and the chord between 1/B and 1/b is the slope. :meth:`Calibrator.measure` takes
   b = 1 at the checkpoint nearest the middle of the range. At a fixed number of steps the metric is
   concave in 1/B (most of the harm comes as the batch first shrinks), so a chord to a very small batch
   under-charges moderate ones; the two-stage executor therefore re-measures the chord at the joint plan's
   own batch and M while the plan pre-trains below half the pilot's batch (``refine_rounds``), keeping the
   steepest slope. (Comparing after pre-training alone reads ~0: the task metric plateaus early, and the
   benefit of pre-training shows only after fine-tuning.) Fine-tuning: ``sensitivity_steps`` steps at
   B / 4 and 4 B from the middle checkpoint, compared over the second half of the run.

The probe is split off the task samples before any training and never trained on. This is planning-time
work (like the bound constants' pilot) and is not charged to the budgets. Deterministic for a given seed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import isotonic_regression
from torch import nn

from edgelearn.errors import DataError
from edgelearn.planning.predictor import METRICS, Calibration
from edgelearn.planning.search import log_grid

CALIBRATION_VERSION = 5
"""Bumped whenever the pilot changes, so cached tables (``constants_cache``) are never stale."""

SENSITIVITY_BATCH_FACTOR = 4
"""The fine-tuning sensitivity compares batches B / 4 and 4 B around the pilot's batch B."""

SENSITIVITY_MARKS = 4
"""Evaluations, evenly spaced over the second half of a sensitivity run, whose mean is compared."""

EVAL_CHUNK = 1024
"""Probe samples per forward pass."""

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
State = dict[str, torch.Tensor]


class _Pilot:
    """A working copy of the model with a seeded SGD loop and a probe evaluator."""

    def __init__(
        self,
        model: nn.Module,
        probe: tuple[torch.Tensor, torch.Tensor],
        metric: str,
        loss_fn: LossFn,
        repeats: int,
    ) -> None:
        self.repeats = repeats
        self.work = copy.deepcopy(model)
        self.device = next(self.work.parameters()).device
        self.probe = probe
        self.metric = metric
        self.loss_fn = loss_fn

    def state(self) -> State:
        return {k: v.detach().clone() for k, v in self.work.state_dict().items()}

    def evaluate(self) -> float:
        """Mean error rate or loss of the current weights on the probe (eval mode, no grad)."""
        x, y = self.probe
        total = 0.0
        self.work.eval()
        with torch.no_grad():
            for i in range(0, x.shape[0], EVAL_CHUNK):
                xb, yb = x[i : i + EVAL_CHUNK].to(self.device), y[i : i + EVAL_CHUNK].to(self.device)
                out = self.work(xb)
                if self.metric == "error":
                    total += float((out.argmax(dim=1) != yb).sum())
                else:
                    total += float(self.loss_fn(out, yb)) * xb.shape[0]
        self.work.train()
        return total / x.shape[0]

    def sgd(
        self,
        start: State,
        data: tuple[torch.Tensor, torch.Tensor],
        *,
        steps: int,
        batch: int,
        lr: float,
        seed: int,
        marks: Sequence[int],
        on_mark: Callable[[int], None],
    ) -> None:
        """``steps`` SGD steps from ``start`` on batches drawn with replacement from ``data`` (seeded);
        ``on_mark(step)`` runs at every step count in ``marks`` (0 = before the first step)."""
        self.work.load_state_dict(start)
        self.work.train()
        opt = torch.optim.SGD(self.work.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(int(seed))
        x, y = data
        wanted = set(marks)
        if 0 in wanted:
            on_mark(0)
        for step in range(1, steps + 1):
            idx = torch.randint(x.shape[0], (batch,), generator=gen)
            loss = self.loss_fn(self.work(x[idx].to(self.device)), y[idx].to(self.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step in wanted:
                on_mark(step)

    def curve(
        self,
        start: State,
        data: tuple[torch.Tensor, torch.Tensor],
        marks: Sequence[int],
        *,
        batch: int,
        lr: float,
        seed: int,
    ) -> list[float]:
        """The probe metric at each of ``marks`` along one seeded SGD run from ``start``."""
        values: list[float] = []

        def record(_: int) -> None:
            values.append(self.evaluate())

        self.sgd(start, data, steps=max(marks), batch=batch, lr=lr, seed=seed, marks=marks, on_mark=record)
        return values

    def mean_curve(
        self,
        start: State,
        data: tuple[torch.Tensor, torch.Tensor],
        marks: Sequence[int],
        *,
        batch: int,
        lr: float,
        seed: int,
    ) -> np.ndarray:
        """:meth:`curve` averaged over ``repeats`` runs (seeds ``seed``, ``seed`` + 1, ...): the expected
        trajectory, not one run's noise."""
        runs = [
            self.curve(start, data, marks, batch=batch, lr=lr, seed=seed + r) for r in range(self.repeats)
        ]
        return np.mean(np.asarray(runs, dtype=np.float64), axis=0)

    def sensitivity(
        self,
        start: State,
        data: tuple[torch.Tensor, torch.Tensor],
        steps: int,
        batch: int,
        lr: float,
        seed: int,
    ) -> float:
        """Metric change per unit of 1/B between batches B / f and f B (f = SENSITIVITY_BATCH_FACTOR):
        the mean slope over a range around the pilot's batch wide enough to stand out of noise (>= 0)."""
        if steps < 1:
            return 0.0
        marks = sorted(
            {
                max(1, round(steps * (0.5 + 0.5 * (i + 1) / SENSITIVITY_MARKS)))
                for i in range(SENSITIVITY_MARKS)
            }
        )
        small = max(1, batch // SENSITIVITY_BATCH_FACTOR)
        big = batch * SENSITIVITY_BATCH_FACTOR
        small_value = float(np.mean(self.mean_curve(start, data, marks, batch=small, lr=lr, seed=seed)))
        big_value = float(np.mean(self.mean_curve(start, data, marks, batch=big, lr=lr, seed=seed)))
        return chord_slope(small_value, big_value, small, big)


def chord_slope(metric_small: float, metric_big: float, small: int, big: int) -> float:
    """How much the metric rises per unit of 1/B from batch ``big`` down to batch ``small`` (clipped at 0)."""
    return max(metric_small - metric_big, 0.0) / (1.0 / small - 1.0 / big)


def step_grid(limit: int, points: int) -> list[int]:
    """Step counts 0..limit: ``points`` log-spaced ones (early progress is fast) joined with ``points``
    evenly spaced ones (so the range the plans use is resolved as finely)."""
    even = np.round(np.linspace(0, limit, points)).astype(int).tolist()
    return sorted(set(log_grid(0, limit, points)) | set(even))


def _check(name: str, data: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = data
    if x.shape[0] == 0 or x.shape[0] != y.shape[0]:
        raise DataError(
            f"calibrate: {name} has {x.shape[0]} inputs and {y.shape[0]} labels",
            hint="pass the same non-zero number of inputs and labels",
        )
    return x, y


class Calibrator:
    """The pilot of form P on one model and data split: :meth:`measure` builds the table, and
    :meth:`pre_sensitivity` checks a plan's pre-training batch against it (module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        general: tuple[torch.Tensor, torch.Tensor],
        task: tuple[torch.Tensor, torch.Tensor],
        *,
        batch_ft: int,
        lr_pre: float,
        lr_ft: float,
        probe_samples: int,
        metric: str = "error",
        repeats: int = 1,
        seed: int = 0,
        loss_fn: LossFn = F.cross_entropy,
    ) -> None:
        self.general = _check("general", general)
        task_x, task_y = _check("task", task)
        if metric not in METRICS:
            raise DataError(f"calibrate: metric={metric!r}; use one of {list(METRICS)}")
        if min(batch_ft, probe_samples, repeats) < 1:
            raise DataError("calibrate: batch_ft, probe_samples and repeats must be >= 1")
        if task_x.shape[0] < 2:
            raise DataError("calibrate: need at least 2 task samples (a probe and something to train on)")
        perm = torch.randperm(task_x.shape[0], generator=torch.Generator().manual_seed(int(seed)))
        n_probe = min(probe_samples, task_x.shape[0] // 2)
        probe_idx, train_idx = perm[:n_probe].to(task_x.device), perm[n_probe:].to(task_x.device)
        self.train = (task_x[train_idx], task_y[train_idx])
        self.pilot = _Pilot(model, (task_x[probe_idx], task_y[probe_idx]), metric, loss_fn, repeats)
        self.initial = self.pilot.state()
        self.batch_ft, self.lr_pre, self.lr_ft = batch_ft, lr_pre, lr_ft
        self.metric, self.seed = metric, seed

    def _pretrain(self, steps: int, batch: int, marks: Sequence[int]) -> list[State]:
        """States at ``marks`` along one seeded pre-training run from the initial model."""
        states: list[State] = []
        self.pilot.sgd(
            self.initial,
            self.general,
            steps=steps,
            batch=batch,
            lr=self.lr_pre,
            seed=self.seed + 1,
            marks=marks,
            on_mark=lambda _: states.append(self.pilot.state()),
        )
        return states

    def _finetune(self, state: State, marks: Sequence[int]) -> np.ndarray:
        """The mean fine-tuning curve from ``state`` (the same batch draws for every start)."""
        return self.pilot.mean_curve(
            state, self.train, marks, batch=self.batch_ft, lr=self.lr_ft, seed=self.seed + 10
        )

    def measure(
        self,
        *,
        max_pre: int,
        max_ft: int,
        batch_pre: int,
        pre_points: int,
        ft_points: int,
        sensitivity_steps: int,
    ) -> Calibration:
        """The table over ``step_grid(max_pre, pre_points)`` x ``step_grid(max_ft, ft_points)`` and both
        sensitivities (module docstring)."""
        if min(batch_pre, pre_points, ft_points) < 1 or min(max_pre, max_ft) < 0:
            raise DataError("calibrate: batch_pre and points must be >= 1, step limits >= 0")
        pre_marks = step_grid(max_pre, pre_points)
        states = self._pretrain(max_pre, batch_pre, pre_marks)
        ft_marks = step_grid(max_ft, ft_points)
        table = [
            tuple(isotonic_regression(self._finetune(s, ft_marks), increasing=False).x.tolist())
            for s in states
        ]
        k = int(np.argmin(np.abs(np.asarray(pre_marks) - max_pre / 2)))
        cal = Calibration(
            pre_steps=tuple(pre_marks),
            ft_steps=tuple(ft_marks),
            table=tuple(table),
            batch_pre=batch_pre,
            batch_ft=self.batch_ft,
            sensitivity_pre=0.0,
            sensitivity_ft=self.pilot.sensitivity(
                states[k],
                self.train,
                min(sensitivity_steps, max_ft),
                self.batch_ft,
                self.lr_ft,
                self.seed + 30,
            ),
            metric=self.metric,
        )
        return replace(cal, sensitivity_pre=self.pre_sensitivity(cal, pre_marks[k], 1))

    def pre_sensitivity(self, cal: Calibration, steps: int, batch: int) -> float:
        """Metric change per unit of 1/B between pre-training ``steps`` steps at ``batch`` and at the
        table's batch, each followed by the table's fine-tuning, compared over the second half of the
        fine-tuning range (>= 0; 0 when ``batch`` is not below the table's or there is nothing to compare)."""
        if steps < 1 or batch >= cal.batch_pre:
            return 0.0
        marks = list(cal.ft_steps)
        late = np.asarray(marks) >= marks[-1] / 2
        row = self._finetune(self._pretrain(steps, batch, [steps])[0], marks)
        reference = np.array([cal.predict(steps, n) for n in marks])
        return chord_slope(float(np.mean(row[late])), float(np.mean(reference[late])), batch, cal.batch_pre)
