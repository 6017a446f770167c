"""Cheapest operating points: minimum budgets, round-count limits and fast feasibility checks.

Every round costs the least with batch size 1, so the smallest energy that M pre-training and N
fine-tuning rounds can need within a delay budget is a one-dimensional convex problem (how to split the
delay between the stages), with each device's split of its round deadline in closed form (our derivation,
``closed_form.py``). The outer search over M and N (Lyu et al.'s 2-D search) uses these to bound M and N,
and the CLI to say which budgets would be feasible.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgelearn.planning.closed_form import LN2, device_split
from edgelearn.planning.problem import TwoStageProblem

SPLIT_GRID = 33
"""Points per level of the vectorised grid search over the delay split between the stages."""

SPLIT_LEVELS = 5
"""Zoom levels of that grid search (each shrinks the bracket to 2 grid cells: 33 -> 2/32 per level)."""

DELAY_DOUBLINGS = 64
"""Doublings of the fastest round time tried when bracketing the smallest feasible delay budget."""

DELAY_ZOOM_POINTS = 65
"""Grid points per zoom level of that search (each level shrinks the bracket 64-fold)."""

DELAY_ZOOM_LEVELS = 9
"""Zoom levels: 64^-9 ~ 5e-17 of the bracket, i.e. full double precision."""


@dataclass(frozen=True)
class MinimumBudgets:
    """The smallest budgets that allow any plan with N >= 1 (one fine-tuning round, batch 1, M = 0).

    ``energy_j`` is the least energy within the problem's delay budget and ``delay_s`` the least delay
    within its energy budget (inf when the other budget alone already rules out every plan);
    ``energy_floor_j`` (approached only with unbounded delay) and ``delay_floor_s`` (at f_max, P_max)
    are the limits with the other budget unbounded.
    """

    energy_j: float
    delay_s: float
    energy_floor_j: float
    delay_floor_s: float
    feasible: bool

    def message(self, problem: TwoStageProblem) -> str:
        """Explain why the problem's budgets fit no plan and what would fit."""
        return (
            f"budgets energy_j={problem.energy_j:.6g} J and delay_s={problem.delay_s:.6g} s cannot fit even "
            "one fine-tuning round (every device computing one sample and uploading once). "
            f"With delay_s={problem.delay_s:.6g} s the energy budget must be at least {self.energy_j:.6g} J; "
            f"with energy_j={problem.energy_j:.6g} J the delay budget must be at least {self.delay_s:.6g} s "
            f"(no energy budget below {self.energy_floor_j:.6g} J and no delay budget below "
            f"{self.delay_floor_s:.6g} s can work)"
        )


