"""The tree planner's inner problem: per-node CPU clocks and per-link transmit powers for one round's work
profile, minimizing the round's delay under an energy budget, its energy under a delay budget, or energy +
weight x delay. One convex program (cvxpy), for any algorithm's profile on any tree.

Variables (with the cone forms of :mod:`edgelearn.planning.cones`, shared with the two-stage planner):

* every DVFS node n with cycles ``C_n`` in the round runs at one clock ``f_n``: its total compute time
  ``t_n = C_n / f_n >= C_n / f_max`` is the variable, each of its events takes its share ``C_e / C_n`` of it,
  and its energy is ``kappa C_n f_n^2 = kappa f_max^3 x^3 / t^2`` (a power cone);
* every wireless directed link l (named by its child node, up or down) sends all its bytes at one power: its
  time per bit per Hz ``tau_l >= tau_min`` (from the sender's p_max) is the variable, an event of ``bits``
  takes ``bits / W tau_l`` and the link's energy is an exponential cone (Shannon rate, FDMA share W);
* accelerators, wired links and zero-work events keep their fixed time and energy.

The round's delay is the longest path through the profile's precedence pairs (one linear inequality per
pair), so the program is exact for the virtual clock. Times are scaled by the full-speed delay and energies by
the full-speed energy, so the solver sees O(1) numbers. The chosen clocks and powers are then replayed through
the system model (:meth:`RoundProfile.replay`), which gives the plan's predicted energy and delay: the numbers
a run at that operating point records.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Literal

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from edgelearn.planning.allocation import BUDGET_MARGIN
from edgelearn.planning.cones import dvfs_energy_cone, radio_energy_cone_at_full_power
from edgelearn.planning.convex import ACCEPTED_STATUSES, pick_solver, solve_program
from edgelearn.planning.tree.profile import Graph
from edgelearn.system import OperatingPoint, SystemModel
from edgelearn.system.costs import BITS_PER_BYTE

Objective = Literal["delay", "energy", "weighted"]
Parts = Literal["joint", "clocks", "powers"]

LN2 = math.log(2.0)


@dataclass(frozen=True)
class Allocation:
    """The solver's answer: an operating point (NaN where nothing was chosen) and the solve's status."""

    point: OperatingPoint
    status: str
    solve_s: float
    budget_price: float | None = None
    """The binding budget's shadow price in objective units: seconds of delay one more joule buys (objective
    ``delay``), joules one more second saves (``energy``); None for ``weighted`` or without a solution."""


@dataclass(frozen=True)
class Terms:
    """The profile priced for the program: which events scale with which variable, and the fixed rest."""

    graph: Graph
    fixed_s: np.ndarray
    """Per event: its time when it depends on no variable (accelerators, wired links), else 0."""
    fixed_j: float
    """Energy of the fixed events (J)."""
    cpu_nodes: np.ndarray
    """DVFS nodes that compute in the round."""
    cpu_x: np.ndarray
    """Their compute time at f_max (s)."""
    cpu_coef: np.ndarray
    """kappa f_max^3 of each (J / s^3 x s^2)."""
    cpu_share: sp.csr_matrix
    """(events x cpu_nodes): an event's share C_e / C_n of its node's compute time."""
    link_child: np.ndarray
    link_up: np.ndarray
    """Wireless directed links used in the round: the child node and whether it is the uplink."""
    link_a: np.ndarray
    """Noise power over gain W N0 / g of each link (W): p = a (2^(1/tau) - 1)."""
    link_c: np.ndarray
    """Total bits / W of each link in the round (s per unit of tau)."""
    link_tau_min: np.ndarray
    """tau at the sender's p_max."""
    link_p_max: np.ndarray
    """The sender's p_max (W)."""
    link_share: sp.csr_matrix
    """(events x links): bits_e / W of the event on the link."""

    def min_energy_j(self) -> float:
        """The infimum of the round's energy over every clock and power: the fixed events plus each link's
        ``a c ln 2`` (its energy as tau grows without bound); DVFS energy tends to 0. Never attained."""
        return float(self.fixed_j + np.sum(self.link_a * self.link_c) * LN2)


