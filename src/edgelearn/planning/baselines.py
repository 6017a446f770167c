"""Baseline schemes on the same budgets as the joint design, each as a `Plan`.

Lyu et al. (arXiv 2404.00836) compare with benchmarks whose definitions were not available to us; these
five are our choice of the usual comparisons.

* ``finetune_only``: M = 0, N and all resources optimised (FEEL from scratch).
* ``pretrain_only``: N = 0, M and the server's resources optimised. Its bound is the chosen form at N = 0:
  for form A the average of ||grad F||^2 over the M pre-training iterates (the task gradient, so the shift
  term delta^2 stays), for form B 2 L (F(w~^(M)) - F*).
* ``fixed_ratio``: M = round(ratio * N) (ratio 1 by default), N and resources optimised.
* ``no_optimization``: f = f_max, p = P_max, fixed batches (``NO_OPT_BATCH_PRE`` / ``NO_OPT_BATCH_FT``,
  capped by the data), and among the (M, N) that fit, for each M the largest N (the "largest rounds that
  fit"); the M with the lowest bound is chosen.
* ``separate``: the budgets are split 50/50; the pre-training stage minimises its own bound (N = 0) within
  its half, the fine-tuning stage its own (M = 0) within the other half; the plan joins both.

A scheme that cannot fit the budgets returns a Plan with ``feasible=False``; nothing here raises for budgets.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from edgelearn.errors import ConfigError
from edgelearn.planning.allocation import inverse_batch_sums
from edgelearn.planning.bound import Bound, get_bound
from edgelearn.planning.feasibility import CheapestPoint
from edgelearn.planning.plan import FEASIBILITY_RTOL, Plan, infeasible_plan, predict_costs
from edgelearn.planning.problem import TwoStageProblem
from edgelearn.planning.search import (
    Domain,
    InnerSolver,
    Searcher,
    SearchOptions,
    finish,
    ft_round_limit,
    pre_round_limit,
)

NO_OPT_BATCH_PRE = 64
"""Pre-training batch of the no-optimisation baseline. Our guess: a common SGD mini-batch."""

NO_OPT_BATCH_FT = 32
"""Per-device fine-tuning batch of the no-optimisation baseline. Our guess (typical FEEL local batch)."""

FIXED_RATIO_DEFAULT = 1.0
"""M / N of the fixed-ratio baseline (our default: M = N)."""

SEPARATE_SHARE_DEFAULT = 0.5
"""Share of both budgets given to pre-training by the separate design (our default: 50/50)."""

NO_OPT_MAX_CANDIDATES = 20_000
"""The no-optimisation baseline scores at most this many values of M (log-spaced beyond that)."""

ROUNDS_EXACT = 2**53
"""Uncapped round counts are clipped here: the largest integer float64 (and int64) holds exactly."""

BASELINE_SCHEMES: tuple[str, ...] = (
    "finetune_only",
    "pretrain_only",
    "fixed_ratio",
    "no_optimization",
    "separate",
)


def _line(
    problem: TwoStageProblem,
    bnd: Bound,
    method: str,
    opts: SearchOptions,
    scheme: str,
    upper: int,
    to_rounds: Callable[[tuple[int, ...]], tuple[int, int]],
    *,
    energy_j: float | None = None,
    delay_s: float | None = None,
    start: float | None = None,
) -> Plan:
    """One-dimensional search over a round count in [1, upper], rounded to a Plan."""
    t0 = time.perf_counter() if start is None else start
    e = problem.energy_j if energy_j is None else energy_j
    t = problem.delay_s if delay_s is None else delay_s
    if upper < 1:
        return infeasible_plan(
            scheme,
            problem,
            status="no round fits the budgets",
            bound_name=bnd.name,
            solve_time_s=time.perf_counter() - t0,
        )
    searcher = Searcher(problem, bnd, InnerSolver(problem, method), energy_j=e, delay_s=t)
    domain = Domain((1,), (upper,), to_rounds)
    best = searcher.run(domain, (opts.grid_line,), opts.refine)
    if best is None:
        return infeasible_plan(
            scheme,
            problem,
            status="no feasible round count found",
            bound_name=bnd.name,
            solve_time_s=time.perf_counter() - t0,
        )
    plan = finish(problem, searcher, scheme, t0)
    return replace(plan, status=f"{plan.status}; {searcher.solves} inner solves")


def finetune_only(
    problem: TwoStageProblem,
    *,
    bound: str | Bound = "A",
    method: str = "convex",
    options: SearchOptions | None = None,
) -> Plan:
    """FEEL from scratch: M = 0, everything else optimised."""
    bnd, opts = get_bound(bound), options or SearchOptions()
    start = time.perf_counter()
    n_hi = ft_round_limit(
        problem, CheapestPoint(problem), problem.energy_j, problem.delay_s, opts.max_ft_rounds
    )
    return _line(problem, bnd, method, opts, "finetune_only", n_hi, lambda z: (0, z[0]), start=start)


def pretrain_only(
    problem: TwoStageProblem,
    *,
    bound: str | Bound = "A",
    method: str = "convex",
    options: SearchOptions | None = None,
) -> Plan:
    """Server pre-training only: N = 0, M and the server's batch and clock optimised."""
    bnd, opts = get_bound(bound), options or SearchOptions()
    start = time.perf_counter()
    m_hi = pre_round_limit(problem, problem.energy_j, problem.delay_s, opts.max_pre_rounds)
    return _line(problem, bnd, method, opts, "pretrain_only", m_hi, lambda z: (z[0], 0), start=start)


