"""The ``faults:`` section: device dropout, deadlines, lost uploads and edge outages (system/faults.py)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from edgelearn.config.base import NonNegInt, PositiveFloat, PositiveInt, Section


class EdgeFailureConfig(Section):
    """Edge server ``edge`` (node id or name) is down from ``start_round`` to ``end_round``, both included."""

    edge: NonNegInt | str
    start_round: PositiveInt
    end_round: PositiveInt

    @model_validator(mode="after")
    def _ordered(self) -> EdgeFailureConfig:
        if self.end_round < self.start_round:
            raise ValueError("`end_round` must be >= `start_round`")
        return self


class FaultsConfig(Section):
    """Device dropout, stragglers cut by a round deadline, lost uploads, edge outages (system/faults.py).

    All off by default. The trace format and the exact energy accounting are documented in system/faults.py.
    """

    dropout: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0, description="probability that a device is unavailable in a round (drawn per round and device)"
    )
    availability_trace: str | None = Field(
        None, description="CSV file with header round,node,available (0/1); unlisted devices are available"
    )
    deadline_s: PositiveFloat | None = Field(
        None, description="round deadline in seconds for a device's compute + upload (None = no deadline)"
    )
    deadline_factor: PositiveFloat | None = Field(
        None, description="deadline = this x the median device's predicted compute + upload time"
    )
    uplink_loss: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0, description="probability that a device's upload is lost (energy and delay spent, none arrives)"
    )
    edge_failures: list[EdgeFailureConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_deadline(self) -> FaultsConfig:
        if self.deadline_s is not None and self.deadline_factor is not None:
            raise ValueError("give at most one of `deadline_s` and `deadline_factor`")
        return self