def price(graph: Graph, system: SystemModel, round_: int) -> Terms:
    """Split the profile's events into variable terms (DVFS compute, wireless links) and fixed ones."""
    n_events = graph.size
    topo, channel = system.topology, system.channel
    fixed_s = np.zeros(n_events)
    fixed_j = 0.0
    # ---- compute
    comp = np.flatnonzero(graph.kind == 0)
    nodes = graph.node[comp]
    dvfs = system.dvfs[nodes]
    acc = comp[~dvfs]
    acc_s = graph.flops[acc] / system.flops_per_s[graph.node[acc]]
    fixed_s[acc] = acc_s
    fixed_j += float(np.sum(system.power_w[graph.node[acc]] * acc_s))
    cpu_ev = comp[dvfs]
    cycles = graph.flops[cpu_ev] * system.cycles_per_flop[graph.node[cpu_ev]]
    cpu_nodes, col = np.unique(graph.node[cpu_ev], return_inverse=True)
    total = np.bincount(col, weights=cycles, minlength=cpu_nodes.size)
    keep = total > 0
    share = np.divide(cycles, total[col], out=np.zeros_like(cycles), where=total[col] > 0)
    cpu_share = sp.csr_matrix((share, (cpu_ev, col)), shape=(n_events, cpu_nodes.size))[:, keep]
    cpu_nodes, total = cpu_nodes[keep], total[keep]
    f_max = system.f_max_hz[cpu_nodes]
    # ---- transmit
    tx = np.flatnonzero(graph.kind == 1)
    src, dst = graph.src[tx], graph.dst[tx]
    up = topo.parent_array[src] == dst
    child = np.where(up, src, dst)
    bits = BITS_PER_BYTE * graph.nbytes[tx]
    wireless = np.asarray(channel.is_wireless(child), dtype=bool) & (bits > 0)
    wired = tx[~wireless]
    if wired.size:
        rate = np.asarray(channel.rate(child[~wireless], round_, system.p_max_w[src[~wireless]]))
        wired_s = np.divide(bits[~wireless], rate, out=np.zeros(wired.size), where=bits[~wireless] > 0)
        fixed_s[wired] = wired_s
        fixed_j += float(np.sum(system.p_max_w[src[~wireless]] * wired_s))
    radio = tx[wireless]
    key = child[wireless] * 2 + up[wireless]
    links, col = np.unique(key, return_inverse=True)
    link_child, link_up = links // 2, (links % 2).astype(bool)
    width = np.asarray(channel.bandwidth(link_child), dtype=np.float64) if links.size else np.zeros(0)
    gain = np.asarray(channel.gain(link_child, round_), dtype=np.float64) if links.size else np.zeros(0)
    a = width * channel.noise_psd_w_per_hz / gain
    per_bit = bits[wireless] / width[col]
    sender = np.where(link_up, link_child, topo.parent_array[link_child])
    tau_min = 1.0 / np.log2(1.0 + system.p_max_w[sender] / a)
    return Terms(
        graph=graph,
        fixed_s=fixed_s,
        fixed_j=fixed_j,
        cpu_nodes=cpu_nodes,
        cpu_x=total / f_max,
        cpu_coef=system.kappa[cpu_nodes] * f_max**3,
        cpu_share=cpu_share.tocsr(),
        link_child=link_child,
        link_up=link_up,
        link_a=a,
        link_c=np.bincount(col, weights=per_bit, minlength=links.size),
        link_tau_min=tau_min,
        link_p_max=system.p_max_w[sender],
        link_share=sp.csr_matrix((per_bit, (radio, col)), shape=(n_events, links.size)),
    )


