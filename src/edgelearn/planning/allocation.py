"""Continuous inner solutions (`Allocation`) and their rounding to integer batches (`round_to_plan`).

An allocation describes the fine-tuning stage as R round groups of ``multiplicity`` identical rounds each:
R = 1 and multiplicity N with static channels (our symmetric reduction: the convex inner problem is
symmetric across rounds, so identical rounds are optimal), R = N and multiplicity 1 with per-round channel
gains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edgelearn.planning.bound import AffineParts, Bound
from edgelearn.planning.closed_form import device_split
from edgelearn.planning.plan import FEASIBILITY_RTOL, CostBreakdown, Plan, predict_costs
from edgelearn.planning.problem import TwoStageProblem

BUDGET_MARGIN = 1e-7
"""Inner solves use budgets shrunk by this relative margin, so solver tolerances (~1e-8) never push a plan
over budget."""

ROUND_EPS = 1e-6
"""A continuous batch within this of an integer above it counts as that integer when rounding down."""


@dataclass(frozen=True)
class Allocation:
    """A continuous (or rounded) solution of the inner problem at fixed (M, N)."""

    M: int
    N: int
    multiplicity: int
    batch_pre: float
    time_pre: float
    """Compute time of one pre-training round, s."""
    f_server: float
    batch_ft: np.ndarray
    """(R, K) fine-tuning batches."""
    time_cmp: np.ndarray
    time_up: np.ndarray
    deadline: np.ndarray
    """(R,) round deadline before the downlink constant, s."""
    f_devices: np.ndarray
    p_devices: np.ndarray
    objective: float
    """J = w_pre S_pre + w_ft S_ft at this allocation."""
    bound: float
    feasible: bool
    status: str
    solver: str
    solve_time_s: float
    iterations: int = 1
    lambda_energy: float = math.nan
    """Multiplier of the energy budget (objective units per J), from the solver's duals."""
    lambda_delay: float = math.nan
    """Multiplier of the delay budget (objective units per s)."""
    verified: bool = False
    """Whether the continuous solution met the original constraints of (P1) (relative 1e-6)."""
    parts: AffineParts | None = field(default=None, repr=False)


def infeasible_allocation(M: int, N: int, status: str, solver: str, solve_time_s: float) -> Allocation:
    """An Allocation marking (M, N) infeasible (or the solver failing on it)."""
    nothing = np.zeros((0, 0))
    return Allocation(
        M=M,
        N=N,
        multiplicity=0,
        batch_pre=math.nan,
        time_pre=math.nan,
        f_server=math.nan,
        batch_ft=nothing,
        time_cmp=nothing,
        time_up=nothing,
        deadline=np.zeros(0),
        f_devices=nothing,
        p_devices=nothing,
        objective=math.inf,
        bound=math.inf,
        feasible=False,
        status=status,
        solver=solver,
        solve_time_s=solve_time_s,
    )


def inner_budgets(
    problem: TwoStageProblem,
    M: int,
    N: int,
    *,
    energy_j: float | None,
    delay_s: float | None,
    per_round: bool,
    rounds: int,
) -> tuple[float, float, int]:
    """Check (M, N) for an inner solve and return (energy budget, delay budget, round-group multiplicity).

    Budgets default to the problem's; a per-round program is compiled for exactly ``rounds`` fine-tuning
    rounds (multiplicity 1 each), a static one has one round group repeated N times.
    """
    if M < 0 or N < 0 or M + N == 0:
        raise ValueError(f"need M, N >= 0 and M + N >= 1, got M={M}, N={N}")
    if per_round and N not in (0, rounds):
        raise ValueError(f"this inner solver is built for N={rounds} per-round rounds, got N={N}")
    e_budget = problem.energy_j if energy_j is None else energy_j
    t_budget = problem.delay_s if delay_s is None else delay_s
    return e_budget, t_budget, 1 if per_round else N


def inverse_batch_sums(
    M: int, multiplicity: int, batch_pre: float, batch_ft: np.ndarray
) -> tuple[float, float]:
    """(S_pre, S_ft) = (M / D~, multiplicity * sum_r 1 / sum_k B_rk) for equal pre-training batches."""
    s_pre = M / batch_pre if M > 0 else 0.0
    s_ft = multiplicity * float(np.sum(1.0 / np.sum(batch_ft, axis=1))) if batch_ft.size else 0.0
    return s_pre, s_ft