def fixed_ratio(
    problem: TwoStageProblem,
    ratio: float = FIXED_RATIO_DEFAULT,
    *,
    bound: str | Bound = "A",
    method: str = "convex",
    options: SearchOptions | None = None,
) -> Plan:
    """M = round(ratio * N) with N and all resources optimised."""
    if not math.isfinite(ratio) or ratio < 0:
        raise ConfigError(f"fixed_ratio: ratio={ratio!r}; need a finite number >= 0 (M = ratio * N)")
    bnd, opts = get_bound(bound), options or SearchOptions()
    start = time.perf_counter()
    cheap = CheapestPoint(problem)
    n_hi = ft_round_limit(problem, cheap, problem.energy_j, problem.delay_s, opts.max_ft_rounds)
    m_hi = pre_round_limit(problem, problem.energy_j, problem.delay_s, opts.max_pre_rounds)
    if ratio > 0:
        n_hi = min(n_hi, int(math.floor(m_hi / ratio)) + 1)
    return _line(
        problem,
        bnd,
        method,
        opts,
        "fixed_ratio",
        n_hi,
        lambda z: (int(round(ratio * z[0])), z[0]),
        start=start,
    )


def no_optimization(
    problem: TwoStageProblem,
    *,
    bound: str | Bound = "A",
    batch_pre: int = NO_OPT_BATCH_PRE,
    batch_ft: int = NO_OPT_BATCH_FT,
    options: SearchOptions | None = None,
) -> Plan:
    """f = f_max, p = P_max, fixed batches; for each M the largest N that fits, the best such (M, N).

    M and N obey the same caps as every other scheme (``options.max_pre_rounds`` / ``max_ft_rounds``), so
    the joint design, which searches a superset of these plans, is never beaten merely by a cap."""
    bnd, opts = get_bound(bound), options or SearchOptions()
    start = time.perf_counter()
    pb = problem
    if batch_pre < 1 or batch_ft < 1:
        raise ConfigError(
            f"no_optimization: batches must be >= 1, got batch_pre={batch_pre}, batch_ft={batch_ft}"
        )
    d = min(batch_pre, pb.batch_cap_pre)
    b = np.minimum(float(batch_ft), pb.batch_cap_ft)
    pre_cycles = pb.cycles_per_sample_server * d
    e_pre = pb.kappa_server * pre_cycles * pb.f_max_server**2
    t_pre = pre_cycles / pb.f_max_server
    gains = pb.gains()
    tau = pb.min_upload_time(gains)
    t_cmp = pb.cycles_per_sample * b / pb.f_max
    round_t = np.max(t_cmp + tau, axis=1) + pb.downlink_s
    round_e = np.sum(pb.kappa * pb.cycles_per_sample * b * pb.f_max**2 + pb.p_max * tau, axis=1)
    safety = 1.0 - 1e-9
    e_lim, t_lim = pb.energy_j * safety, pb.delay_s * safety
    m_max = int(min(math.floor(min(e_lim / e_pre, t_lim / t_pre)), opts.max_pre_rounds))
    if m_max + 1 > NO_OPT_MAX_CANDIDATES:
        points = np.geomspace(1.0, float(m_max), NO_OPT_MAX_CANDIDATES - 1)
        ms = np.unique(np.concatenate([[0.0], np.round(points)]))
    else:
        ms = np.arange(m_max + 1, dtype=np.float64)
    e_left = e_lim - ms * e_pre
    t_left = t_lim - ms * t_pre
    if pb.per_round:
        n_by_e = np.searchsorted(np.cumsum(round_e), e_left, side="right")
        n_by_t = np.searchsorted(np.cumsum(round_t), t_left, side="right")
        ns = np.minimum(n_by_e, n_by_t)
    else:
        ns = np.floor(np.minimum(e_left / round_e[0], t_left / round_t[0]))
    n_cap = ROUNDS_EXACT if opts.max_ft_rounds is None else opts.max_ft_rounds
    ns = np.asarray(np.minimum(ns, n_cap), dtype=np.int64)
    best: tuple[float, int, int] | None = None
    total_b = np.sum(b)
    for m, n in zip(ms.astype(np.int64), ns):
        if n < 1:
            continue
        if pb.per_round:
            s_ft = float(np.sum(1.0 / np.broadcast_to(total_b, (int(n),))))
        else:
            s_ft = n / total_b
        value = bnd.value(int(m), int(n), m / d if m else 0.0, s_ft, pb.constants, pb.eta_pre, pb.eta_ft)
        if best is None or value < best[0]:
            best = (value, int(m), int(n))
    if best is None:
        return infeasible_plan(
            "no_optimization",
            pb,
            status="not one fine-tuning round fits at f_max, P_max",
            bound_name=bnd.name,
            solve_time_s=time.perf_counter() - start,
        )
    value, m, n = best
    k = pb.num_devices
    shape = (n, k) if pb.per_round else (k,)
    batches = np.broadcast_to(b, shape).astype(np.int64)
    freqs = np.broadcast_to(pb.f_max, shape).copy()
    powers = np.broadcast_to(pb.p_max, shape).copy()
    costs = predict_costs(pb, m, n, d, pb.f_max_server, batches, freqs, powers)
    ok = costs.energy_j <= pb.energy_j * (1 + FEASIBILITY_RTOL) and costs.delay_s <= pb.delay_s * (
        1 + FEASIBILITY_RTOL
    )
    return Plan(
        scheme="no_optimization",
        M=m,
        N=n,
        batch_pre=d if m else 0,
        batch_ft=batches.copy(),
        f_server=pb.f_max_server if m else 0.0,
        f_devices=freqs,
        p_devices=powers,
        energy_pre_j=costs.energy_pre_j,
        energy_ft_j=costs.energy_ft_j,
        delay_pre_s=costs.delay_pre_s,
        delay_ft_s=costs.delay_ft_s,
        bound=value if ok else math.inf,
        bound_name=bnd.name,
        feasible=ok,
        solver="none",
        status="f_max, P_max, fixed batches" if ok else "predicted costs exceed the budgets",
        solve_time_s=time.perf_counter() - start,
        energy_budget_j=pb.energy_j,
        delay_budget_s=pb.delay_s,
        bound_valid=pb.bound_valid,
    )


