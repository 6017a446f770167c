"""HierFAVG's settings (Liu et al., ICC 2020): local steps per edge round, edge rounds per cloud round."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edgelearn.config.base import PositiveInt, Section
from edgelearn.config.local import LocalTrainConfig


class HierFAVGConfig(Section):
    """HierFAVG (Liu et al. 2020): kappa1 local steps per edge round, kappa2 edge rounds per cloud round."""

    name: Literal["hierfavg"] = "hierfavg"
    rounds: PositiveInt = Field(30, description="cloud rounds")
    kappa1: PositiveInt = Field(10, description="local SGD steps between edge aggregations")
    kappa2: PositiveInt = Field(2, description="edge aggregations between cloud aggregations")
    local: LocalTrainConfig = LocalTrainConfig(epochs=None, steps=10)

    @model_validator(mode="after")
    def _steps_from_kappa1(self) -> HierFAVGConfig:
        if self.local.steps != self.kappa1:
            object.__setattr__(
                self, "local", self.local.model_copy(update={"steps": self.kappa1, "epochs": None})
            )
        return self
