"""FDMA bandwidth shares for the tree planner: each server splits its bandwidth over its wireless links.

A link's energy for ``bits`` in ``D`` seconds over bandwidth ``b`` is ``D b (N0/g) (2^(bits/(D b)) - 1)``,
jointly convex in (D, b) but with no conic form cvxpy accepts in both at once. The planner therefore
alternates two exact convex steps, each of which can only lower the objective:

1. clocks and powers at fixed shares (:func:`~edgelearn.planning.tree.inner.solve`), then
2. shares at fixed link busy times (:func:`split_bandwidth`): every link keeps its time (so every event keeps
   its time and the round its delay) and the shares minimize the radios' energy under each server's total
   and every sender's p_max, freeing energy that step 1 turns into a shorter round (or keeps).

The busy times of step 2 come from step 1's optimum, so a fixed point of the two is the joint optimum's
stationarity condition; a small tree is checked against a brute-force search in the tests.
"""

from __future__ import annotations

import math

import cvxpy as cp
import numpy as np

from edgelearn.planning.cones import radio_energy_cone_at_full_power
from edgelearn.planning.convex import ACCEPTED_STATUSES, pick_solver, solve_program
from edgelearn.planning.tree.inner import Terms
from edgelearn.system import OperatingPoint, SystemModel

MIN_SHARE = 1e-6
"""Smallest share of a server's bandwidth any wireless link keeps (links idle in the round get this)."""
LN2 = math.log(2.0)


def link_powers(terms: Terms, point: OperatingPoint) -> np.ndarray:
    """Each planned link's transmit power at ``point`` (its sender's p_max where the point sets none)."""
    planned = np.where(
        terms.link_up, point.uplink_power_w[terms.link_child], point.downlink_power_w[terms.link_child]
    )
    return np.where(np.isfinite(planned), planned, terms.link_p_max)


def split_bandwidth(
    terms: Terms, system: SystemModel, point: OperatingPoint, solver: str | None = None
) -> np.ndarray | None:
    """Per node, the bandwidth (Hz) of its wireless link that minimizes the round's radio energy with every
    link's busy time at ``point`` kept (NaN for other nodes); None when the solve fails."""
    if not terms.link_child.size:
        return None
    topo, channel = system.topology, system.channel
    power = link_powers(terms, point)
    tau = 1.0 / np.log2(1.0 + power / terms.link_a)  # s per bit per Hz at that power
    busy = terms.link_c * tau  # each link's time in the round (s)
    children, col = np.unique(terms.link_child, return_inverse=True)
    width = np.asarray(channel.bandwidth(children), dtype=np.float64)  # the shares ``terms`` was priced at
    share = cp.Variable(children.size, name="share")  # in multiples of the current share
    w = cp.Variable(terms.link_child.size, name="w")
    scale = float(np.sum(busy * power)) or 1.0  # the radios' energy at ``point``
    # energy and power of link l at share s: (p + a) w - a s, with w >= s exp(k (1 - s) / s), k = ln 2 / tau
    energy = cp.sum(cp.multiply(busy * (power + terms.link_a) / scale, w)) - cp.sum(
        cp.multiply(busy * terms.link_a / scale, share[col])
    )
    link_power = cp.multiply(power + terms.link_a, w) - cp.multiply(terms.link_a, share[col])
    total = channel.spec.bandwidth_hz
    servers = topo.parent_array[children]
    # every wireless link of a server, the idle ones included, keeps at least MIN_SHARE of its bandwidth
    wireless = np.flatnonzero(np.asarray(channel.is_wireless(np.arange(1, topo.num_nodes)))) + 1
    idle = np.setdiff1d(wireless, children)
    reserved = np.bincount(topo.parent_array[idle], minlength=topo.num_nodes) * MIN_SHARE * total
    cons = [
        share >= MIN_SHARE * total / width,
        radio_energy_cone_at_full_power(share[col], w, tau),
        link_power <= terms.link_p_max,
    ]
    for server in np.unique(servers):
        mine = servers == server
        cons.append(width[mine] @ share[mine] <= total - reserved[server])
    program = cp.Problem(cp.Minimize(energy), cons)
    status = solve_program(program, solver or pick_solver())
    if status not in ACCEPTED_STATUSES:
        return None
    out = np.full(topo.num_nodes, np.nan)
    out[children] = np.asarray(share.value, dtype=np.float64) * width
    out[idle] = MIN_SHARE * total
    # float round-off may push a server a hair over its total: scale its links back into it
    used = np.bincount(topo.parent_array[wireless], weights=out[wireless], minlength=topo.num_nodes)
    over = np.where(used > total, total / np.maximum(used, total), 1.0)
    out[wireless] *= over[topo.parent_array[wireless]]
    return out