def plan_arrays(problem: TwoStageProblem, N: int, values: np.ndarray) -> np.ndarray:
    """(R, K) round-group arrays as a Plan stores them: (K,) with static channels, (N, K) per round."""
    if N == 0:
        k = problem.num_devices
        return np.zeros((0, k) if problem.per_round else (k,), dtype=values.dtype)
    return values if problem.per_round else values[0]


@dataclass
class _Rounded:
    """Integer batches being built, with the clocks and powers that go with them."""

    batch_pre: int
    batch_ft: np.ndarray
    f_devices: np.ndarray
    p_devices: np.ndarray
    device_energy: np.ndarray
    """Per-device, per-round-group energy (J per round) of the current fine-tuning allocation."""


def round_to_plan(
    problem: TwoStageProblem,
    alloc: Allocation,
    bound: Bound,
    *,
    scheme: str,
    energy_j: float | None = None,
    delay_s: float | None = None,
    solve_time_s: float | None = None,
) -> Plan:
    """Integer batches for a feasible continuous allocation, with clocks and powers recomputed so both
    budgets still hold (our handling of integer batches: relax, round, re-optimise).

    Batches are rounded down (this never breaks a budget: at the same compute time and round deadline a
    smaller batch needs a lower clock), each device's split of its round deadline into compute and upload
    time is re-optimised in closed form (``closed_form.py``), then batches are raised by one sample again,
    best bound gain per joule first, while the energy budget allows (round deadlines, hence delays, stay
    fixed). The result is re-verified with :func:`predict_costs`; a plan that still broke a budget would be
    marked infeasible.
    """
    e_budget = problem.energy_j if energy_j is None else energy_j
    t_budget = problem.delay_s if delay_s is None else delay_s
    M, N, mult = alloc.M, alloc.N, alloc.multiplicity
    rounding = _round_down(problem, alloc)
    pre = _server_clock(problem, alloc)
    energy = _predict(problem, alloc, rounding, pre).energy_j
    if alloc.parts is not None and np.isfinite(energy):
        _round_up(problem, alloc, rounding, pre, e_budget * (1.0 - BUDGET_MARGIN) - energy)
    costs = _predict(problem, alloc, rounding, pre)
    f_server = pre(rounding.batch_pre) if M > 0 else 0.0
    s_pre, s_ft = inverse_batch_sums(M, mult, rounding.batch_pre, rounding.batch_ft)
    value = bound.value(M, N, s_pre, s_ft, problem.constants, problem.eta_pre, problem.eta_ft)
    ok = costs.energy_j <= e_budget * (1.0 + FEASIBILITY_RTOL) and costs.delay_s <= t_budget * (
        1.0 + FEASIBILITY_RTOL
    )
    return Plan(
        scheme=scheme,
        M=M,
        N=N,
        batch_pre=rounding.batch_pre,
        batch_ft=plan_arrays(problem, N, rounding.batch_ft).astype(np.int64),
        f_server=f_server,
        f_devices=plan_arrays(problem, N, rounding.f_devices).copy(),
        p_devices=plan_arrays(problem, N, rounding.p_devices).copy(),
        energy_pre_j=costs.energy_pre_j,
        energy_ft_j=costs.energy_ft_j,
        delay_pre_s=costs.delay_pre_s,
        delay_ft_s=costs.delay_ft_s,
        bound=value if ok else math.inf,
        bound_name=getattr(bound, "name", type(bound).__name__),
        feasible=ok,
        solver=alloc.solver,
        status=alloc.status if ok else f"rounding broke a budget ({alloc.status})",
        solve_time_s=alloc.solve_time_s if solve_time_s is None else solve_time_s,
        energy_budget_j=e_budget,
        delay_budget_s=t_budget,
        bound_valid=problem.bound_valid,
    )


def _server_clock(problem: TwoStageProblem, alloc: Allocation):  # type: ignore[no-untyped-def]
    """Pre-training clock for an integer batch at the allocation's per-round compute time."""

    def clock(batch: int) -> float:
        if alloc.M == 0:
            return 0.0
        return min(problem.cycles_per_sample_server * batch / alloc.time_pre, problem.f_max_server)

    return clock


def _split(problem: TwoStageProblem, alloc: Allocation, batches: np.ndarray):  # type: ignore[no-untyped-def]
    gains = problem.gains(alloc.N) if problem.per_round else problem.gains()
    deadline = np.broadcast_to(alloc.deadline[:, None], batches.shape)
    return device_split(
        problem.cycles_per_sample * batches,
        deadline,
        problem.kappa,
        problem.f_max,
        problem.noise_over_gain(gains),
        problem.upload_bit_time(),
        problem.min_upload_time(gains),
    )


