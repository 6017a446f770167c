"""The planner's output (`Plan`) and the cost model that predicts a plan's energy and delay (as in (P1)).

`predict_costs` is the single source of truth for predicted energy and delay: the optimizer verifies every
plan with it and the executor compares the ledger against it. It uses the same formulas as
``edgelearn.system.costs`` (compute: cycles / f and kappa cycles f^2; upload: q / R and p q / R with the
Shannon rate R = W log2(1 + p h / (N0 W))).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edgelearn.planning.problem import TwoStageProblem
from edgelearn.system.costs import (
    compute_delay,
    compute_energy,
    shannon_rate,
    transmit_delay,
    transmit_energy,
)

FEASIBILITY_RTOL = 1e-6
"""Relative tolerance on the energy and delay budgets when checking a plan (issue 3's acceptance test)."""

LIMIT_RTOL = 1e-9
"""Relative tolerance on f <= f_max and p <= P_max (floating-point round-off only)."""


@dataclass(frozen=True)
class CostBreakdown:
    """Predicted energy (J) and delay (s) per stage and in total, plus per fine-tuning round values."""

    energy_pre_j: float
    energy_ft_j: float
    delay_pre_s: float
    delay_ft_s: float
    round_energy_ft_j: np.ndarray = field(repr=False)
    """Energy of one fine-tuning round (all devices), per round group: (1,) static or (N,) per-round."""
    round_delay_ft_s: np.ndarray = field(repr=False)
    """Delay of one fine-tuning round including the downlink constant, per round group."""

    @property
    def energy_j(self) -> float:
        """Total energy of both stages."""
        return self.energy_pre_j + self.energy_ft_j

    @property
    def delay_s(self) -> float:
        """Total delay of both stages (they run one after the other)."""
        return self.delay_pre_s + self.delay_ft_s


def predict_costs(
    problem: TwoStageProblem,
    M: int,
    N: int,
    batch_pre: float,
    f_server: float,
    batch_ft: np.ndarray,
    f_devices: np.ndarray,
    p_devices: np.ndarray,
) -> CostBreakdown:
    """Energy and delay of M pre-training and N fine-tuning rounds from the cost formulas of this module.

    ``batch_ft``, ``f_devices`` and ``p_devices`` are (K,) (the same every round, static channels) or
    (N, K) (one row per round, matched with ``problem.gains(N)``). Batches may be fractional (the optimizer
    checks its continuous solution with this too).
    """
    pre_cycles = problem.cycles_per_sample_server * batch_pre
    if M > 0:
        energy_pre = M * float(compute_energy(problem.kappa_server, pre_cycles, f_server))
        delay_pre = M * float(compute_delay(pre_cycles, f_server))
    else:
        energy_pre = delay_pre = 0.0
    if N <= 0:
        empty = np.zeros(0)
        return CostBreakdown(energy_pre, 0.0, delay_pre, 0.0, empty, empty)
    batch = np.atleast_2d(np.asarray(batch_ft, dtype=np.float64))
    freq = np.atleast_2d(np.asarray(f_devices, dtype=np.float64))
    power = np.atleast_2d(np.asarray(p_devices, dtype=np.float64))
    per_round = np.ndim(batch_ft) == 2
    gains = problem.gains(N) if problem.per_round else problem.gains()
    if per_round and batch.shape[0] != N:
        raise ValueError(f"batch_ft has {batch.shape[0]} rows for N={N} rounds")
    if per_round and not problem.per_round:
        gains = np.broadcast_to(gains, batch.shape)
    if not per_round and problem.per_round:
        batch, freq, power = (np.broadcast_to(v, gains.shape) for v in (batch, freq, power))
    cycles = problem.cycles_per_sample * batch
    t_cmp = np.asarray(compute_delay(cycles, freq))
    e_cmp = np.asarray(compute_energy(problem.kappa, cycles, freq))
    rate = np.asarray(shannon_rate(problem.bandwidth, power, gains, problem.noise_psd))
    t_up = np.asarray(transmit_delay(problem.payload_bits, rate))
    e_up = np.asarray(transmit_energy(power, t_up))
    round_delay = np.max(t_cmp + t_up, axis=1) + problem.downlink_s
    round_energy = np.sum(e_cmp + e_up, axis=1)
    multiplicity = 1 if batch.shape[0] == N else N
    return CostBreakdown(
        energy_pre,
        float(multiplicity * round_energy.sum()),
        delay_pre,
        float(multiplicity * round_delay.sum()),
        round_energy,
        round_delay,
    )


def _jsonable(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class Plan:
    """Rounds, integer batch sizes, clocks and powers of both stages, with predicted costs and the bound.

    ``batch_ft``, ``f_devices`` and ``p_devices`` have shape (K,) with static channels (every fine-tuning
    round uses the same allocation) or (N, K) with per-round channel gains. ``feasible`` is False only for
    baseline schemes that cannot fit the budgets at all (then M = N = 0 and the bound is inf).
    """

    scheme: str
    M: int
    N: int
    batch_pre: int
    batch_ft: np.ndarray
    f_server: float
    f_devices: np.ndarray
    p_devices: np.ndarray
    energy_pre_j: float
    energy_ft_j: float
    delay_pre_s: float
    delay_ft_s: float
    bound: float
    bound_name: str
    feasible: bool
    solver: str
    status: str
    solve_time_s: float
    energy_budget_j: float
    delay_budget_s: float
    bound_valid: bool = True

    def __post_init__(self) -> None:
        for name in ("M", "N", "batch_pre"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("f_server", "energy_pre_j", "energy_ft_j", "delay_pre_s", "delay_ft_s", "bound"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def energy_j(self) -> float:
        """Predicted total energy, J."""
        return self.energy_pre_j + self.energy_ft_j

    @property
    def delay_s(self) -> float:
        """Predicted total delay, s."""
        return self.delay_pre_s + self.delay_ft_s

    @property
    def per_round(self) -> bool:
        """Whether the fine-tuning allocation differs per round ((N, K) arrays)."""
        return np.ndim(self.batch_ft) == 2

    @property
    def pre_share(self) -> float:
        """M / (M + N), the share of pre-training rounds (nan when both are zero)."""
        total = self.M + self.N
        return self.M / total if total else math.nan

    def round_allocation(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(batches, frequencies, powers) of the K devices in fine-tuning round ``n`` (0-based)."""
        if not 0 <= n < self.N:
            raise IndexError(f"round {n} outside 0..{self.N - 1}")
        if self.per_round:
            return self.batch_ft[n], self.f_devices[n], self.p_devices[n]
        return self.batch_ft, self.f_devices, self.p_devices

    def predict(self, problem: TwoStageProblem) -> CostBreakdown:
        """Recompute this plan's energy and delay from the cost formulas for ``problem``."""
        return predict_costs(
            problem,
            self.M,
            self.N,
            self.batch_pre,
            self.f_server,
            self.batch_ft,
            self.f_devices,
            self.p_devices,
        )

    def violations(self, problem: TwoStageProblem, rtol: float = FEASIBILITY_RTOL) -> list[str]:
        """Human-readable list of broken constraints (empty for a feasible plan)."""
        if not self.feasible:
            return ["plan is marked infeasible"]
        out: list[str] = []
        costs = self.predict(problem)
        if costs.energy_j > self.energy_budget_j * (1.0 + rtol):
            out.append(f"energy {costs.energy_j:.9g} J > budget {self.energy_budget_j:.9g} J")
        if costs.delay_s > self.delay_budget_s * (1.0 + rtol):
            out.append(f"delay {costs.delay_s:.9g} s > budget {self.delay_budget_s:.9g} s")
        if self.M > 0:
            if not 0 < self.f_server <= problem.f_max_server * (1.0 + LIMIT_RTOL):
                out.append(f"server frequency {self.f_server:.6g} Hz outside (0, {problem.f_max_server:.6g}]")
            if not 1 <= self.batch_pre <= problem.batch_cap_pre:
                out.append(f"pre-training batch {self.batch_pre} outside [1, {problem.batch_cap_pre}]")
        if self.N > 0:
            fmax = np.broadcast_to(problem.f_max, np.shape(self.f_devices))
            pmax = np.broadcast_to(problem.p_max, np.shape(self.p_devices))
            cap = np.broadcast_to(problem.batch_cap_ft, np.shape(self.batch_ft))
            if np.any(self.f_devices <= 0) or np.any(self.f_devices > fmax * (1.0 + LIMIT_RTOL)):
                out.append("a device frequency is outside (0, f_max]")
            if np.any(self.p_devices < 0) or np.any(self.p_devices > pmax * (1.0 + LIMIT_RTOL)):
                out.append("a transmit power is outside [0, P_max]")
            if np.any(self.batch_ft < 1) or np.any(self.batch_ft > cap):
                out.append("a fine-tuning batch is outside [1, min(max_batch_ft, |D_k|)]")
        return out

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict: keys M, N, energy_j, delay_s, bound, feasible and every other field
        (arrays as lists; inf/nan as null)."""
        return {
            "scheme": self.scheme,
            "M": int(self.M),
            "N": int(self.N),
            "energy_j": _jsonable(self.energy_j),
            "delay_s": _jsonable(self.delay_s),
            "bound": _jsonable(self.bound),
            "feasible": bool(self.feasible),
            "bound_name": self.bound_name,
            "bound_valid": bool(self.bound_valid),
            "batch_pre": int(self.batch_pre),
            "batch_ft": np.asarray(self.batch_ft, dtype=np.int64).tolist(),
            "f_server_hz": _jsonable(self.f_server),
            "f_devices_hz": np.asarray(self.f_devices, dtype=np.float64).tolist(),
            "p_devices_w": np.asarray(self.p_devices, dtype=np.float64).tolist(),
            "energy_pre_j": _jsonable(self.energy_pre_j),
            "energy_ft_j": _jsonable(self.energy_ft_j),
            "delay_pre_s": _jsonable(self.delay_pre_s),
            "delay_ft_s": _jsonable(self.delay_ft_s),
            "energy_budget_j": _jsonable(self.energy_budget_j),
            "delay_budget_s": _jsonable(self.delay_budget_s),
            "solver": self.solver,
            "status": self.status,
            "solve_time_s": _jsonable(self.solve_time_s),
        }


def infeasible_plan(
    scheme: str,
    problem: TwoStageProblem,
    *,
    status: str,
    bound_name: str,
    solver: str = "none",
    solve_time_s: float = 0.0,
) -> Plan:
    """A placeholder Plan for a scheme that cannot fit the budgets (feasible=False, M = N = 0)."""
    k = problem.num_devices
    shape: tuple[int, ...] = (0, k) if problem.per_round else (k,)
    zeros_i = np.zeros(shape, dtype=np.int64)
    zeros_f = np.zeros(shape)
    return Plan(
        scheme=scheme,
        M=0,
        N=0,
        batch_pre=0,
        batch_ft=zeros_i,
        f_server=0.0,
        f_devices=zeros_f,
        p_devices=zeros_f.copy(),
        energy_pre_j=0.0,
        energy_ft_j=0.0,
        delay_pre_s=0.0,
        delay_ft_s=0.0,
        bound=math.inf,
        bound_name=bound_name,
        feasible=False,
        solver=solver,
        status=status,
        solve_time_s=solve_time_s,
        energy_budget_j=problem.energy_j,
        delay_budget_s=problem.delay_s,
        bound_valid=problem.bound_valid,
    )
