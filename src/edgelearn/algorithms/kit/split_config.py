"""Settings of group knowledge transfer over split models (:mod:`edgelearn.algorithms.kit.split`), the base
of FedGKT's and FedDKC's config sections.

Defaults: beta 1.5 and the shared lr 1e-3 / batch 8 of FedAgg's baseline runs (Wu et al., INFOCOM 2024,
§VI); T 3 and one client and one server epoch per round (FedGKT/FedICT code defaults).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from edgelearn.config.base import PositiveFloat, PositiveInt, Section
from edgelearn.config.local import MOVED_TO_LOCAL, PaperLocalConfig
from edgelearn.config.sections import TierModelsConfig


class SplitTransferConfig(Section):
    """Client extractor + head on devices, a large server model on their features in the cloud (the fields
    FedGKT and FedDKC share; each subclass narrows ``name`` to its own)."""

    name: str = Field("split_transfer", description="the algorithm (a subclass fixes it)")
    renamed: ClassVar[Mapping[str, str]] = {**MOVED_TO_LOCAL, "client_epochs": "local.epochs"}
    rounds: PositiveInt = Field(30, description="rounds (client training, upload, server training, download)")
    models: TierModelsConfig = Field(
        TierModelsConfig(), description="device = client (split into extractor + head), cloud = server"
    )
    beta: Annotated[float, Field(ge=0)] = Field(1.5, description="KD weight (FedAgg paper §VI: 1.5)")
    T: PositiveFloat = Field(3.0, description="distillation temperature (FedGKT code: 3)")
    server_loss: Literal["paper", "fedml"] = Field(
        "paper", description="paper = CE + beta * KD (FedGKT Eq. 6); fedml = KD + beta * CE (FedML code)"
    )
    local: PaperLocalConfig = Field(
        PaperLocalConfig(),
        description="SGD of clients (epochs or steps) and server (lr, momentum, batch): FedAgg paper §VI's "
        "lr 1e-3 / batch 8, FedGKT code's momentum 0.9 and 1 local epoch",
    )
    server_epochs: PositiveInt = Field(1, description="server epochs over all features per round (code: 1)")
    teacher_batch_size: PositiveInt = Field(128, description="samples per no-grad inference pass")
    eval_devices: PositiveInt | None = Field(
        20, description="devices whose extractors feed the test set to the server (seeded); None = all"
    )
    tier_eval_samples: PositiveInt | None = Field(
        2000, description="device models are tested on a fixed seeded subset of this many test samples"
    )