def separate_design(
    problem: TwoStageProblem,
    *,
    share: float = SEPARATE_SHARE_DEFAULT,
    bound: str | Bound = "A",
    method: str = "convex",
    options: SearchOptions | None = None,
) -> Plan:
    """Each stage optimised alone on its share of both budgets (pre-training gets ``share`` of each,
    fine-tuning the rest)."""
    if not 0 < share < 1:
        raise ConfigError(f"separate_design: share={share!r}; need 0 < share < 1")
    bnd, opts = get_bound(bound), options or SearchOptions()
    start = time.perf_counter()
    pb = problem
    e1, t1 = pb.energy_j * share, pb.delay_s * share
    e2, t2 = pb.energy_j - e1, pb.delay_s - t1
    half = pb.with_budgets(energy_j=e2, delay_s=t2)
    n_hi = ft_round_limit(half, CheapestPoint(half), e2, t2, opts.max_ft_rounds)
    ft = _line(pb, bnd, method, opts, "separate", n_hi, lambda z: (0, z[0]), energy_j=e2, delay_s=t2)
    if not ft.feasible:
        return replace(
            ft,
            status=f"the fine-tuning share of the budgets fits no round ({ft.status})",
            energy_budget_j=pb.energy_j,
            delay_budget_s=pb.delay_s,
            solve_time_s=time.perf_counter() - start,
        )
    m_hi = pre_round_limit(pb, e1, t1, opts.max_pre_rounds)
    pre = _line(pb, bnd, method, opts, "separate", m_hi, lambda z: (z[0], 0), energy_j=e1, delay_s=t1)
    if pre.feasible:
        M, d, f_server = pre.M, pre.batch_pre, pre.f_server
    else:
        M, d, f_server = 0, 0, 0.0
    costs = predict_costs(pb, M, ft.N, d, f_server, ft.batch_ft, ft.f_devices, ft.p_devices)
    multiplicity = 1 if pb.per_round else ft.N
    s_pre, s_ft = inverse_batch_sums(M, multiplicity, d, np.atleast_2d(ft.batch_ft).astype(np.float64))
    value = bnd.value(M, ft.N, s_pre, s_ft, pb.constants, pb.eta_pre, pb.eta_ft)
    ok = costs.energy_j <= pb.energy_j * (1 + FEASIBILITY_RTOL) and costs.delay_s <= pb.delay_s * (
        1 + FEASIBILITY_RTOL
    )
    return replace(
        ft,
        M=M,
        batch_pre=d,
        f_server=f_server,
        energy_pre_j=costs.energy_pre_j,
        energy_ft_j=costs.energy_ft_j,
        delay_pre_s=costs.delay_pre_s,
        delay_ft_s=costs.delay_ft_s,
        bound=value if ok else math.inf,
        feasible=ok,
        status=f"pre-training: {pre.status}; fine-tuning: {ft.status}",
        solve_time_s=time.perf_counter() - start,
        energy_budget_j=pb.energy_j,
        delay_budget_s=pb.delay_s,
    )