def _round_down(problem: TwoStageProblem, alloc: Allocation) -> _Rounded:
    M, N = alloc.M, alloc.N
    batch_pre = 0
    if M > 0:
        batch_pre = int(min(max(math.floor(alloc.batch_pre + ROUND_EPS), 1), problem.batch_cap_pre))
    if N == 0:
        empty = np.zeros((0, problem.num_devices))
        return _Rounded(batch_pre, empty, empty, empty, empty)
    cap = np.broadcast_to(problem.batch_cap_ft, alloc.batch_ft.shape)
    batch = np.clip(np.floor(alloc.batch_ft + ROUND_EPS), 1.0, cap)
    split = _split(problem, alloc, batch)
    # where solver round-off left a deadline a hair too short for the closed-form split, keep the solver's
    # own clock and power: a smaller batch at the same clock finishes earlier and costs less
    keep = ~split.feasible
    f = np.where(keep, np.minimum(alloc.f_devices, problem.f_max), split.f)
    p = np.minimum(np.where(keep, alloc.p_devices, split.p), problem.p_max)
    energy = np.where(keep, np.inf, split.energy)
    return _Rounded(batch_pre, batch, f, p, energy)


def _predict(problem: TwoStageProblem, alloc: Allocation, rounding: _Rounded, pre) -> CostBreakdown:  # type: ignore[no-untyped-def]
    N = alloc.N
    return predict_costs(
        problem,
        alloc.M,
        N,
        rounding.batch_pre,
        pre(rounding.batch_pre),
        plan_arrays(problem, N, rounding.batch_ft),
        plan_arrays(problem, N, rounding.f_devices),
        plan_arrays(problem, N, rounding.p_devices),
    )


def _round_up(problem: TwoStageProblem, alloc: Allocation, rounding: _Rounded, pre, slack: float) -> None:  # type: ignore[no-untyped-def]
    """Greedy +1 sample per batch (never above the continuous value rounded up, nor the caps)."""
    parts = alloc.parts
    assert parts is not None
    M, mult = alloc.M, alloc.multiplicity
    candidates: list[tuple[float, str, int, int, float]] = []
    d = rounding.batch_pre
    if M > 0 and d < min(math.ceil(alloc.batch_pre - ROUND_EPS), problem.batch_cap_pre):
        if problem.cycles_per_sample_server * (d + 1) <= problem.f_max_server * alloc.time_pre:
            unit = problem.kappa_server * problem.cycles_per_sample_server

            def pre_energy(batch: int) -> float:
                return M * unit * batch * pre(batch) ** 2

            extra = pre_energy(d + 1) - pre_energy(d)
            gain = parts.weight_pre * M * (1.0 / d - 1.0 / (d + 1))
            candidates.append((gain / max(extra, np.finfo(float).tiny), "pre", 0, 0, extra))
    up = None
    if alloc.N > 0:
        cap = np.broadcast_to(problem.batch_cap_ft, rounding.batch_ft.shape)
        limit = np.minimum(np.ceil(alloc.batch_ft - ROUND_EPS), cap)
        up = _split(problem, alloc, rounding.batch_ft + 1.0)
        allowed = (rounding.batch_ft + 1.0 <= limit) & up.feasible & np.isfinite(rounding.device_energy)
        totals = np.sum(rounding.batch_ft, axis=1)
        for r, k in zip(*np.nonzero(allowed)):
            extra = mult * float(up.energy[r, k] - rounding.device_energy[r, k])
            gain = parts.weight_ft * mult * (1.0 / totals[r] - 1.0 / (totals[r] + 1.0))
            candidates.append((gain / max(extra, np.finfo(float).tiny), "ft", int(r), int(k), extra))
    candidates.sort(key=lambda item: -item[0])
    for _, kind, r, k, extra in candidates:
        if extra > slack:
            continue
        slack -= extra
        if kind == "pre":
            rounding.batch_pre += 1
            continue
        assert up is not None
        rounding.batch_ft[r, k] += 1.0
        rounding.f_devices[r, k] = up.f[r, k]
        rounding.p_devices[r, k] = min(up.p[r, k], problem.p_max[k])
        rounding.device_energy[r, k] = up.energy[r, k]
