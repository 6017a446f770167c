"""Exact convex inner solve for fixed (M, N), with cvxpy: our reformulation of the inner problem, not the
paper's route (Lyu et al., arXiv 2404.00836, use SCA; ``sca.py``), and at least as good as any SCA point.

Variables are times, not clocks and powers: x = compute time at f_max (proportional to the batch), t = the
actual compute time (so f = f_max x / t and E_cmp = kappa f_max^3 x^3 / t^2, a power-cone perspective), and
the upload time in units of c = q / W, tau' (so p = a (2^(1/tau') - 1) and E_com = a c tau' (2^(1/tau') - 1),
an exponential-cone perspective). Budgets are normalised to 1 and the objective by its best possible value,
so every number the solver sees is O(1)-ish. Programs are compiled once per round structure with cvxpy
parameters (DPP) and re-solved for each (M, N) and budget pair.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, replace

import cvxpy as cp
import numpy as np

from edgelearn.planning.allocation import (
    BUDGET_MARGIN,
    Allocation,
    infeasible_allocation,
    inner_budgets,
    inverse_batch_sums,
    plan_arrays,
)
from edgelearn.planning.bound import AffineParts
from edgelearn.planning.closed_form import upload_power
from edgelearn.planning.cones import dvfs_energy_cone, radio_energy_cone
from edgelearn.planning.plan import FEASIBILITY_RTOL, predict_costs
from edgelearn.planning.problem import TwoStageProblem

PREFERRED_SOLVERS = ("CLARABEL", "ECOS", "SCS")
"""Conic solvers tried in order (the first one installed is used); CLARABEL handles power and exponential
cones natively with an interior-point method."""

ACCEPTED_STATUSES = (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)

RETRY_OPTIONS: dict[str, tuple[dict[str, float | int | bool], ...]] = {
    "CLARABEL": (
        {
            "max_step_fraction": 0.9,
            "iterative_refinement_reltol": 1e-14,
            "iterative_refinement_abstol": 1e-14,
            "iterative_refinement_max_iter": 50,
        },
        {"equilibrate_enable": False},
        {"tol_gap_abs": 1e-7, "tol_gap_rel": 1e-7, "tol_feas": 1e-7, "max_iter": 400},
    ),
    "SCS": ({"eps_abs": 1e-7, "eps_rel": 1e-7, "max_iters": 20_000},),
}
"""Further attempts when a solve fails: CLARABEL stops with 'InsufficientProgress' on a few badly scaled SCA
surrogates; shorter steps with more iterative refinement, no equilibration, or 1e-7 tolerances fix them
(plans are re-verified against the budgets anyway)."""


def solver_attempts(solver: str) -> tuple[dict[str, float | int | bool], ...]:
    """Option sets to try in order: the solver's defaults, then :data:`RETRY_OPTIONS`."""
    return ({}, *RETRY_OPTIONS.get(solver, ()))


