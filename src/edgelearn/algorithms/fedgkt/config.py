"""FedGKT's settings (He et al., NeurIPS 2020), at the shared settings of FedAgg's baseline runs."""

from __future__ import annotations

from typing import Literal

from edgelearn.algorithms.kit.split_config import SplitTransferConfig


class FedGKTConfig(SplitTransferConfig):
    """FedGKT: client extractor + head on devices, a large server model on their features in the cloud
    (defaults: :mod:`edgelearn.algorithms.kit.split_config`)."""

    name: Literal["fedgkt"] = "fedgkt"