def baseline_candidates(
    problem: TwoStageProblem,
    *,
    bound: str | Bound = "A",
    method: str = "convex",
    options: SearchOptions | None = None,
) -> dict[str, Plan]:
    """The baseline schemes whose plans lie in the joint design's domain under ``options``: all of
    :func:`solve_baselines` but ``pretrain_only`` (N = 0) unless ``options.min_ft_rounds`` is 0. The joint
    search (:func:`~edgelearn.planning.joint.solve`) keeps the best of them where its own plan is worse."""
    opts = options or SearchOptions()
    schemes = [s for s in BASELINE_SCHEMES if s != "pretrain_only" or opts.min_ft_rounds == 0]
    return solve_baselines(problem, bound=bound, method=method, options=opts, schemes=schemes)


def solve_baselines(
    problem: TwoStageProblem,
    *,
    bound: str | Bound = "A",
    method: str = "convex",
    options: SearchOptions | None = None,
    schemes: Sequence[str] = BASELINE_SCHEMES,
) -> dict[str, Plan]:
    """The baseline schemes named in ``schemes`` (default: all, keyed by :data:`BASELINE_SCHEMES`) on the
    problem's budgets."""
    kw: dict[str, Any] = {"bound": bound, "options": options}
    solvers: dict[str, Callable[[], Plan]] = {
        "finetune_only": lambda: finetune_only(problem, method=method, **kw),
        "pretrain_only": lambda: pretrain_only(problem, method=method, **kw),
        "fixed_ratio": lambda: fixed_ratio(problem, method=method, **kw),
        "no_optimization": lambda: no_optimization(problem, **kw),
        "separate": lambda: separate_design(problem, method=method, **kw),
    }
    return {name: solvers[name]() for name in schemes}
