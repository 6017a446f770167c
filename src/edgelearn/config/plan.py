"""The ``plan:`` section: a resource plan (per-node clocks, per-link transmit powers, FDMA bandwidth shares)
for any algorithm on the tree (``edgelearn/planning/tree``), chosen before the run and executed by it.

Budgets are per round: the planner records one round of the algorithm (``profile_round``) and plans that
round's work; every round then runs at the planned operating point. (Two-stage learning plans its own
rounds, batches, clocks and powers under ``algorithm.budget`` and takes no ``plan:`` section.)
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edgelearn.config.base import PositiveFloat, PositiveInt, Section


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
    profile_round: PositiveInt = Field(
        1, description="the round recorded (in a pilot run of the same config and seed) and planned"
    )

    @model_validator(mode="after")
    def _budget_for_objective(self) -> PlanConfig:
        if self.objective == "delay" and self.round_energy_j is None:
            raise ValueError("objective `delay` needs `round_energy_j` (the energy budget of a round)")
        if self.objective == "energy" and self.round_delay_s is None:
            raise ValueError("objective `energy` needs `round_delay_s` (the delay budget of a round)")
        return self
