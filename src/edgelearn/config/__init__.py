"""Typed config sections every run shares, and how a config is read.

* :mod:`~edgelearn.config.base`: :class:`Section` (unknown keys are errors, a boolean is never a number, a
  renamed key names its new place) and the shared numeric field types;
* :mod:`~edgelearn.config.sections`: data, partition, topology, channel, model, tier models, engine,
  evaluation, output; :mod:`~edgelearn.config.local`: the ``local:`` SGD section; :mod:`~edgelearn.config.
  faults`; :mod:`~edgelearn.config.hardware`;
* :mod:`~edgelearn.config.loading`: YAML, ``--set`` overrides and readable validation errors.

Each algorithm's own section lives beside it (``edgelearn/algorithms/<name>/config.py``), and the whole
run's :class:`~edgelearn.run_config.RunConfig`, with ``load_config`` and ``build_config``, is assembled
above the algorithms in :mod:`edgelearn.run_config`.
"""

from edgelearn.config.base import (
    FloatOrRange,
    NonNegInt,
    PositiveFloat,
    PositiveInt,
    Section,
)
from edgelearn.config.faults import EdgeFailureConfig, FaultsConfig
from edgelearn.config.hardware import (
    CloudHardwareConfig,
    EdgeHardwareConfig,
    HardwareConfig,
    HardwareTierConfig,
)
from edgelearn.config.loading import apply_overrides, parse_override, read_yaml
from edgelearn.config.local import MOVED_TO_LOCAL, LocalTrainConfig, PaperLocalConfig
from edgelearn.config.plan import PlanConfig
from edgelearn.config.sections import (
    ChannelConfig,
    DataConfig,
    EngineConfig,
    EvalConfig,
    ModelConfig,
    OutputConfig,
    PartitionConfig,
    TierModelsConfig,
    TopologyConfig,
)

__all__ = [
    "MOVED_TO_LOCAL",
    "ChannelConfig",
    "CloudHardwareConfig",
    "DataConfig",
    "EdgeFailureConfig",
    "EdgeHardwareConfig",
    "EngineConfig",
    "EvalConfig",
    "FaultsConfig",
    "FloatOrRange",
    "HardwareConfig",
    "HardwareTierConfig",
    "LocalTrainConfig",
    "ModelConfig",
    "NonNegInt",
    "OutputConfig",
    "PaperLocalConfig",
    "PlanConfig",
    "PartitionConfig",
    "PositiveFloat",
    "PositiveInt",
    "Section",
    "TierModelsConfig",
    "TopologyConfig",
    "apply_overrides",
    "parse_override",
    "read_yaml",
]