def solve(
    terms: Terms,
    system: SystemModel,
    *,
    objective: Objective,
    energy_j: float | None = None,
    delay_s: float | None = None,
    weight_j_per_s: float = 1.0,
    scale: tuple[float, float],
    parts: Parts = "joint",
    solver: str | None = None,
) -> Allocation:
    """Clocks and powers for ``terms``: ``objective`` ``delay`` under ``energy_j``, ``energy`` under
    ``delay_s``, or ``weighted`` (energy + ``weight_j_per_s`` x delay, both budgets optional). ``scale`` is
    (seconds, joules) to normalize by (the full-speed round). ``parts`` ``clocks`` or ``powers`` optimizes
    only that part, the other held at full speed (the planner's parts alone, as baselines)."""
    t0, e0 = scale
    g = terms.graph
    started = time.perf_counter()
    n_cpu, n_link = terms.cpu_nodes.size, terms.link_child.size
    cons: list[cp.Constraint] = []
    duration: cp.Expression = cp.Constant(terms.fixed_s / t0)
    energy: cp.Expression = cp.Constant(terms.fixed_j / e0)
    t = tau = None
    if n_cpu:  # t: each CPU node's compute time in multiples of its time at f_max (>= 1)
        t = cp.Variable(n_cpu, name="t")
        s = cp.Variable(n_cpu, name="s")
        cons += [t >= 1.0, dvfs_energy_cone(s, t, cp.Constant(np.ones(n_cpu)))]
        if parts == "powers":
            cons.append(t == 1.0)
        duration = duration + (terms.cpu_share.multiply(terms.cpu_x[None, :]) / t0).tocsr() @ t
        energy = energy + (terms.cpu_coef * terms.cpu_x / e0) @ s  # kappa f^3 x / t_hat^2
    if n_link:  # tau: each link's time per bit-per-Hz in multiples of its tau at p_max (>= 1)
        tau = cp.Variable(n_link, name="tau")
        u = cp.Variable(n_link, name="w")
        unit = terms.link_tau_min
        cons += [tau >= 1.0, radio_energy_cone_at_full_power(tau, u, unit)]
        if parts == "clocks":
            cons.append(tau == 1.0)
        duration = duration + (terms.link_share.multiply(unit[None, :]) / t0).tocsr() @ tau
        # a c tau_min (2^(1/tau_min) u - tau), with a 2^(1/tau_min) = p_max + a (no overflow)
        scale_c = terms.link_c * unit / e0
        energy = energy + ((terms.link_p_max + terms.link_a) * scale_c) @ u - (terms.link_a * scale_c) @ tau
    finish = cp.Variable(g.size, name="finish")
    delay = cp.Variable(name="delay")
    cons += [finish >= duration, delay >= finish]
    if g.before.size:
        cons.append(finish[g.after] >= finish[g.before] + duration[g.after])
    limit = 1.0 - BUDGET_MARGIN
    budget: dict[str, cp.Constraint] = {}
    if energy_j is not None:
        budget["energy"] = energy <= energy_j / e0 * limit
    if delay_s is not None:
        budget["delay"] = delay <= delay_s / t0 * limit
    cons += list(budget.values())
    goal = {"delay": delay, "energy": energy, "weighted": energy + weight_j_per_s * t0 / e0 * delay}
    program = cp.Problem(cp.Minimize(goal[objective]), cons)
    status = solve_program(program, solver or pick_solver())
    if status not in ACCEPTED_STATUSES:
        return Allocation(OperatingPoint.full_speed(system.topology.num_nodes), status, _since(started))
    t_s = None if t is None else np.asarray(t.value, dtype=np.float64) * terms.cpu_x
    taus = None if tau is None else np.asarray(tau.value, dtype=np.float64) * terms.link_tau_min
    # the dual of the other measure's budget, back in seconds per joule (delay) or joules per second (energy)
    other = {"delay": ("energy", t0 / e0), "energy": ("delay", e0 / t0)}.get(objective)
    shadow = None
    if other is not None and other[0] in budget and budget[other[0]].dual_value is not None:
        shadow = float(np.asarray(budget[other[0]].dual_value)) * other[1]
    return Allocation(operating_point(terms, system, t_s, taus), status, _since(started), shadow)


def _since(started: float) -> float:
    return time.perf_counter() - started


def operating_point(
    terms: Terms, system: SystemModel, t_s: np.ndarray | None, tau: np.ndarray | None
) -> OperatingPoint:
    """The operating point of compute times ``t_s`` (per CPU node, s) and link taus (None: full speed):
    clocks ``C_n / t_n`` and powers ``a (2^(1/tau) - 1)``, clipped into each node's limits; bandwidth shares
    are not set (the channel's are used)."""
    point = replace(OperatingPoint.full_speed(system.topology.num_nodes), bandwidth_hz=None)
    if t_s is not None and terms.cpu_nodes.size:
        f_max = system.f_max_hz[terms.cpu_nodes]
        cycles = terms.cpu_x * f_max
        point.freq_hz[terms.cpu_nodes] = np.clip(cycles / np.maximum(t_s, terms.cpu_x), 0.0, f_max)
    if tau is not None and terms.link_child.size:
        topo = system.topology
        sender = np.where(terms.link_up, terms.link_child, topo.parent_array[terms.link_child])
        power = terms.link_a * np.expm1(LN2 / np.maximum(tau, terms.link_tau_min))
        power = np.minimum(power, system.p_max_w[sender])
        up, down = terms.link_child[terms.link_up], terms.link_child[~terms.link_up]
        point.uplink_power_w[up] = power[terms.link_up]
        point.downlink_power_w[down] = power[~terms.link_up]
    return point
