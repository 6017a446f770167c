"""Which round caps shape a two-stage plan: ``algorithm.max_pre_rounds`` / ``max_ft_rounds`` bind on a
scheme when its plan sits at the cap while the budgets would allow more rounds (Lyu et al., arXiv
2404.00836: the caps bound the search, they are not part of the paper's problem, so a report must say when
they decided a number)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgelearn.planning.feasibility import CheapestPoint
from edgelearn.planning.problem import TwoStageProblem
from edgelearn.planning.search import ft_round_limit, pre_round_limit


def binding_caps(
    pb: TwoStageProblem, plans: Mapping[str, Any], max_pre_rounds: int, max_ft_rounds: int
) -> list[dict[str, Any]]:
    """The caps that bind on ``plans`` (scheme -> Plan). Every scheme obeys the same caps, so no scheme
    beats another merely by a cap; this says when the caps shaped the numbers. Each entry names the key,
    the cap, the schemes at it and the rounds the budgets allow (with fading "at least": the per-round gains
    are drawn for ``max_ft_rounds`` rounds only)."""
    caps = []
    m_all = pre_round_limit(pb, pb.energy_j, pb.delay_s, None)
    n_all = ft_round_limit(pb, CheapestPoint(pb), pb.energy_j, pb.delay_s, None)
    n_more = n_all > max_ft_rounds or (pb.per_round and n_all >= max_ft_rounds)
    for key, cap, allowed, more, attr in (
        ("algorithm.max_pre_rounds", max_pre_rounds, m_all, m_all > max_pre_rounds, "M"),
        ("algorithm.max_ft_rounds", max_ft_rounds, n_all, n_more, "N"),
    ):
        at_cap = [name for name, plan in plans.items() if plan.feasible and getattr(plan, attr) >= cap]
        if more and at_cap:
            least = "at least " if pb.per_round and attr == "N" else ""
            caps.append(
                {
                    "key": key,
                    "cap": cap,
                    "budgets_allow": allowed,
                    "schemes": at_cap,
                    "message": f"{key}={cap} binds for {', '.join(at_cap)}: the budgets allow {least}"
                    f"{allowed:.4g} rounds; every scheme is held to the cap (raise it to plan more)",
                }
            )
    return caps
