"""DemLearn's settings (Nguyen et al., 2022: democratized learning), from the Dem-AI code's defaults."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from edgelearn.config.base import PositiveInt, Section
from edgelearn.config.local import MOVED_TO_LOCAL, PaperLocalConfig
from edgelearn.config.sections import TierModelsConfig


class DemLearnLocalConfig(PaperLocalConfig):
    """DemLearn's local SGD: the paper's lr and batch, the Dem-AI code's 2 local epochs and no momentum."""

    epochs: PositiveInt | None = 2
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0


class DemLearnConfig(Section):
    """DemLearn: hierarchical clustering of device models, generalization up, specialization down.

    Defaults from the official code's Setting.py (levels 3, alpha 0.7, 2 local epochs, plain SGD) and FedAgg's
    shared lr 1e-3 / batch 8 (Wu et al., INFOCOM 2024, §VI); see the module docstring of
    algorithms/demlearn/algorithm.py.
    """

    name: Literal["demlearn"] = "demlearn"
    renamed: ClassVar[Mapping[str, str]] = {**MOVED_TO_LOCAL, "local_epochs": "local.epochs"}
    rounds: PositiveInt = Field(30, description="rounds (local training, clustering, generalize, specialize)")
    models: TierModelsConfig = Field(
        TierModelsConfig(), description="only models.device is used (every group shares its architecture)"
    )
    levels: PositiveInt = Field(3, description="generalization levels below the root (Dem-AI K_Levels: 3)")
    alpha: Annotated[float, Field(ge=0, le=1)] = Field(
        0.7, description="specialization: own * (1 - alpha) + parent * alpha (Dem-AI alpha_factor)"
    )
    mu: Annotated[float, Field(ge=0)] = Field(
        0.0, description="proximal weight (DemLearn-P; anchored at the start of local training)"
    )
    local: DemLearnLocalConfig = Field(
        DemLearnLocalConfig(),
        description="local SGD: lr 1e-3, batch 8 (FedAgg paper §VI), 2 epochs (Dem-AI LOCAL_EPOCH), "
        "no momentum",
    )
    recluster_every: PositiveInt = Field(1, description="rounds between re-clusterings (Dem-AI: 1)")
    linkage: Literal["average", "complete", "single", "ward"] = Field(
        "average", description="agglomerative linkage (Dem-AI: average)"
    )
    metric: Literal["euclidean", "cosine"] = Field(
        "euclidean", description="distance between flattened models (Dem-AI: weight = euclidean)"
    )
    eval_devices: PositiveInt | None = Field(
        20, description="devices evaluated each round (a fixed seeded sample); None = all"
    )
    tier_eval_samples: PositiveInt | None = Field(
        2000, description="device models are tested on a fixed seeded subset of this many test samples"
    )

    @model_validator(mode="after")
    def _ward_is_euclidean(self) -> DemLearnConfig:
        if self.linkage == "ward" and self.metric != "euclidean":
            raise ValueError("linkage `ward` needs metric `euclidean`")
        return self