class CheapestPoint:
    """Minimum energies at batch size 1 for a problem (static channels; per-round gains use round 0 for
    single-round questions and per-round upper bounds for round limits)."""

    def __init__(self, problem: TwoStageProblem) -> None:
        self.problem = problem
        gains = problem.gains(1) if problem.per_round else problem.gains()
        self.a = problem.noise_over_gain(gains)[0]
        self.c = problem.upload_bit_time()
        self.tau_min = problem.min_upload_time(gains)[0]
        self.tau_min_any = np.min(problem.min_upload_time(problem.gains()), axis=0)
        """Shortest upload time of each device over all rounds (= tau_min with static channels), s."""
        self.round_floor = float(np.max(problem.cycles_per_sample / problem.f_max + self.tau_min))
        """Shortest possible fine-tuning round (before the downlink constant), s."""
        self.pre_round_floor = problem.cycles_per_sample_server / problem.f_max_server
        """Shortest possible pre-training round, s."""

    # ------------------------------------------------------------------------------------------------
    def round_energy(self, deadline: np.ndarray | float) -> np.ndarray:
        """Least energy of one fine-tuning round (batch 1 everywhere) per deadline (before the downlink)."""
        pb = self.problem
        dl = np.asarray(deadline, dtype=np.float64)[..., None]
        split = device_split(pb.cycles_per_sample, dl, pb.kappa, pb.f_max, self.a, self.c, self.tau_min)
        return np.sum(split.energy, axis=-1)

    def ft_energy(self, N: int, delay: np.ndarray | float) -> np.ndarray:
        """Least energy of N fine-tuning rounds within ``delay`` seconds (inf if impossible)."""
        d = np.asarray(delay, dtype=np.float64)
        if N == 0:
            return np.where(d >= 0, 0.0, np.inf)
        per_round = d / N - self.problem.downlink_s
        out = np.full(d.shape, np.inf)
        ok = per_round >= self.round_floor
        if np.any(ok):
            out[ok] = N * self.round_energy(per_round[ok])
        return out

    def pre_energy(self, M: int, delay: np.ndarray | float) -> np.ndarray:
        """Least energy of M pre-training rounds within ``delay`` seconds: kappa~ C~^3 M^3 / delay^2."""
        pb = self.problem
        d = np.asarray(delay, dtype=np.float64)
        if M == 0:
            return np.where(d >= 0, 0.0, np.inf)
        with np.errstate(divide="ignore"):
            energy = pb.kappa_server * pb.cycles_per_sample_server**3 * M**3 / d**2
        return np.where(d >= M * self.pre_round_floor, energy, np.inf)

    def min_energy(self, M: int, N: int, delay_s: float | None = None) -> float:
        """Least energy of (M, N) rounds within the delay budget (the problem's if not given)."""
        total = self.problem.delay_s if delay_s is None else delay_s
        if M == 0 or N == 0:
            return float(self.pre_energy(M, total) + self.ft_energy(N, total))
        lo = M * self.pre_round_floor
        hi = total - N * (self.round_floor + self.problem.downlink_s)
        if hi < lo:
            return math.inf
        best = math.inf
        for _ in range(SPLIT_LEVELS):
            grid = np.linspace(lo, hi, SPLIT_GRID)
            values = self.pre_energy(M, grid) + self.ft_energy(N, total - grid)
            i = int(np.argmin(values))
            best = min(best, float(values[i]))
            lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, SPLIT_GRID - 1)]
        return best

    def fits(self, M: int, N: int, energy_j: float | None = None, delay_s: float | None = None) -> bool:
        """Whether (M, N) has an operating point within both budgets (exact up to the split grid)."""
        budget = self.problem.energy_j if energy_j is None else energy_j
        return self.min_energy(M, N, delay_s) <= budget

    def max_rounds(self, fits_at: Callable[[int], bool], upper: int) -> int:
        """Largest n in [0, upper] with ``fits_at(n)`` (monotone: more rounds never cost less); -1 if none."""
        if upper < 0 or not fits_at(0):
            return -1
        lo, hi = 0, upper
        if fits_at(hi):
            return hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits_at(mid):
                lo = mid
            else:
                hi = mid
        return lo

    # ------------------------------------------------------------------------------------------------
    def _smallest_delay(self, energy_j: float, delay_floor: float) -> float:
        """Smallest delay budget whose cheapest single round fits ``energy_j`` (round energy falls with
        the deadline): bracket by doubling, then zoom with vectorised grids."""
        if float(self.ft_energy(1, delay_floor)) <= energy_j:
            return delay_floor
        doubling = delay_floor * 2.0 ** np.arange(1, DELAY_DOUBLINGS + 1)
        fits = np.flatnonzero(self.ft_energy(1, doubling) <= energy_j)
        if fits.size == 0:
            return math.inf
        hi = float(doubling[fits[0]])
        lo = hi / 2.0
        for _ in range(DELAY_ZOOM_LEVELS):
            grid = np.linspace(lo, hi, DELAY_ZOOM_POINTS)
            first = int(np.flatnonzero(self.ft_energy(1, grid) <= energy_j)[0])
            if first == 0:
                return float(grid[0])
            lo, hi = float(grid[first - 1]), float(grid[first])
        return hi

    def minimum_budgets(self) -> MinimumBudgets:
        """The smallest energy and delay budgets that fit one fine-tuning round (see MinimumBudgets)."""
        pb = self.problem
        delay_floor = self.round_floor + pb.downlink_s
        energy_floor = float(np.sum(self.a * self.c * LN2))
        energy_needed = float(self.ft_energy(1, pb.delay_s)) if pb.delay_s >= delay_floor else math.inf
        if pb.energy_j <= energy_floor:
            delay_needed = math.inf
        else:
            delay_needed = self._smallest_delay(pb.energy_j, delay_floor)
        feasible = pb.delay_s >= delay_floor and energy_needed <= pb.energy_j
        return MinimumBudgets(energy_needed, delay_needed, energy_floor, delay_floor, feasible)


def minimum_budgets(problem: TwoStageProblem) -> MinimumBudgets:
    """The smallest energy budget (at the problem's delay budget) and the smallest delay budget (at its
    energy budget) that make some plan with N >= 1 feasible, plus the absolute floors."""
    return CheapestPoint(problem).minimum_budgets()
