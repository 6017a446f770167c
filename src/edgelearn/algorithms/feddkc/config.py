"""FedDKC's settings (Wu et al., 2022): FedGKT's plus knowledge refinement (KKR)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from edgelearn.algorithms.kit.split_config import SplitTransferConfig
from edgelearn.config.base import PositiveFloat


class FedDKCConfig(SplitTransferConfig):
    """FedDKC: FedGKT whose server distils KKR-refined client knowledge (defaults of FedAgg's runs: Wu et
    al., INFOCOM 2024, §VI)."""

    name: Literal["feddkc"] = "feddkc"
    peak: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.12, description="KKR: peak probability of every refined vector (FedAgg paper §VI: T = 0.12)"
    )
    logit_scale: PositiveFloat = Field(
        0.05, description="KKR: client logits are divided by this before softening (FedICT code: S = 0.05)"
    )