def run_once(program: cp.Problem, solver: str, options: dict[str, float | int | bool]) -> str:
    """One solve; the cvxpy status, or ``"solver_error: ..."``. Never warm-starts: cvxpy's warm start of
    CLARABEL made later solves of a re-parameterised program fail."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program.solve(solver=solver, warm_start=False, **options)
        return str(program.status)
    except cp.error.SolverError as exc:
        return f"solver_error: {exc}"


def solve_program(program: cp.Problem, solver: str) -> str:
    """Solve with the defaults, then each of :data:`RETRY_OPTIONS` until one returns a solution or a
    certificate; return the status (the last failure message if every attempt fails)."""
    status = ""
    for options in solver_attempts(solver):
        status = run_once(program, solver, options)
        if status in ACCEPTED_STATUSES or status in (cp.INFEASIBLE, cp.UNBOUNDED):
            return status
    return status


def pick_solver() -> str:
    """The first installed solver of :data:`PREFERRED_SOLVERS`."""
    installed = set(cp.installed_solvers())
    for name in PREFERRED_SOLVERS:
        if name in installed:
            return name
    raise RuntimeError(f"none of {PREFERRED_SOLVERS} is installed for cvxpy")  # pragma: no cover


@dataclass
class _Program:
    problem: cp.Problem
    params: dict[str, cp.Parameter]
    variables: dict[str, cp.Variable]
    energy_con: cp.Constraint
    delay_con: cp.Constraint


class ConvexInner:
    """Compiled convex programs for one round structure: static channels (one round group of multiplicity N)
    or per-round gains for exactly ``rounds`` fine-tuning rounds."""

    def __init__(
        self, problem: TwoStageProblem, rounds: int | None = None, solver: str | None = None
    ) -> None:
        self.problem = problem
        self.solver = solver or pick_solver()
        self.per_round = problem.per_round
        if self.per_round and rounds is None:
            raise ValueError("per-round channel gains need the number of fine-tuning rounds")
        self.rounds = rounds
        self.gains = problem.gains(rounds) if self.per_round else problem.gains()
        self._programs: dict[tuple[bool, bool], _Program] = {}

    # ------------------------------------------------------------------------------------------------
    def _build(self, has_pre: bool, has_ft: bool) -> _Program:
        pb = self.problem
        r, k = self.gains.shape
        params: dict[str, cp.Parameter] = {}
        variables: dict[str, cp.Variable] = {}
        cons: list[cp.Constraint] = []
        energy: cp.Expression = 0
        delay: cp.Expression = 0
        obj: cp.Expression = 0
        if has_pre:
            x0, t0, s0 = cp.Variable(name="x0"), cp.Variable(name="t0"), cp.Variable(name="s0")
            variables.update(x0=x0, t0=t0, s0=s0)
            c_server = pb.cycles_per_sample_server
            cons += [
                x0 >= c_server / pb.f_max_server,
                x0 <= c_server * pb.batch_cap_pre / pb.f_max_server,
                t0 >= x0,
                dvfs_energy_cone(s0, t0, x0),
            ]
            for name in ("mE", "mT", "oM"):
                params[name] = cp.Parameter(nonneg=True, name=name)
            power_server = pb.kappa_server * pb.f_max_server**3
            energy = energy + params["mE"] * (power_server * s0)
            delay = delay + params["mT"] * t0
            obj = obj + params["oM"] * cp.inv_pos(x0)
        if has_ft:
            x, t, s = (cp.Variable((r, k), name=n) for n in ("x", "t", "s"))
            tau, u = cp.Variable((r, k), name="tau"), cp.Variable((r, k), name="u")
            deadline = cp.Variable((r, 1), name="T")
            variables.update(x=x, t=t, s=s, tau=tau, u=u, T=deadline)
            c_up = pb.upload_bit_time()
            a = pb.noise_over_gain(self.gains)
            tau_min = 1.0 / np.log2(1.0 + pb.p_max / a)  # in units of c
            x_min = pb.cycles_per_sample / pb.f_max
            x_max = pb.cycles_per_sample * pb.batch_cap_ft / pb.f_max
            cons += [
                x >= np.broadcast_to(x_min, (r, k)),
                x <= np.broadcast_to(x_max, (r, k)),
                t >= x,
                dvfs_energy_cone(s, t, x),
                tau >= tau_min,
                radio_energy_cone(tau, u),
                t + cp.multiply(np.broadcast_to(c_up, (r, k)), tau) <= deadline @ np.ones((1, k)),
            ]
            for name in ("nE", "nT", "oN"):
                params[name] = cp.Parameter(nonneg=True, name=name)
            power_dev = pb.kappa * pb.f_max**3
            upload_scale = a * c_up
            dev_energy = cp.sum(s @ power_dev) + cp.sum(cp.multiply(upload_scale, u - tau))
            energy = energy + params["nE"] * dev_energy
            delay = delay + params["nT"] * (cp.sum(deadline) + r * pb.downlink_s)
            per_sample = pb.f_max / pb.cycles_per_sample
            obj = obj + params["oN"] * cp.sum(cp.inv_pos(x @ per_sample))
        limit = 1.0 - BUDGET_MARGIN
        energy_con = energy <= limit
        delay_con = delay <= limit
        program = cp.Problem(cp.Minimize(obj), [*cons, energy_con, delay_con])
        return _Program(program, params, variables, energy_con, delay_con)

    def _program(self, has_pre: bool, has_ft: bool) -> _Program:
        key = (has_pre, has_ft)
        if key not in self._programs:
            self._programs[key] = self._build(has_pre, has_ft)
        return self._programs[key]

    # ------------------------------------------------------------------------------------------------
    def solve(
        self,
        M: int,
        N: int,
        parts: AffineParts,
        *,
        energy_j: float | None = None,
        delay_s: float | None = None,
    ) -> Allocation:
        """Globally optimal continuous allocation for (M, N) minimising J = w_pre S_pre + w_ft S_ft."""
        pb = self.problem
        start = time.perf_counter()
        e_budget, t_budget, multiplicity = inner_budgets(
            pb, M, N, energy_j=energy_j, delay_s=delay_s, per_round=self.per_round, rounds=self.rounds
        )
        r, k = self.gains.shape
        has_pre, has_ft = M > 0, N > 0
        prog = self._program(has_pre, has_ft)
        cap_pre = pb.batch_cap_pre
        cap_ft_total = float(np.sum(pb.batch_cap_ft))
        groups = r if has_ft else 0
        best_j = (parts.weight_pre * M / cap_pre if has_pre else 0.0) + (
            parts.weight_ft * multiplicity * groups / cap_ft_total
        )
        scale = best_j if best_j > 0 else 1.0
        if has_pre:
            prog.params["mE"].value = M / e_budget
            prog.params["mT"].value = M / t_budget
            prog.params["oM"].value = (
                parts.weight_pre * M * pb.cycles_per_sample_server / pb.f_max_server / scale
            )
        if has_ft:
            prog.params["nE"].value = multiplicity / e_budget
            prog.params["nT"].value = multiplicity / t_budget
            prog.params["oN"].value = parts.weight_ft * multiplicity / scale
        best: Allocation | None = None
        status = ""
        for options in solver_attempts(self.solver):
            status = run_once(prog.problem, self.solver, options)
            if status in (cp.INFEASIBLE, cp.UNBOUNDED):
                break
            if status in ACCEPTED_STATUSES:
                best = self._extract(prog, M, N, multiplicity, parts, scale, e_budget, t_budget, status)
                if best.verified:  # an inaccurate answer that breaks the original constraints gets retried
                    break
        elapsed = time.perf_counter() - start
        if best is None:
            return infeasible_allocation(M, N, status, self.solver, elapsed)
        return replace(best, solve_time_s=elapsed)

    def _extract(
        self,
        prog: _Program,
        M: int,
        N: int,
        multiplicity: int,
        parts: AffineParts,
        scale: float,
        e_budget: float,
        t_budget: float,
        status: str,
    ) -> Allocation:
        """Clocks, powers and batches from the solver's times (clipped to their limits), checked against
        the original constraints of (P1) (``verified``)."""
        pb = self.problem
        v = prog.variables
        k = self.gains.shape[1]
        if M > 0:
            c_server = pb.cycles_per_sample_server
            x0 = float(
                np.clip(
                    v["x0"].value, c_server / pb.f_max_server, c_server * pb.batch_cap_pre / pb.f_max_server
                )
            )
            t0 = max(float(v["t0"].value), x0)
            batch_pre = x0 * pb.f_max_server / pb.cycles_per_sample_server
            f_server = min(pb.f_max_server * x0 / t0, pb.f_max_server)
            time_pre = pb.cycles_per_sample_server * batch_pre / f_server
        else:
            batch_pre, f_server, time_pre = 0.0, 0.0, 0.0
        if N > 0:
            x_min = pb.cycles_per_sample / pb.f_max
            x = np.clip(np.asarray(v["x"].value), x_min, x_min * pb.batch_cap_ft)
            t = np.maximum(np.asarray(v["t"].value), x)
            c_up = pb.upload_bit_time()
            a = pb.noise_over_gain(self.gains)
            tau_phys = c_up * np.asarray(v["tau"].value)
            tau_phys = np.maximum(tau_phys, pb.min_upload_time(self.gains))
            batch_ft = x * pb.f_max / pb.cycles_per_sample
            f_dev = np.minimum(pb.f_max * x / t, pb.f_max)
            p_dev = np.minimum(upload_power(tau_phys, a, c_up), pb.p_max)
            time_cmp = pb.cycles_per_sample * batch_ft / f_dev
            deadline = np.max(time_cmp + tau_phys, axis=1)
        else:
            batch_ft = time_cmp = tau_phys = f_dev = p_dev = np.zeros((0, k))
            deadline = np.zeros(0)
        s_pre, s_ft = inverse_batch_sums(M, multiplicity, batch_pre, batch_ft)
        objective = parts.weight_pre * s_pre + parts.weight_ft * s_ft
        costs = predict_costs(
            pb,
            M,
            N,
            batch_pre,
            f_server,
            plan_arrays(pb, N, batch_ft),
            plan_arrays(pb, N, f_dev),
            plan_arrays(pb, N, p_dev),
        )
        verified = bool(
            costs.energy_j <= e_budget * (1 + FEASIBILITY_RTOL)
            and costs.delay_s <= t_budget * (1 + FEASIBILITY_RTOL)
        )
        y_e = prog.energy_con.dual_value
        y_t = prog.delay_con.dual_value
        return Allocation(
            M=M,
            N=N,
            multiplicity=multiplicity,
            batch_pre=batch_pre,
            time_pre=time_pre,
            f_server=f_server,
            batch_ft=batch_ft,
            time_cmp=time_cmp,
            time_up=tau_phys,
            deadline=deadline,
            f_devices=f_dev,
            p_devices=p_dev,
            objective=objective,
            bound=parts.value(s_pre, s_ft),
            feasible=True,
            status=status,
            solver=self.solver,
            solve_time_s=0.0,
            lambda_energy=float(y_e) * scale / e_budget if y_e is not None else math.nan,
            lambda_delay=float(y_t) * scale / t_budget if y_t is not None else math.nan,
            verified=verified,
            parts=parts,
        )
