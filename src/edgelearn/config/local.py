"""Local SGD on a device: the one ``local:`` section every SGD-trained algorithm reads.

``lr``, ``batch_size``, ``epochs`` or ``steps``, ``momentum`` and ``weight_decay`` mean the same under every
algorithm, so a key survives ``--set algorithm.name=...``. Algorithms whose papers fix other defaults
subclass :class:`LocalTrainConfig` and change only the defaults.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from edgelearn.config.base import PositiveFloat, PositiveInt, Section


class LocalTrainConfig(Section):
    """Local SGD on a device: either `epochs` passes or `steps` mini-batch steps."""

    lr: PositiveFloat = 0.05
    batch_size: PositiveInt = 16
    epochs: PositiveInt | None = 1
    steps: PositiveInt | None = None
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    weight_decay: Annotated[float, Field(ge=0)] = 0.0

    @model_validator(mode="after")
    def _epochs_or_steps(self) -> LocalTrainConfig:
        if self.steps is not None and self.epochs is not None:
            # `steps` given explicitly wins; epochs is then unused. Keeps `--set local.steps=5` simple.
            object.__setattr__(self, "epochs", None)
        if self.steps is None and self.epochs is None:
            raise ValueError("set either `epochs` or `steps`")
        return self


class PaperLocalConfig(LocalTrainConfig):
    """Local SGD at the FedAgg paper's shared settings (Wu et al., INFOCOM 2024, §VI: lr 1e-3, batch 8,
    momentum 0.9, one epoch), the defaults of FedAgg and of its distillation baselines."""

    lr: PositiveFloat = 0.001
    batch_size: PositiveInt = 8
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9


MOVED_TO_LOCAL: dict[str, str] = {
    "lr": "local.lr",
    "momentum": "local.momentum",
    "batch_size": "local.batch_size",
}
"""Keys every SGD-trained algorithm now reads from its ``local:`` section (one key, one meaning)."""
