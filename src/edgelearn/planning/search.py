"""Outer search over the integer round counts M, N (Lyu et al.'s 2-D search): the machinery behind `solve`.

A coarse log-spaced grid over (M, N) is evaluated best-first by a cheap lower bound of the objective
(the bound with every batch at the largest size the budgets allow), skipping cells that cannot beat the
best value so far and cells dominated by a known infeasible cell (more rounds never cost less). A pattern
search in log(1 + M), log(1 + N) (axis and diagonal moves, repeated with doubling steps while they improve,
halved when none does) then refines from the best cell without and the best cell with pre-training. The
best continuous allocations are finally rounded to integer batches (`round_to_plan`, via `finish`). The
public entry point, `solve` (in `joint.py`), runs this search and then compares the result with the baseline
schemes, which reuse this module's searcher, so this module imports neither.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from edgelearn.errors import ConfigError
from edgelearn.planning.allocation import Allocation, round_to_plan
from edgelearn.planning.bound import Bound, affine_parts, get_bound
from edgelearn.planning.convex import ConvexInner
from edgelearn.planning.feasibility import CheapestPoint
from edgelearn.planning.plan import Plan
from edgelearn.planning.problem import TwoStageProblem
from edgelearn.planning.sca import ScaInner

METHODS: tuple[str, ...] = ("convex", "sca")
"""Inner solvers: the exact convex program (our reformulation, default) or SCA in the original variables
(the paper's route)."""

GRID_PRE_DEFAULT = 16
"""Coarse-grid points for M (0 plus log-spaced values); our first sanity run of the planner used about
20 x 15."""

GRID_FT_DEFAULT = 12
"""Coarse-grid points for N (log-spaced from 1)."""

GRID_LINE_DEFAULT = 20
"""Coarse-grid points for one-dimensional searches (the baselines)."""

REFINE_RTOL = 2e-3
"""The compass refinement stops once its steps are below max(1, 0.2% of the current M or N): the bound
changes by far less than the solver tolerance on such steps (a project choice)."""

PATIENCE_SOLVES = 30
"""A refinement run that is still worse than the best value found elsewhere stops when, at its average
improvement per inner solve so far, it would need more than this many further solves to catch up."""

PATIENCE_MIN_SOLVES = 6
"""Inner solves a refinement run may always spend before the patience rule applies."""

MAX_PRE_ROUNDS_DEFAULT = 1_000_000
"""Default cap on M whatever the budgets allow (config ``algorithm.max_pre_rounds``; every scheme obeys it
and the plan report names it when it binds, see ``TwoStage.round_caps``)."""


@dataclass(frozen=True)
class SearchOptions:
    """Tuning knobs of the outer search (our defaults)."""

    grid_pre: int = GRID_PRE_DEFAULT
    grid_ft: int = GRID_FT_DEFAULT
    grid_line: int = GRID_LINE_DEFAULT
    refine: bool = True
    max_pre_rounds: int = MAX_PRE_ROUNDS_DEFAULT
    max_ft_rounds: int | None = None
    """Cap on N (None: only the budgets and, with per-round gains, the rows of ``gain`` limit it)."""
    min_ft_rounds: int = 1
    """Least N of the joint design: 1 (our reading of the paper's scheme: the devices always fine-tune);
    0 also admits pure pre-training plans."""

    def __post_init__(self) -> None:
        for name in ("grid_pre", "grid_ft", "grid_line", "max_pre_rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"SearchOptions.{name}: got {value!r}; need an integer >= 1")
        if self.max_ft_rounds is not None and (
            not isinstance(self.max_ft_rounds, int) or self.max_ft_rounds < 1
        ):
            raise ConfigError(
                f"SearchOptions.max_ft_rounds: got {self.max_ft_rounds!r}; need an integer >= 1"
            )
        if self.min_ft_rounds not in (0, 1):
            raise ConfigError(
                f"SearchOptions.min_ft_rounds: got {self.min_ft_rounds!r}; use 1 (default) or 0"
            )


class InnerSolver:
    """Dispatches inner solves to a compiled convex or SCA program (one per N with per-round gains)."""

    def __init__(self, problem: TwoStageProblem, method: str = "convex") -> None:
        if method not in METHODS:
            raise ConfigError(f"planning method {method!r} is unknown", hint=f"use one of {list(METHODS)}")
        self.problem = problem
        self.method = method
        self._programs: dict[int | None, ConvexInner | ScaInner] = {}

    def _program(self, N: int) -> ConvexInner | ScaInner:
        key = N if self.problem.per_round else None
        if key not in self._programs:
            cls = ConvexInner if self.method == "convex" else ScaInner
            self._programs[key] = cls(self.problem, rounds=key)
        return self._programs[key]

    def solve(
        self, M: int, N: int, bound: Bound, *, energy_j: float | None = None, delay_s: float | None = None
    ) -> Allocation:
        """Continuous optimum (or KKT point for SCA) of the inner problem at (M, N)."""
        pb = self.problem
        parts = affine_parts(bound, M, N, pb.constants, pb.eta_pre, pb.eta_ft)
        return self._program(N).solve(M, N, parts, energy_j=energy_j, delay_s=delay_s)


def solve_inner(
    problem: TwoStageProblem,
    M: int,
    N: int,
    *,
    bound: str | Bound = "A",
    method: str = "convex",
    energy_j: float | None = None,
    delay_s: float | None = None,
) -> Allocation:
    """Solve the continuous inner problem at fixed (M, N) (no rounding): for tests and heat-maps (E6)."""
    return InnerSolver(problem, method).solve(M, N, get_bound(bound), energy_j=energy_j, delay_s=delay_s)


# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Domain:
    """A box of integer search coordinates and the map from coordinates to (M, N)."""

    lower: tuple[int, ...]
    upper: tuple[int, ...]
    to_rounds: Callable[[tuple[int, ...]], tuple[int, int]]


def log_grid(lo: int, hi: int, count: int) -> list[int]:
    """``count`` integers from lo to hi, log-spaced (all of them if the range is small); 0 kept if lo = 0."""
    if hi < lo:
        return []
    if hi - lo + 1 <= count:
        return list(range(lo, hi + 1))
    start = max(lo, 1)
    # floats: an int beyond int64 would make numpy build an object array that log10 cannot take
    points = np.geomspace(float(start), float(hi), count - (1 if lo == 0 else 0))
    values = {min(max(int(v), lo), hi) for v in np.unique(np.round(points))}  # float ends may stray by ulps
    if lo == 0:
        values.add(0)
    return sorted(int(v) for v in values if lo <= v <= hi)


class Searcher:
    """Evaluates (M, N) cells with caching, pruning and dominance, and runs grid + compass searches."""

    def __init__(
        self,
        problem: TwoStageProblem,
        bound: Bound,
        inner: InnerSolver,
        *,
        energy_j: float | None = None,
        delay_s: float | None = None,
    ) -> None:
        self.problem = problem
        self.bound = bound
        self.inner = inner
        self.energy_j = problem.energy_j if energy_j is None else energy_j
        self.delay_s = problem.delay_s if delay_s is None else delay_s
        self.cheap = CheapestPoint(problem)
        self.cache: dict[tuple[int, int], Allocation] = {}
        self.infeasible: list[tuple[int, int]] = []
        self.best: Allocation | None = None
        self.solves = 0
        self.grid_solves = 0

    @property
    def best_value(self) -> float:
        """Best continuous bound found so far."""
        return self.best.bound if self.best is not None else math.inf

    def batch_limits(self, M: int, N: int) -> tuple[float, float]:
        """Upper bounds on the pre-training batch and the per-round total fine-tuning batch at (M, N):
        the caps, the samples a stage can compute at f_max within the whole delay budget, and the samples
        it can compute within the whole energy budget when also limited to the whole delay budget
        (energy >= kappa (C B)^3 / t^2 per round)."""
        pb = self.problem
        e, t = self.energy_j, self.delay_s
        d_max = float(pb.batch_cap_pre)
        if M > 0:
            c = pb.cycles_per_sample_server
            by_delay = pb.f_max_server * t / (M * c)
            by_energy = (e * t**2 / (pb.kappa_server * c**3 * M**3)) ** (1.0 / 3.0)
            d_max = min(d_max, by_delay, by_energy)
        b_max = float(np.sum(pb.batch_cap_ft))
        if N > 0:
            round_time = t / N - pb.downlink_s - self.cheap.tau_min_any
            by_delay = pb.f_max * np.maximum(round_time, 0.0) / pb.cycles_per_sample
            per_round = t / N
            by_energy = (e * per_round**2 / (N * pb.kappa * pb.cycles_per_sample**3)) ** (1.0 / 3.0)
            limit = np.minimum(np.minimum(pb.batch_cap_ft, by_delay), by_energy)
            b_max = min(b_max, float(np.sum(limit)))
        return d_max, b_max

    def lower_bound(self, M: int, N: int) -> float:
        """The bound with every batch at its largest possible size: no allocation at (M, N) does better."""
        pb = self.problem
        if M + N == 0:
            return math.inf
        parts = affine_parts(self.bound, M, N, pb.constants, pb.eta_pre, pb.eta_ft)
        d_max, b_max = self.batch_limits(M, N)
        if d_max <= 0 or b_max <= 0:
            return math.inf
        return parts.value(M / d_max if M else 0.0, N / b_max if N else 0.0)

    def _dominated(self, M: int, N: int) -> bool:
        return any(M >= m and N >= n for m, n in self.infeasible)

    def evaluate(self, M: int, N: int) -> float:
        """Continuous bound at (M, N) (inf if infeasible, dominated, or provably no better than the best)."""
        key = (M, N)
        if key in self.cache:
            return self.cache[key].bound
        if M + N == 0 or self._dominated(M, N) or self.lower_bound(M, N) >= self.best_value:
            return math.inf
        alloc = self.inner.solve(M, N, self.bound, energy_j=self.energy_j, delay_s=self.delay_s)
        self.solves += 1
        self.cache[key] = alloc
        if not alloc.feasible or not alloc.verified:
            certain = not alloc.feasible and alloc.status.startswith("infeasible")
            if not self.problem.per_round and not certain:
                certain = not self.cheap.fits(M, N, self.energy_j, self.delay_s)
            if certain:
                self.infeasible.append(key)
            return math.inf
        if alloc.bound < self.best_value:
            self.best = alloc
        return alloc.bound

    def run(self, domain: Domain, counts: tuple[int, ...], refine: bool = True) -> Allocation | None:
        """Coarse grid (best-first by lower bound), then compass refinement from the best cell of each
        regime (without pre-training first, then with pre-training), sharing one cache."""
        axes = [log_grid(lo, hi, n) for lo, hi, n in zip(domain.lower, domain.upper, counts)]
        cells = list(itertools.product(*axes))
        keyed = sorted(((self.lower_bound(*domain.to_rounds(z)), z) for z in cells), key=lambda item: item[0])
        values: dict[tuple[int, ...], float] = {}
        for lb, z in keyed:
            if lb >= self.best_value:
                break
            values[z] = self.evaluate(*domain.to_rounds(z))
        self.grid_solves = self.solves
        finite = {z: v for z, v in values.items() if math.isfinite(v)}
        if not finite or not refine:
            return self.best
        starts: list[tuple[int, ...]] = []
        for regime in (lambda z: domain.to_rounds(z)[0] == 0, lambda z: domain.to_rounds(z)[0] > 0):
            members = [z for z in finite if regime(z)]
            if members:
                z_best = min(members, key=lambda z: finite[z])
                if z_best not in starts:
                    starts.append(z_best)
        for z in starts:
            self._compass(domain, axes, z)
        return self.best

    def _compass(self, domain: Domain, axes: list[list[int]], start: tuple[int, ...]) -> None:
        """Pattern search in log(1 + z) coordinates: axis and diagonal moves by a factor exp(+-step); an
        improving move is repeated with a doubling step while it keeps improving; steps halve when no
        move improves, until they move by less than max(1, REFINE_RTOL * z) (then +-1 moves finish)."""
        dims = len(start)
        steps = []
        for d in range(dims):
            axis = axes[d]
            i = axis.index(start[d])
            lo, hi = axis[max(i - 1, 0)], axis[min(i + 1, len(axis) - 1)]
            steps.append(max((math.log1p(hi) - math.log1p(lo)) / 4.0, REFINE_RTOL))

        def shifted(z: tuple[int, ...], move: tuple[int, ...], scale: float) -> tuple[int, ...]:
            out = []
            for d in range(dims):
                target = z[d]
                if move[d]:
                    target = int(round((z[d] + 1) * math.exp(move[d] * steps[d] * scale) - 1))
                    if target == z[d]:
                        target = z[d] + move[d]
                out.append(min(max(target, domain.lower[d]), domain.upper[d]))
            return tuple(out)

        current = start
        current_value = self.evaluate(*domain.to_rounds(current))
        start_value, solves_at_start = current_value, self.solves
        moves = sorted(
            (m for m in itertools.product((-1, 0, 1), repeat=dims) if any(m)), key=lambda m: sum(map(abs, m))
        )
        while True:
            improved = False
            for move in moves:
                z = shifted(current, move, 1.0)
                if z == current:
                    continue
                value = self.evaluate(*domain.to_rounds(z))
                if value >= current_value:
                    continue
                current, current_value, improved = z, value, True
                scale = 2.0
                while True:  # keep going the same way, faster, while it pays
                    z = shifted(current, move, scale)
                    if z == current:
                        break
                    value = self.evaluate(*domain.to_rounds(z))
                    if value >= current_value:
                        break
                    current, current_value = z, value
                    scale *= 2.0
                break
            if improved:
                spent = self.solves - solves_at_start
                gap = current_value - self.best_value
                if gap > 0 and spent >= PATIENCE_MIN_SOLVES:
                    rate = (start_value - current_value) / spent
                    if gap > PATIENCE_SOLVES * rate:
                        break  # this basin would need too many solves to catch up with the best one
                continue
            floors = [max(REFINE_RTOL, 1.0 / (current[d] + 1)) for d in range(dims)]
            if all(s <= f for s, f in zip(steps, floors)):
                break
            steps = [max(f, s / 2.0) for s, f in zip(steps, floors)]


# ----------------------------------------------------------------------------------------------------
def pre_round_limit(problem: TwoStageProblem, energy_j: float, delay_s: float, cap: int | None) -> int:
    """Most pre-training rounds any plan can have: min(T f~_max / C~, (E T^2 / (kappa~ C~^3))^(1/3)), at
    most ``cap`` (None: the budgets alone; may exceed int64 for absurd budgets, so compare, don't store)."""
    c = problem.cycles_per_sample_server
    by_delay = delay_s * problem.f_max_server / c
    by_energy = (energy_j * delay_s**2 / (problem.kappa_server * c**3)) ** (1.0 / 3.0)
    limit = min(by_delay, by_energy) * (1 + 1e-12)
    if cap is not None and limit >= cap:
        return int(cap)
    return int(math.floor(limit))


def ft_round_limit(
    problem: TwoStageProblem, cheap: CheapestPoint, energy_j: float, delay_s: float, cap: int | None
) -> int:
    """Most fine-tuning rounds any plan can have (exact at batch 1 for static channels; an upper bound
    from per-round time and energy floors with per-round gains); 0 if not even one round fits."""
    pb = problem
    if pb.per_round:
        gains = pb.gains()
        floor_t = np.max(pb.cycles_per_sample / pb.f_max + pb.min_upload_time(gains), axis=1) + pb.downlink_s
        floor_e = np.sum(pb.noise_over_gain(gains) * pb.upload_bit_time() * math.log(2.0), axis=1)
        fits = (np.cumsum(floor_t) <= delay_s) & (np.cumsum(floor_e) <= energy_j)
        limit = int(np.sum(np.cumprod(fits)))
    else:
        upper = int(math.floor(delay_s / (cheap.round_floor + pb.downlink_s)))
        if cap is not None:
            upper = min(upper, cap + 1)  # enough to tell whether the cap binds, without float-huge n
        limit = cheap.max_rounds(lambda n: float(cheap.ft_energy(n, delay_s)) <= energy_j, upper)
        limit = max(limit, 0)
    return limit if cap is None else min(limit, cap)


ROUNDING_CANDIDATES = 5
"""`finish` rounds this many of the best continuous solutions and keeps the best integer plan: with small
batches, rounding can reorder nearby (M, N) cells."""

ROUNDING_FALLBACKS = 10
"""Further continuous solutions `finish` tries if none of the first candidates rounds feasibly."""


def finish(problem: TwoStageProblem, searcher: Searcher, scheme: str, start: float) -> Plan:
    """Round the best continuous solutions to Plans and return the best feasible one (every rounding is
    re-verified; if none of the first candidates rounds feasibly, further ones are tried)."""
    solved = [a for a in searcher.cache.values() if a.feasible and a.verified]
    candidates = sorted(solved, key=lambda a: a.bound)
    best: Plan | None = None
    last: Plan | None = None
    for i, alloc in enumerate(candidates[: ROUNDING_CANDIDATES + ROUNDING_FALLBACKS]):
        if i >= ROUNDING_CANDIDATES and best is not None:
            break
        e, t = searcher.energy_j, searcher.delay_s
        last = round_to_plan(problem, alloc, searcher.bound, scheme=scheme, energy_j=e, delay_s=t)
        if last.feasible and (best is None or last.bound < best.bound):
            best = last
    plan = best if best is not None else last
    assert plan is not None, "finish() needs at least one feasible continuous solution"
    return replace(plan, solve_time_s=time.perf_counter() - start)
