"""FedAvg's settings (McMahan et al., AISTATS 2017)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from edgelearn.config.base import PositiveInt, Section
from edgelearn.config.local import LocalTrainConfig


class FedAvgConfig(Section):
    """FedAvg (McMahan et al. 2017): devices train locally, the cloud averages weighted by data size."""

    name: Literal["fedavg"] = "fedavg"
    rounds: PositiveInt = 30
    clients_per_round: PositiveInt | Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="None = all devices; an int = that many; a float in (0, 1] = that share"
    )
    local: LocalTrainConfig = LocalTrainConfig()
