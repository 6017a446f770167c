"""The ``plan:`` section: a resource plan (per-node clocks, per-link transmit powers, FDMA bandwidth shares)
for any algorithm on the tree (``edgelearn/planning/tree``), chosen before the run and executed by it.

The inner plan is per round: the planner records one round of the algorithm (``profile_round``) and plans
that round's work; every round then runs at the planned operating point. Budgets are per round
(``round_energy_j``, ``round_delay_s``) or for the whole run (``total_energy_j``, ``total_delay_s``, split
evenly over the rounds: every round does the same work, and an even split is optimal for convex per-round
costs). With ``target_accuracy`` the planner also chooses the number of rounds, and with ``choices`` the
algorithm's settings (e.g. HierFAVG's kappa1 and kappa2): each candidate's pilot run measures its accuracy
round by round (a plan changes clocks, powers and bandwidth, never what is learned), the candidate needs the
first round that reaches the target, and the one with the best total objective within the total budgets
runs. A candidate whose pilot never reaches the target within ``pilot_rounds`` is infeasible: the planner
does not extrapolate. With ``associate`` the planner also moves devices to other edge servers: before the
run, or with ``associate_round`` mid-run through the algorithm's own re-parenting (FedAgg's migration, Wu et
al., INFOCOM 2024, Theorem 1; runner/midrun.py), the config tree's plan running until then. (Two-stage
learning plans its own rounds, batches, clocks and powers under ``algorithm.budget`` and takes no ``plan:``
section.)
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from edgelearn.config.base import NonNegInt, PositiveFloat, PositiveInt, Section

ASSOCIATION_BASELINES = ("nearest_edge", "allocation_only", "association_only")
"""``scheme`` values that are association baselines (planning/tree/association.py)."""


class PlanConfig(Section):
    """Plan clocks and transmit powers for the run (``edgelearn plan`` shows the plan without running)."""

    objective: Literal["delay", "energy", "weighted"] = Field(
        "delay",
        description="delay: shortest round within round_energy_j; energy: least energy within round_delay_s; "
        "weighted: energy + weight_j_per_s x delay (within whichever budgets are given)",
    )
    round_energy_j: PositiveFloat | None = Field(None, description="energy budget of one round (J)")
    round_delay_s: PositiveFloat | None = Field(None, description="delay budget of one round (s)")
    weight_j_per_s: PositiveFloat = Field(
        1.0, description="weighted objective: joules one second of delay is worth"
    )
    scheme: Literal[
        "planned", "uniform_bandwidth", "max_speed", "clocks_only", "powers_only",
        "nearest_edge", "allocation_only", "association_only",
    ] = Field(
        "planned",
        description="the operating point the run executes: the plan's, or a baseline's on the same budgets "
        "(experiments compare them; a baseline may exceed the budgets, summary.json says so); "
        "nearest_edge, allocation_only and association_only need associate (and run on their own tree)",
    )  # fmt: skip
    profile_round: PositiveInt = Field(
        1, description="the round recorded (in a pilot run of the same config and seed) and planned"
    )
    associate: bool = Field(
        False,
        description="also choose each device's edge server (HFEL moves from the nearest edge; needs "
        "channel.edge_distances: per_pair); devices move before the run starts",
    )
    associate_round: PositiveInt | None = Field(
        None,
        description="execute the association mid-run instead: the run starts on the config's tree at the "
        "plan for that tree and at the start of this round every moved device migrates to its planned edge "
        "(FedAgg's migration, Wu et al., INFOCOM 2024, Theorem 1; the round also pays the migration), then "
        "runs at the plan for the new tree; needs associate and an algorithm that re-parents mid-run "
        "(None = before the run starts)",
    )
    association_evaluations: PositiveInt = Field(
        20_000,
        description="most candidate associations the search prices with its per-edge surrogate (no convex "
        "solve; ~0.2 ms each at 1,000 devices); the few it keeps are re-planned exactly",
    )
    association_polish: NonNegInt | None = Field(
        None,
        description="most exact plans (each a full convex solve) the search's closing polish of moves and "
        "swaps may price from each start; 0 skips it, null scales it with the tree (64 on small trees, 10 "
        "at 100 devices, 1 at 1,000)",
    )
    total_energy_j: PositiveFloat | None = Field(
        None, description="energy budget of the whole run (J), split evenly over its rounds"
    )
    total_delay_s: PositiveFloat | None = Field(
        None, description="delay budget of the whole run (s), split evenly over its rounds"
    )
    target_accuracy: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None,
        description="choose the number of rounds: the first round whose test accuracy reaches this in a "
        "pilot run (None = algorithm.rounds)",
    )
    pilot_rounds: PositiveInt | None = Field(
        None, description="rounds of each pilot run that measures accuracy (None = algorithm.rounds)"
    )
    choices: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="config keys and the values to choose among (every combination is piloted), e.g. "
        "{algorithm.kappa1: [5, 10, 20], algorithm.kappa2: [1, 2]}; needs target_accuracy",
    )

    @model_validator(mode="after")
    def _budget_for_objective(self) -> PlanConfig:
        if self.round_energy_j is not None and self.total_energy_j is not None:
            raise ValueError("give at most one of `round_energy_j` and `total_energy_j`")
        if self.round_delay_s is not None and self.total_delay_s is not None:
            raise ValueError("give at most one of `round_delay_s` and `total_delay_s`")
        energy = self.round_energy_j is not None or self.total_energy_j is not None
        delay = self.round_delay_s is not None or self.total_delay_s is not None
        if self.objective == "delay" and not energy:
            raise ValueError(
                "objective `delay` needs an energy budget (`round_energy_j` or `total_energy_j`)"
            )
        if self.objective == "energy" and not delay:
            raise ValueError("objective `energy` needs `round_delay_s` or `total_delay_s`")
        if self.scheme in ASSOCIATION_BASELINES and not self.associate:
            raise ValueError(f"scheme `{self.scheme}` is an association baseline: it needs `associate: true`")
        if self.associate_round is not None and not self.associate:
            raise ValueError("`associate_round` needs `associate: true` (the association it executes)")
        if self.associate_round is not None and self.scheme in ASSOCIATION_BASELINES:
            raise ValueError(
                f"scheme `{self.scheme}` runs its own association from the start: drop `associate_round`"
            )
        if self.choices and self.target_accuracy is None:
            raise ValueError("`choices` needs `target_accuracy` (what the candidates are compared on)")
        if any(not v for v in self.choices.values()):
            raise ValueError("every entry of `choices` needs at least one value")
        return self

    @property
    def chooses_rounds(self) -> bool:
        """Whether the planner chooses the number of rounds (and perhaps settings) before the run."""
        return self.target_accuracy is not None
