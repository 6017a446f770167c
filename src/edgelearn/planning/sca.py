"""Successive convex approximation in the original variables: the paper's route (Lyu et al., arXiv
2404.00836, solve the inner problem at fixed M, N by SCA), kept as a cross-check of the exact convex program.
The surrogates below are ours; the paper's own were not available to us.

Variables are batches, clock fractions phi = f / f_max and power fractions rho = p / P_max. The three
non-convex products are replaced by AM-GM upper bounds x y <= (c/2) x^2 + y^2 / (2c), tight at the current
iterate (c = y_i / x_i): D phi^2 (compute energy), D / phi (compute delay) and rho tau(rho) (upload energy,
tau(rho) = c_up ln2 / ln(1 + snr rho) is convex). Every iterate is feasible for the original problem and J
does not increase. The start is the cheapest-delay point (batches 1, f = f_max, p = P_max); if it breaks a
budget a phase-1 SCA minimises a common budget overshoot s first, and (M, N) is infeasible if s stays > 0.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from edgelearn.planning.allocation import (
    BUDGET_MARGIN,
    Allocation,
    infeasible_allocation,
    inner_budgets,
    inverse_batch_sums,
)
from edgelearn.planning.bound import AffineParts
from edgelearn.planning.closed_form import LN2, upload_time
from edgelearn.planning.convex import ACCEPTED_STATUSES, pick_solver, solve_program
from edgelearn.planning.plan import FEASIBILITY_RTOL, predict_costs
from edgelearn.planning.problem import TwoStageProblem

SCA_RTOL = 1e-4
"""Stop when J decreases by less than this fraction in one iteration (our choice)."""

SCA_MAX_ITERATIONS = 200
"""Safety cap on SCA iterations per phase."""

PHI_MIN = 1e-3
"""Lowest clock fraction f / f_max the SCA variables may take (keeps 1/phi^2 finite)."""

RHO_MIN = 1e-6
"""Lowest power fraction p / P_max the SCA variables may take (keeps tau(rho) finite)."""

SLACK_FLOOR = -0.5
"""Phase 1 may push both budgets up to 50% below their limits, so it returns a strictly feasible start."""

SLACK_CEILING = 1e6
"""Upper bound of the phase-1 overshoot variable (any start point overshoots far less)."""


@dataclass
class _Surrogate:
    problem: cp.Problem
    params: dict[str, cp.Parameter]
    variables: dict[str, cp.Variable]
    energy_con: cp.Constraint
    delay_con: cp.Constraint


@dataclass
class _Point:
    batch_pre: float
    phi_pre: float
    batch_ft: np.ndarray
    phi: np.ndarray
    rho: np.ndarray


class ScaInner:
    """SCA solver of the inner problem for one round structure (static or per-round gains)."""

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
        a = problem.noise_over_gain(self.gains)
        self.snr_max = problem.p_max / a
        self.c_up = problem.upload_bit_time()
        self.a = a
        self._programs: dict[tuple[bool, bool], _Surrogate] = {}

    # ------------------------------------------------------------------------------------------------
    def _tau(self, rho: np.ndarray) -> np.ndarray:
        return np.asarray(upload_time(rho * self.problem.p_max, self.a, self.c_up))

    def _build(self, has_pre: bool, has_ft: bool) -> _Surrogate:
        """Surrogate program in iterate-normalised variables (value / value at the iterate), so every
        variable is 1 at the expansion point and the AM-GM constant is c = 1 (good conditioning)."""
        r, k = self.gains.shape
        params: dict[str, cp.Parameter] = {}
        variables: dict[str, cp.Variable] = {}
        cons: list[cp.Constraint] = []

        def param(name: str, shape: tuple[int, ...] = (), nonneg: bool = True) -> cp.Parameter:
            params[name] = cp.Parameter(shape, nonneg=nonneg, name=name)
            return params[name]

        slack = cp.Variable(name="slack")
        cons += [slack >= param("slack_lo", nonneg=False), slack <= param("slack_hi")]
        energy: cp.Expression = 0
        delay: cp.Expression = 0
        obj: cp.Expression = param("slack_w") * slack
        if has_pre:
            u, v = cp.Variable(name="u"), cp.Variable(name="v")  # D~ / D~_i, phi~ / phi~_i
            variables.update(u=u, v=v)
            cons += [u >= param("u_lo"), u <= param("u_hi"), v >= param("v_lo"), v <= param("v_hi")]
            # D phi^2 <= D_i phi_i^2 (u^2 + v^4) / 2 and D / phi <= D_i / phi_i (u^2 + v^-2) / 2
            energy = energy + param("e0") * (cp.square(u) + cp.power(v, 4))
            delay = delay + param("d0") * (cp.square(u) + cp.power(v, -2))
            obj = obj + param("oM") * cp.inv_pos(u)
        if has_ft:
            shape = (r, k)
            b, phi, rho = (cp.Variable(shape, name=n) for n in ("U", "V", "w"))
            deadline = cp.Variable((r, 1), name="T")
            variables.update(U=b, V=phi, w=rho, T=deadline)
            cons += [
                b >= param("U_lo", shape),
                b <= param("U_hi", shape),
                phi >= param("V_lo", shape),
                phi <= param("V_hi", shape),
                rho >= param("w_lo", shape),
                rho <= param("w_hi", shape),
            ]
            log_rate = cp.log(1 + cp.multiply(param("snr_rho", shape), rho))  # ln(1 + snr rho), concave
            tau = cp.multiply(np.broadcast_to(self.c_up * LN2, shape), cp.inv_pos(log_rate))
            energy = energy + cp.sum(
                cp.multiply(param("eB", shape), cp.square(b) + cp.power(phi, 4))
                + cp.multiply(param("pA", shape), cp.square(rho))
                + cp.multiply(param("pB", shape), cp.power(log_rate, -2))
            )
            compute_time = cp.multiply(param("dB", shape), cp.square(b) + cp.power(phi, -2))
            cons.append(compute_time + tau <= deadline @ np.ones((1, k)))
            delay = delay + param("nT") * (cp.sum(deadline) + r * self.problem.downlink_s)
            batches = cp.sum(cp.multiply(param("B_i", shape), b), axis=1)
            obj = obj + param("oN") * cp.sum(cp.inv_pos(batches))
        limit = 1.0 - BUDGET_MARGIN
        energy_con = energy <= limit + slack
        delay_con = delay <= limit + slack
        program = cp.Problem(cp.Minimize(obj), [*cons, energy_con, delay_con])
        return _Surrogate(program, params, variables, energy_con, delay_con)

    def _program(self, has_pre: bool, has_ft: bool) -> _Surrogate:
        key = (has_pre, has_ft)
        if key not in self._programs:
            self._programs[key] = self._build(has_pre, has_ft)
        return self._programs[key]

    # ------------------------------------------------------------------------------------------------
    def _set_expansion(
        self,
        prog: _Surrogate,
        point: _Point,
        parts: AffineParts,
        M: int,
        multiplicity: int,
        e_budget: float,
        t_budget: float,
        scale: float,
        phase1: bool,
    ) -> None:
        """Set bounds, AM-GM coefficients and objective weights at ``point`` (folding in round counts and
        budget scales, so the parameters are the surrogate's terms at the iterate)."""
        pb = self.problem
        p = prog.params
        weight = 0.0 if phase1 else 1.0
        p["slack_w"].value = 1.0 if phase1 else 0.0
        p["slack_lo"].value = SLACK_FLOOR if phase1 else 0.0
        p["slack_hi"].value = SLACK_CEILING if phase1 else 0.0
        if M > 0:
            d_i, phi_i = point.batch_pre, point.phi_pre
            p["u_lo"].value, p["u_hi"].value = 1.0 / d_i, pb.batch_cap_pre / d_i
            p["v_lo"].value, p["v_hi"].value = PHI_MIN / phi_i, 1.0 / phi_i
            e0 = pb.kappa_server * pb.cycles_per_sample_server * pb.f_max_server**2 * M / e_budget
            d0 = pb.cycles_per_sample_server / pb.f_max_server * M / t_budget
            p["e0"].value = e0 * d_i * phi_i**2 / 2
            p["d0"].value = d0 * d_i / phi_i / 2
            p["oM"].value = weight * parts.weight_pre * M / d_i / scale
        if "U" in prog.variables:
            b_i, phi_i, rho_i = point.batch_ft, point.phi, point.rho
            cap = np.broadcast_to(pb.batch_cap_ft, b_i.shape)
            p["U_lo"].value, p["U_hi"].value = 1.0 / b_i, cap / b_i
            p["V_lo"].value, p["V_hi"].value = PHI_MIN / phi_i, 1.0 / phi_i
            p["w_lo"].value, p["w_hi"].value = RHO_MIN / rho_i, 1.0 / rho_i
            p["snr_rho"].value = self.snr_max * rho_i
            tau_i = self._tau(rho_i)
            e0 = np.broadcast_to(pb.kappa * pb.cycles_per_sample * pb.f_max**2, b_i.shape)
            p0 = np.broadcast_to(pb.p_max, b_i.shape) * multiplicity / e_budget
            p["eB"].value = e0 * multiplicity / e_budget * b_i * phi_i**2 / 2
            # rho tau <= rho_i tau_i (w^2 + (tau / tau_i)^2) / 2, tau^2 = (c ln2)^2 ln(1 + snr rho)^-2
            p["pA"].value = p0 * rho_i * tau_i / 2
            p["pB"].value = p0 * rho_i / tau_i / 2 * (self.c_up * LN2) ** 2
            p["dB"].value = np.broadcast_to(pb.cycles_per_sample / pb.f_max, b_i.shape) * b_i / phi_i / 2
            p["nT"].value = multiplicity / t_budget
            p["B_i"].value = b_i
            p["oN"].value = weight * parts.weight_ft * multiplicity / scale

    def _budget_use(self, point: _Point, M: int, N: int) -> tuple[float, float]:
        pb = self.problem
        costs = predict_costs(
            pb, M, N, point.batch_pre, point.phi_pre * pb.f_max_server, *self._plan_shape(point, N)
        )
        return costs.energy_j, costs.delay_s

    def _plan_shape(self, point: _Point, N: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pb = self.problem
        b, f, p = point.batch_ft, point.phi * pb.f_max, point.rho * pb.p_max
        if N == 0:
            k = pb.num_devices
            return np.zeros(k), np.zeros(k), np.zeros(k)
        return (b, f, p) if self.per_round else (b[0], f[0], p[0])

    def _objective(self, parts: AffineParts, point: _Point, M: int, multiplicity: int) -> float:
        s_pre, s_ft = inverse_batch_sums(M, multiplicity, point.batch_pre, point.batch_ft)
        return parts.weight_pre * s_pre + parts.weight_ft * s_ft

    def _read(self, prog: _Surrogate, point: _Point, M: int, N: int) -> _Point:
        v = prog.variables
        pb = self.problem
        new = _Point(point.batch_pre, point.phi_pre, point.batch_ft, point.phi, point.rho)
        if M > 0:
            new.batch_pre = float(np.clip(v["u"].value * point.batch_pre, 1.0, pb.batch_cap_pre))
            new.phi_pre = float(np.clip(v["v"].value * point.phi_pre, PHI_MIN, 1.0))
        if N > 0:
            cap = np.broadcast_to(pb.batch_cap_ft, point.batch_ft.shape)
            new.batch_ft = np.clip(np.asarray(v["U"].value) * point.batch_ft, 1.0, cap)
            new.phi = np.clip(np.asarray(v["V"].value) * point.phi, PHI_MIN, 1.0)
            new.rho = np.clip(np.asarray(v["w"].value) * point.rho, RHO_MIN, 1.0)
        return new

    def solve(
        self,
        M: int,
        N: int,
        parts: AffineParts,
        *,
        energy_j: float | None = None,
        delay_s: float | None = None,
    ) -> Allocation:
        """A KKT point of the inner problem at (M, N) by SCA, or an infeasible Allocation."""
        pb = self.problem
        start = time.perf_counter()
        e_budget, t_budget, multiplicity = inner_budgets(
            pb, M, N, energy_j=energy_j, delay_s=delay_s, per_round=self.per_round, rounds=self.rounds
        )
        r, k = self.gains.shape
        prog = self._program(M > 0, N > 0)
        groups = r if N > 0 else 0
        best_j = (parts.weight_pre * M / pb.batch_cap_pre if M > 0 else 0.0) + (
            parts.weight_ft * multiplicity * groups / float(np.sum(pb.batch_cap_ft))
        )
        scale = best_j if best_j > 0 else 1.0
        shape = (r, k) if N > 0 else (0, k)
        point = _Point(1.0, 1.0, np.ones(shape), np.ones(shape), np.ones(shape))
        iterations = 0
        limit = 1.0 - BUDGET_MARGIN
        energy, delay = self._budget_use(point, M, N)
        if max(energy / e_budget, delay / t_budget) > limit:
            # phase 1: minimise the common overshoot s of both normalised budgets
            previous = math.inf
            while True:
                self._set_expansion(prog, point, parts, M, multiplicity, e_budget, t_budget, scale, True)
                status = self._solve_once(prog)
                iterations += 1
                if status not in ACCEPTED_STATUSES:
                    return infeasible_allocation(
                        M, N, f"phase 1: {status}", f"SCA/{self.solver}", time.perf_counter() - start
                    )
                point = self._read(prog, point, M, N)
                energy, delay = self._budget_use(point, M, N)
                overshoot = max(energy / e_budget, delay / t_budget) - limit
                if overshoot <= 0:
                    break
                stalled = previous - overshoot <= SCA_RTOL * previous  # previous > 0 here
                if stalled or iterations >= SCA_MAX_ITERATIONS:
                    return infeasible_allocation(
                        M,
                        N,
                        f"phase 1 stalled at overshoot {overshoot:.3g}: likely infeasible",
                        f"SCA/{self.solver}",
                        time.perf_counter() - start,
                    )
                previous = overshoot
        # phase 2: minimise J
        objective = self._objective(parts, point, M, multiplicity)
        best, best_objective = point, objective
        for _ in range(SCA_MAX_ITERATIONS):
            self._set_expansion(prog, point, parts, M, multiplicity, e_budget, t_budget, scale, False)
            status = self._solve_once(prog)
            iterations += 1
            if status not in ACCEPTED_STATUSES:
                break
            candidate = self._read(prog, point, M, N)
            energy, delay = self._budget_use(candidate, M, N)
            if energy > e_budget or delay > t_budget:  # solver round-off broke a budget: stop here
                break
            value = self._objective(parts, candidate, M, multiplicity)
            change = abs(objective - value)
            point, objective = candidate, value
            if value < best_objective:
                best, best_objective = candidate, value
            if change <= SCA_RTOL * abs(value):
                break
        point = best
        return self._allocation(
            prog,
            point,
            M,
            N,
            multiplicity,
            parts,
            scale,
            e_budget,
            t_budget,
            iterations,
            time.perf_counter() - start,
        )

    def _solve_once(self, prog: _Surrogate) -> str:
        return solve_program(prog.problem, self.solver)

    def _allocation(
        self,
        prog: _Surrogate,
        point: _Point,
        M: int,
        N: int,
        multiplicity: int,
        parts: AffineParts,
        scale: float,
        e_budget: float,
        t_budget: float,
        iterations: int,
        elapsed: float,
    ) -> Allocation:
        pb = self.problem
        energy, delay = self._budget_use(point, M, N)
        if energy > e_budget * (1 + FEASIBILITY_RTOL) or delay > t_budget * (1 + FEASIBILITY_RTOL):
            return infeasible_allocation(M, N, "SCA iterate broke a budget", f"SCA/{self.solver}", elapsed)
        f_server = point.phi_pre * pb.f_max_server if M > 0 else 0.0
        time_pre = pb.cycles_per_sample_server * point.batch_pre / f_server if M > 0 else 0.0
        k = pb.num_devices
        if N > 0:
            f_dev = point.phi * pb.f_max
            p_dev = point.rho * pb.p_max
            time_cmp = pb.cycles_per_sample * point.batch_ft / f_dev
            time_up = self._tau(point.rho)
            deadline = np.max(time_cmp + time_up, axis=1)
            batch_ft = point.batch_ft
        else:
            batch_ft = f_dev = p_dev = time_cmp = time_up = np.zeros((0, k))
            deadline = np.zeros(0)
        s_pre, s_ft = inverse_batch_sums(M, multiplicity, point.batch_pre if M > 0 else 0.0, batch_ft)
        y_e, y_t = prog.energy_con.dual_value, prog.delay_con.dual_value
        return Allocation(
            M=M,
            N=N,
            multiplicity=multiplicity,
            batch_pre=point.batch_pre if M > 0 else 0.0,
            time_pre=time_pre,
            f_server=f_server,
            batch_ft=batch_ft,
            time_cmp=time_cmp,
            time_up=time_up,
            deadline=deadline,
            f_devices=f_dev,
            p_devices=p_dev,
            objective=parts.weight_pre * s_pre + parts.weight_ft * s_ft,
            bound=parts.value(s_pre, s_ft),
            feasible=True,
            status="optimal",
            solver=f"SCA/{self.solver}",
            solve_time_s=elapsed,
            iterations=iterations,
            lambda_energy=float(y_e) * scale / e_budget if y_e is not None else math.nan,
            lambda_delay=float(y_t) * scale / t_budget if y_t is not None else math.nan,
            verified=True,
            parts=parts,
        )
