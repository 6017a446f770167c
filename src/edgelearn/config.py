"""Typed run configuration: YAML files validated by pydantic, with ``--set a.b=c`` overrides.

Every hyper-parameter of a run lives here with its default and the reason for it, so no algorithm or
layer below needs a magic number. Validation errors are turned into :class:`ConfigError` messages that name
the key path, what was wrong and the allowed values.
"""

from __future__ import annotations

import copy
import logging
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from edgelearn.config_base import (
    BOOL_NOT_NUMBER,
    SECTION_KEY_PROBLEM,
    FloatOrRange,
    NonNegInt,
    PositiveFloat,
    PositiveInt,
    Section,
    _members,
)
from edgelearn.config_hardware import CloudHardwareConfig as CloudHardwareConfig
from edgelearn.config_hardware import EdgeHardwareConfig as EdgeHardwareConfig
from edgelearn.config_hardware import HardwareConfig
from edgelearn.config_hardware import HardwareTierConfig as HardwareTierConfig
from edgelearn.errors import ConfigError
from edgelearn.extensions import registered
from edgelearn.yamlsafe import AliasExpansionError, DuplicateKeyError, dump_yaml, load_yaml

log = logging.getLogger(__name__)


class DataConfig(Section):
    """Which dataset to load and how."""

    dataset: str = Field(
        "digits",
        description="a registered dataset: digits, synthetic, mnist, fashion_mnist, cifar10, cifar100, or a "
        "plugin's (edgelearn list datasets)",
    )
    data_dir: str | None = Field(
        None, description="folder with the standard files (MNIST/Fashion IDX, CIFAR)"
    )
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.2, description="held-out share for datasets shipped without a test split (digits)"
    )
    num_train: PositiveInt = Field(10000, description="synthetic only: training samples")
    num_test: PositiveInt = Field(2000, description="synthetic only: test samples")
    num_classes: Annotated[int, Field(ge=2)] = Field(10, description="synthetic only")
    input_shape: tuple[PositiveInt, ...] = Field((1, 8, 8), description="synthetic only: per-sample shape")
    label_mode: Literal["fine", "coarse"] = Field("fine", description="cifar100 only")
    max_train: PositiveInt | None = Field(
        None,
        description="use a seeded, class-stratified subsample of this many training samples (the rest is "
        "kept aside, never a device's)",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="keyword options of a plugin dataset's loader"
    )
    holdout: NonNegInt | None = Field(
        None,
        description="training samples held out (seeded, class-stratified) before max_train and "
        "partitioning, for pre-training on data no device holds; None = as many as the algorithm asks "
        "for (FedAgg with autoencoder.source: holdout asks for autoencoder.max_samples, others none). Set "
        "it to give every algorithm the same device data",
    )


class PartitionConfig(Section):
    """How the training set is split over devices."""

    method: str = Field(
        "dirichlet", description="iid, dirichlet, shards, or a plugin's (edgelearn list partitioners)"
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="keyword options of a plugin partitioner"
    )
    alpha: PositiveFloat = Field(0.5, description="Dirichlet concentration: small = strong label skew")
    min_size: NonNegInt = Field(2, description="fewest samples any device may hold")
    shards_per_device: PositiveInt = 2


class TopologyConfig(Section):
    """The device / edge / cloud tree: a flat star, edges x devices, or an explicit nested tree."""

    devices: PositiveInt | None = Field(None, description="flat: this many devices directly under the cloud")
    edges: NonNegInt = 0
    devices_per_edge: PositiveInt | list[PositiveInt] | None = None
    cloud_devices: NonNegInt = Field(0, description="with edges: devices attached directly to the cloud")
    tree: dict[str, Any] | None = Field(None, description="explicit nested tree: {devices, children: [...]}")

    @model_validator(mode="after")
    def _one_form(self) -> TopologyConfig:
        forms = [self.tree is not None, self.edges > 0, self.devices is not None]
        if sum(forms) != 1:
            raise ValueError(
                "give exactly one of: `devices` (flat), `edges` with `devices_per_edge`, or `tree`"
            )
        if self.edges > 0 and self.devices_per_edge is None:
            raise ValueError("`edges` needs `devices_per_edge` (an int, or a list with one int per edge)")
        if isinstance(self.devices_per_edge, list) and len(self.devices_per_edge) != self.edges:
            raise ValueError(
                f"`devices_per_edge` lists {len(self.devices_per_edge)} counts but `edges` is {self.edges}"
            )
        return self


class ChannelConfig(Section):
    """Wireless device links (path loss, fading, Shannon rate) and wired server backhaul."""

    bandwidth_hz: PositiveFloat = Field(1e6, description="per server, split equally over its devices")
    noise_psd_dbm_per_hz: float = -174.0
    path_loss_a_db: float = 128.1
    path_loss_b_db: float = 37.6
    distance_m: FloatOrRange = (50.0, 250.0)
    device_to_cloud_distance_m: FloatOrRange = (200.0, 500.0)
    fading: Literal["none", "rayleigh"] = "none"
    backhaul_rate_bps: PositiveFloat = Field(1e8, description="wired edge -> cloud links")
    include_downlink: bool = Field(True, description="charge the model broadcast to devices")


class ModelConfig(Section):
    """Architecture from the registry plus its keyword options (e.g. hidden: [128] for mlp)."""

    name: str = "mlp"
    options: dict[str, Any] = Field(default_factory=dict)


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


class DemLearnLocalConfig(PaperLocalConfig):
    """DemLearn's local SGD: the paper's lr and batch, the Dem-AI code's 2 local epochs and no momentum."""

    epochs: PositiveInt | None = 2
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0


class PlannedLocalConfig(Section):
    """Fine-tuning SGD whose batch sizes and step counts the two-stage plan chooses: only the step size is
    set here (Lyu et al., arXiv 2404.00836, §8.3: 0.05); the planner's bound assumes plain SGD."""

    lr: PositiveFloat = Field(0.05, description="fine-tuning step size eta (spec §8.3)")


_MOVED_TO_LOCAL: dict[str, str] = {
    "lr": "local.lr",
    "momentum": "local.momentum",
    "batch_size": "local.batch_size",
}
"""Keys every SGD-trained algorithm now reads from its ``local:`` section (one key, one meaning)."""


class FedAvgConfig(Section):
    """FedAvg (McMahan et al. 2017): devices train locally, the cloud averages weighted by data size."""

    name: Literal["fedavg"] = "fedavg"
    rounds: PositiveInt = 30
    clients_per_round: PositiveInt | Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="None = all devices; an int = that many; a float in (0, 1] = that share"
    )
    local: LocalTrainConfig = LocalTrainConfig()


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


class ShiftConfig(Section):
    """How the server's general data and the devices' task data differ (data/shift.py)."""

    kind: Literal["label", "rotation", "noise"] = "rotation"
    level: float = Field(0.3, ge=0, le=1, description="0 = same distribution, 1 = strongest shift")
    general_fraction: float = Field(0.5, gt=0, lt=1, description="share of the train split on the server")
    w1_samples: PositiveInt = Field(500, description="subsample size of the exact Wasserstein-1 estimate")


BUDGET_MAX = 1e30
"""Largest energy (J) or delay (s) budget accepted: far beyond any device, and below where the planner's
float arithmetic (e.g. E T^2 in the round limits) would overflow. Huge budgets up to here give a valid plan
held to ``max_pre_rounds`` / ``max_ft_rounds`` (reported when they bind)."""


class BudgetConfig(Section):
    """Total budgets over both stages (paper_two_stage.md §5)."""

    energy_j: Annotated[float, Field(gt=0, le=BUDGET_MAX)] = 20.0
    delay_s: Annotated[float, Field(gt=0, le=BUDGET_MAX)] = 60.0


class CalibrationConfig(Section):
    """The pilot that calibrates bound form P (planning/predictor.py, planning/calibrate.py)."""

    metric: Literal["error", "loss"] = Field("error", description="what form P predicts: task error or loss")
    batch_pre: PositiveInt = Field(
        256, description="pre-training batch of the pilot (it pre-trains as long as half this batch allows)"
    )
    batch_ft: PositiveInt = Field(
        20, description="total fine-tuning batch per pilot step (summed over devices)"
    )
    pre_points: int = Field(
        7, ge=2, description="pre-training checkpoints: this many log-spaced and this many evenly spaced"
    )
    ft_points: int = Field(
        12, ge=2, description="fine-tuning evaluations per checkpoint: this many log- and evenly spaced"
    )
    probe_samples: PositiveInt = Field(1024, description="task samples held out of the pilot to measure on")
    sensitivity_steps: PositiveInt = Field(60, description="steps of each batch-sensitivity run")
    repeats: PositiveInt = Field(3, description="pilot fine-tuning and sensitivity runs averaged per point")
    refine_rounds: NonNegInt = Field(
        3,
        description="times the pre-training batch sensitivity is re-measured at the joint plan's batch when "
        "that is below half the pilot's (planning/calibrate.py); 0 = keep the first chord",
    )
    max_pre_steps: PositiveInt = Field(
        5000, description="the pilot pre-trains at most this long; beyond it form P assumes no progress"
    )
    max_ft_steps: PositiveInt = Field(
        1000, description="the pilot fine-tunes at most this long; beyond it form P assumes no progress"
    )


class TwoStageConfig(Section):
    """Two-stage edge learning: plan rounds, batches, clocks and powers, then execute the plan."""

    name: Literal["two_stage"] = "two_stage"
    renamed: ClassVar[Mapping[str, str]] = {"eta_ft": "local.lr"}
    scheme: Literal[
        "optimized", "finetune_only", "pretrain_only", "fixed_ratio", "no_optimization", "separate"
    ] = Field("optimized", description="the joint design or one of the baseline schemes (spec §8.5)")
    shift: ShiftConfig = ShiftConfig()
    budget: BudgetConfig = BudgetConfig()
    eta_pre: PositiveFloat = Field(0.05, description="pre-training step size (spec §8.3)")
    local: PlannedLocalConfig = Field(
        PlannedLocalConfig(),
        description="devices' fine-tuning SGD (its batches and steps come from the plan)",
    )
    bound: Literal["A", "B", "C", "D", "E", "P"] = Field(
        "A",
        description="bound form: A (spec §4.2), B, C (§4 alternatives), D (warm start), E (last iterate), "
        "P (not a bound: the task error predicted from a pilot run, `calibration`)",
    )
    calibration: CalibrationConfig = CalibrationConfig()
    method: Literal["convex", "sca"] = Field(
        "convex", description="inner solver: exact convex (6.3) or SCA (6.2)"
    )
    max_batch_pre: PositiveInt = Field(5000, description="cap on the pre-training batch (spec §8.3)")
    max_batch_ft: PositiveInt = Field(1000, description="cap on a device's batch (spec §8.3; also |D_k|)")
    max_ft_rounds: PositiveInt = Field(
        500,
        description="most fine-tuning rounds any scheme may plan (keep small with fading: one program per N, "
        "and the per-round gains are drawn for this many rounds); `plan` and summary.json report it under "
        "round_caps when the budgets would allow more",
    )
    max_pre_rounds: PositiveInt = Field(
        1_000_000,
        description="most pre-training steps any scheme may plan; reported under round_caps when it binds",
    )
    constants_seed: NonNegInt = Field(0, description="seed of the bound-constant estimators")
    pilot_steps: NonNegInt = Field(
        300,
        description="SGD steps of a pilot pre-training on general data whose checkpoints join the estimate "
        "of delta and L (spec §8.4: max over checkpoints; at an untrained model the shift barely shows in "
        "the gradients); 0 = estimate at the initial model only. Planning-time work, not charged to budgets",
    )
    pilot_batch: PositiveInt = Field(64, description="batch of the pilot pre-training")
    pilot_checkpoints: PositiveInt = Field(3, description="evenly spaced pilot states added to the estimate")
    constants_cache: str | None = Field(
        None,
        description="folder caching estimated constants by a hash of everything they depend on (sweeps "
        "over budgets and schemes then estimate once); None = no cache",
    )
    joint_min_ft_rounds: Literal[0, 1] = Field(
        0,
        description="least N the joint design considers: 0 lets it pick pure pre-training when the bound "
        "prefers it (so it is never worse in bound than a baseline); 1 = spec §6.1's loop from N = 1",
    )
    pretrain_log_points: PositiveInt = Field(
        20, description="pre-training steps are run and logged in at most this many chunks (runner rounds)"
    )
    retransmissions: NonNegInt = Field(
        0,
        description="under faults.uplink_loss: times a device re-sends a lost gradient in the same round "
        "(each try costs energy and time beyond the plan); 0 = a lost gradient is simply missing",
    )
    grad_norm_samples: NonNegInt = Field(
        512, description="task samples for the measured squared gradient norm per evaluation (0 = off)"
    )


class TierModelsConfig(Section):
    """Model of each tier; a tier left empty gets the dataset-sized default (algorithms/fedagg.py)."""

    device: ModelConfig | None = None
    edge: ModelConfig | None = None
    cloud: ModelConfig | None = None


class DeviceMixConfig(Section):
    """A share of devices on another architecture (the paper's Table VII: 20% of devices on ResNet-10)."""

    share: Annotated[float, Field(ge=0, le=1)] = Field(0.2, description="share of devices switched")
    model: ModelConfig = ModelConfig(name="resnet8")


class AutoencoderConfig(Section):
    """Where the frozen bridge autoencoder comes from: a checksummed file, or pre-training at init."""

    path: str | None = Field(
        None, description="file written by save_autoencoder (verified by its .sha256); None = pre-train"
    )
    source: Literal["holdout", "unassigned_train", "test"] = Field(
        "holdout",
        description="data to pre-train on, never a device's and never evaluation data: 'holdout' = the "
        "run's training hold-out (data.holdout, sized autoencoder.max_samples by default), "
        "'unassigned_train' = training samples no device holds (e.g. those data.max_train leaves out); "
        "'test' is refused",
    )
    # Sized so pre-training at init stays short on a CPU: 2000 images x 20 epochs is under a quarter of the
    # steps of 5000 x 30, and on Fashion-MNIST 2000 x 10 at lr 3e-3 already reconstructs held-out training
    # images with MSE 0.015 vs 0.012 for 5000 x 30 at 1e-3 ([0, 1]-scaled pixels, measured). Pre-train once
    # with more (edgelearn pretrain-autoencoder) and set `path` for long experiments.
    max_samples: PositiveInt = Field(2000, description="most held-out images used for pre-training")
    epochs: PositiveInt = Field(20, description="pre-training epochs (MSE reconstruction, Adam)")
    lr: PositiveFloat = Field(3e-3, description="Adam learning rate of the pre-training")
    batch_size: Annotated[int, Field(ge=2)] = Field(64, description="pre-training mini-batch")
    embed_channels: PositiveInt = Field(4, description="embedding channels (official demo: 4)")

    @field_validator("source")
    @classmethod
    def _not_test(cls, value: str) -> str:
        if value == "test":
            raise ValueError(
                "pre-training the bridge autoencoder on the test split is refused: every bridge sample "
                "would be shaped by the evaluation data the cloud is then scored on. Use source: holdout "
                "(a class-stratified slice of the training split removed before partitioning; size "
                "autoencoder.max_samples or data.holdout) or source: unassigned_train (e.g. the images "
                "data.max_train leaves out)"
            )
        return value


class MigrationConfig(Section):
    """Re-parent ``node`` under ``new_parent`` at the start of round ``round`` (Theorem 1); ids or names."""

    round: PositiveInt
    node: NonNegInt | str
    new_parent: NonNegInt | str


class FedAggConfig(Section):
    """FedAgg with BSBODP; defaults are the paper's (beta 10, gamma 1, T 3, lr 1e-3, batch 8, §6)."""

    name: Literal["fedagg"] = "fedagg"
    renamed: ClassVar[Mapping[str, str]] = _MOVED_TO_LOCAL
    rounds: PositiveInt = Field(30, description="rounds (one FEDAGG_TRAIN(root) each)")
    models: TierModelsConfig = TierModelsConfig()
    device_mix: DeviceMixConfig | None = None
    beta: Annotated[float, Field(ge=0)] = Field(10.0, description="KD weight at non-leaf students (Eq. 2)")
    beta_leaf: Annotated[float, Field(ge=0)] = Field(
        1.0, description="KD weight inside the leaf loss (official code: 1; paper Eq. 4 reads beta)"
    )
    gamma: Annotated[float, Field(ge=0)] = Field(1.0, description="weight of the bridge terms at leaves")
    T: PositiveFloat = Field(3.0, description="distillation temperature")
    local: PaperLocalConfig = Field(
        PaperLocalConfig(), description="every student's SGD on its bridge samples (paper: lr 1e-3, batch 8)"
    )
    schedule: Literal["parallel", "sequential"] = "parallel"
    demo_compat: bool = Field(
        False, description="teachers in train mode over student-sized batches, as the official demo"
    )
    bridge_scale: Literal["data", "unit"] = Field(
        "data", description="data = decoder output mapped to the data's range; unit = raw [0,1] (demo)"
    )
    teacher_batch_size: PositiveInt = Field(
        128,
        description="samples per no-grad teacher forward pass; 128 was fastest per sample on a 1-thread CPU "
        "(ResNets on 8x8 and 28x28 images: 1024 was up to 3x slower at 28x28)",
    )
    eval_devices: PositiveInt | None = Field(
        20, description="devices evaluated each round (a fixed seeded sample); None = all"
    )
    tier_eval_samples: PositiveInt | None = Field(
        2000,
        description="edge and device models are tested on a fixed seeded subset of this many test "
        "samples (None = all); the cloud model always on the full test set",
    )
    autoencoder: AutoencoderConfig = AutoencoderConfig()
    migrations: list[MigrationConfig] = Field(default_factory=list)


class FedGKTConfig(Section):
    """FedGKT: client extractor + head on devices, a large server model on their features in the cloud.

    Defaults: beta 1.5 and the shared lr 1e-3 / batch 8 of FedAgg's baseline runs (paper_fedagg.md §12.1);
    T 3 and one client and one server epoch per round (FedGKT/FedICT code defaults).
    """

    name: Literal["fedgkt"] = "fedgkt"
    renamed: ClassVar[Mapping[str, str]] = {**_MOVED_TO_LOCAL, "client_epochs": "local.epochs"}
    rounds: PositiveInt = Field(30, description="rounds (client training, upload, server training, download)")
    models: TierModelsConfig = Field(
        TierModelsConfig(), description="device = client (split into extractor + head), cloud = server"
    )
    beta: Annotated[float, Field(ge=0)] = Field(1.5, description="KD weight (FedAgg §12.1: 1.5)")
    T: PositiveFloat = Field(3.0, description="distillation temperature (FedGKT code: 3)")
    server_loss: Literal["paper", "fedml"] = Field(
        "paper", description="paper = CE + beta * KD (FedGKT Eq. 6); fedml = KD + beta * CE (FedML code)"
    )
    local: PaperLocalConfig = Field(
        PaperLocalConfig(),
        description="SGD of clients (epochs or steps) and server (lr, momentum, batch): FedAgg §12.1's lr "
        "1e-3 / batch 8, FedGKT code's momentum 0.9 and 1 local epoch",
    )
    server_epochs: PositiveInt = Field(1, description="server epochs over all features per round (code: 1)")
    teacher_batch_size: PositiveInt = Field(128, description="samples per no-grad inference pass")
    eval_devices: PositiveInt | None = Field(
        20, description="devices whose extractors feed the test set to the server (seeded); None = all"
    )
    tier_eval_samples: PositiveInt | None = Field(
        2000, description="device models are tested on a fixed seeded subset of this many test samples"
    )


class FedDKCConfig(FedGKTConfig):
    """FedDKC: FedGKT whose server distils KKR-refined client knowledge (FedAgg §12.1 defaults)."""

    name: Literal["feddkc"] = "feddkc"  # type: ignore[assignment]
    peak: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.12, description="KKR: peak probability of every refined vector (FedAgg §12.1: T = 0.12)"
    )
    logit_scale: PositiveFloat = Field(
        0.05, description="KKR: client logits are divided by this before softening (FedICT code: S = 0.05)"
    )


class DemLearnConfig(Section):
    """DemLearn: hierarchical clustering of device models, generalization up, specialization down.

    Defaults from the official code's Setting.py (levels 3, alpha 0.7, 2 local epochs, plain SGD) and FedAgg's
    shared lr 1e-3 / batch 8 (paper_fedagg.md §12.1); see the module docstring of algorithms/demlearn.py.
    """

    name: Literal["demlearn"] = "demlearn"
    renamed: ClassVar[Mapping[str, str]] = {**_MOVED_TO_LOCAL, "local_epochs": "local.epochs"}
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
        description="local SGD: lr 1e-3, batch 8 (FedAgg §12.1), 2 epochs (Dem-AI LOCAL_EPOCH), no momentum",
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


AlgorithmConfig = Annotated[
    FedAvgConfig
    | HierFAVGConfig
    | TwoStageConfig
    | FedAggConfig
    | FedGKTConfig
    | FedDKCConfig
    | DemLearnConfig,
    Field(discriminator="name"),
]


class EngineConfig(Section):
    """Executor tuning: vectorization chunking and the Ray cluster."""

    auto: Literal["rule", "probe"] = Field(
        "rule", description="executor=auto: a deterministic rule (reproducible bits) or a timing probe"
    )
    vmap_chunk: PositiveInt | None = Field(
        None, description="vmap: most clients trained in lockstep at once (None = a size chosen from memory)"
    )
    ray_address: str | None = Field(
        None,
        description="ray: cluster to join: host:port of the head (`ray start --head`), or auto = the one "
        "`ray start` last started on this machine; None = start a local one",
    )
    ray_workers: PositiveInt | None = Field(
        None, description="ray: number of worker actors (None = one per CPU)"
    )
    ray_chunk: PositiveInt | None = Field(
        None, description="ray: clients per task (None = spread evenly over workers)"
    )
    ray_inner: Literal["serial", "vmap"] = Field("serial", description="ray: executor each worker runs")
    ray_resources: dict[str, Annotated[float, Field(strict=True, gt=0)]] = Field(
        default_factory=dict,
        description="ray: custom resources each worker actor requests besides its CPU share, e.g. "
        "{edgelearn: 1} places workers only on nodes started with "
        "`ray start --resources='{\"edgelearn\": N}'` (at most N workers each); {} = any node",
    )
    torch_threads: Annotated[int, Field(strict=True, gt=0)] | Literal["auto"] | None = Field(
        "auto",
        description="torch intra-op threads in this process: auto = from the largest training step's FLOPs "
        "(auto_threads_step_flops; small models get one thread), capped by the usable cores "
        "(engine/threads.py); an integer = exactly that many; null = torch's default (one per core)",
    )
    # Measured on a 2-core EPYC (AVX-512), two threads vs one per training step (engine/threads.py): idle,
    # 1.0x at 6.5 MFLOP, 1.3x at 65 MFLOP (FedAvg's MLP, 100 clients in lockstep), 1.4-1.5x at 0.26-0.65
    # GFLOP, 1.6x at 3.9 GFLOP (ResNet-14x2 on 28x28, batch 8), 1.8x at 31 GFLOP; with one core busy
    # elsewhere, 0.1-0.7x (up to 8x slower) at every step up to 0.65 GFLOP. Below ~1 GFLOP a second thread
    # gains at most 1.5x and can lose 8x, so each thread must have 1 GFLOP of the step.
    auto_threads_step_flops: PositiveFloat = Field(
        1e9,
        description="torch_threads=auto: FLOPs of one training step (batch x clients in lockstep x FLOPs per "
        "sample) each intra-op thread needs; threads = step FLOPs // this, at least 1, at most the cores",
    )
    precision: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="dtype of forward passes (training, evaluation, teachers' logits) under torch.autocast; "
        "parameters, optimizer state, aggregation and exchanged logits stay float32. bfloat16 is faster on "
        "GPUs and on CPUs with AVX512-BF16 or AMX, at a small cost in accuracy (docs/reproduction.md)",
    )


class EvalConfig(Section):
    """Test-set evaluation of the delivered model."""

    every: PositiveInt = Field(1, description="evaluate every this many rounds (and always the last)")
    batch_size: PositiveInt | None = Field(
        None, description="samples per no-grad pass; None = 128 on a CPU (cache-friendly), 2048 on CUDA"
    )
    targets: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        [],
        description="test accuracies whose first round summary.json reports as rounds_to_target "
        '({"70%": round or null}; evaluated rounds only, counted from 1)',
    )


class OutputConfig(Section):
    """Where and what a run writes."""

    dir: str | None = Field(None, description="run directory; default runs/<name>-<seed>")
    plots: bool = True
    progress: bool | None = Field(None, description="None = show a progress bar only on a terminal")
    checkpoint_every: NonNegInt = Field(
        10, description="checkpoint every this many rounds (0 = only at the end)"
    )
    checkpoint_keep: PositiveInt = Field(2, description="newest checkpoints kept (older ones are deleted)")


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


class RunConfig(Section):
    """A whole experiment."""

    name: str = "run"
    seed: NonNegInt = 0
    plugins: list[str] = Field(
        default_factory=list,
        description="modules or .py files (relative to the config file) registering algorithms, models, "
        "datasets, partitioners or hardware profiles; imported before the rest is validated",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="torch device; auto = cuda if available"
    )
    executor: Literal["auto", "serial", "vmap", "ray"] = "auto"
    engine: EngineConfig = EngineConfig()
    data: DataConfig = DataConfig()
    partition: PartitionConfig = PartitionConfig()
    topology: TopologyConfig = TopologyConfig(devices=100)
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    channel: ChannelConfig = ChannelConfig()
    model: ModelConfig = ModelConfig()
    algorithm: AlgorithmConfig = FedAvgConfig()
    eval: EvalConfig = EvalConfig()
    output: OutputConfig = OutputConfig()
    faults: FaultsConfig = FaultsConfig()


# --------------------------------------------------------------------------------------------------
# Loading, overrides and readable errors


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a key path and a YAML-parsed value (so numbers, lists, bools work)."""
    if "=" not in item:
        raise ConfigError(
            f"config override {item!r} has no '='", hint="write overrides as --set key.path=value"
        )
    key, _, raw = item.partition("=")
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(
            f"config override {item!r} has an empty key", hint="write overrides as --set key.path=value"
        )
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"config override {item!r}: the value of `{key.strip()}` is not valid YAML ({exc})"
        ) from None
    return path, value


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with every ``key.path=value`` override set (intermediate maps created)."""
    out = copy.deepcopy(dict(data))
    for item in overrides:
        path, value = parse_override(item)
        node: dict[str, Any] = out
        for i, key in enumerate(path[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: i + 1])
                raise ConfigError(f"override {item!r}: `{where}` is a value, not a section")
            node = child
        node[path[-1]] = value
    return out


def _fields_at(loc: Sequence[Any]) -> tuple[str, list[str] | None]:
    """Readable dotted path for a pydantic error location, and the allowed keys of its parent section."""
    model: Any = RunConfig
    parts: list[str] = []
    allowed: list[str] | None = sorted(RunConfig.model_fields)
    leaf = False
    for item in loc:
        if leaf and isinstance(item, str):
            continue  # pydantic names the member of a scalar union (e.g. 'constrained-float'): not a key
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
            continue
        fields = getattr(model, "model_fields", None)
        if fields is None or item not in fields:
            # a discriminated-union tag (e.g. 'fedavg') or a key of a free-form dict
            if fields is None or model is None:
                parts.append(str(item))
            elif _union_member(model, item) is not None:
                model = _union_member(model, item)
                allowed = sorted(model.model_fields)
                continue
            else:
                parts.append(str(item))
                allowed = sorted(fields)
                model = None
            continue
        parts.append(item)
        allowed = sorted(fields)
        model = _section_type(fields[item].annotation)
        leaf = model is None and not _is_mapping(fields[item].annotation)
    return ".".join(parts) or "<top level>", allowed


def _section_type(annotation: Any) -> Any:
    """The Section class behind a field annotation (unwrapping Optional/Annotated), or a union marker."""
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    members = [
        m for m in getattr(annotation, "__args__", ()) if isinstance(m, type) and issubclass(m, Section)
    ]
    if len(members) == 1:
        return members[0]
    if members:
        return _Union(members)
    inner = getattr(annotation, "__origin__", None)
    if inner is Annotated:  # pragma: no cover - pydantic strips Annotated from field annotations
        return _section_type(annotation.__args__[0])
    return None


def _is_mapping(annotation: Any) -> bool:
    """True for dict-typed fields, whose keys appear in error locations as real keys."""
    text = str(annotation)
    return text.startswith("dict") or "dict[" in text


class _Union:
    """Marker for a discriminated union of sections (the algorithm)."""

    def __init__(self, members: list[type[Section]]) -> None:
        self.members = members
        self.model_fields: dict[str, Any] = {}


def _union_member(model: Any, tag: str) -> type[Section] | None:
    if isinstance(model, _Union):
        for member in model.members:
            field = member.model_fields.get("name")
            if field is not None and field.default == tag:
                return member
    return None


def _algorithm_fields(name: str) -> set[str] | None:
    """Field names of the algorithm config class registered as ``name`` (None if no such algorithm)."""
    members = _section_type(RunConfig.model_fields["algorithm"].annotation).members
    for member in members:
        if member.model_fields["name"].default == name:
            return set(member.model_fields)
    return None


def algorithm_config(name: str) -> type[Section]:
    """The config class of algorithm ``name`` (ConfigError naming the known ones otherwise)."""
    for member in _section_type(RunConfig.model_fields["algorithm"].annotation).members:
        if member.model_fields["name"].default == name:
            return member  # type: ignore[no-any-return]
    raise ConfigError(f"no algorithm {name!r}", hint=f"use one of: {', '.join(algorithm_names())}")


def register_algorithm_config(name: str, config: type[Section], *, replace: bool = False) -> None:
    """Add ``config`` to the classes ``algorithm:`` validates against (what :func:`edgelearn.plugins.
    register_algorithm` calls). It must be a :class:`Section` whose ``name`` field is ``Literal[name]``
    with default ``name``. The RunConfig schema is rebuilt in place, so existing references stay valid."""
    if not (isinstance(config, type) and issubclass(config, Section)):
        raise ConfigError(
            f"algorithm {name!r}: its config must be a subclass of edgelearn.config.Section, got {config!r}",
            hint="class MyConfig(Section): name: Literal['my_algo'] = 'my_algo'; ...",
        )
    field = config.model_fields.get("name")
    if field is None or field.default != name or typing.get_args(field.annotation) != (name,):
        raise ConfigError(
            f"algorithm {name!r}: declare {config.__name__}.name as `name: Literal[{name!r}] = {name!r}`",
            hint="the name field is how a config file picks the algorithm",
        )
    current = _section_type(RunConfig.model_fields["algorithm"].annotation).members
    members = [m for m in current if m.model_fields["name"].default != name]
    if len(members) < len(current) and not replace:
        raise ConfigError(
            f"algorithm {name!r} already has a config class",
            hint="pick another name, or pass replace=True to replace it on purpose",
        )
    union = Annotated[typing.Union[tuple([*members, config])], Field(discriminator="name")]  # noqa: UP007
    old = RunConfig.model_fields["algorithm"]
    RunConfig.model_fields["algorithm"] = FieldInfo.from_annotated_attribute(union, old.default)
    RunConfig.model_rebuild(force=True)


def algorithm_names() -> list[str]:
    """Names accepted by ``algorithm.name``."""
    return [
        m.model_fields["name"].default
        for m in _section_type(RunConfig.model_fields["algorithm"].annotation).members
    ]


def format_validation_error(exc: ValidationError, source: str) -> ConfigError:
    """Turn a pydantic ValidationError into one ConfigError listing each bad key path and how to fix it."""
    lines: list[str] = []
    seen: set[str] = set()
    for err in exc.errors():
        loc = err["loc"]
        bad_key = bool(loc) and loc[-1] == "[key]"  # pydantic's marker: the key itself is invalid
        path, allowed = _fields_at(loc[:-1] if bad_key else loc)
        if bad_key:
            err = {**err, "msg": f"a key here is invalid: {err['msg']}"}
        if err["type"] in (BOOL_NOT_NUMBER, SECTION_KEY_PROBLEM):  # raised for its section: key in context
            key = str(err.get("ctx", {}).get("key"))
            given = err.get("input")
            got = given.get(key) if isinstance(given, Mapping) else None
            if err["type"] == SECTION_KEY_PROBLEM and not (isinstance(given, Mapping) and key in given):
                got = {}  # a key that was not given (a missing one): no "(got ...)" in the message
            err = {**err, "input": got}
            path = key if path == "<top level>" else f"{path}.{key}"
        if path in seen:
            continue  # one message per key: a scalar union reports each member's complaint
        seen.add(path)
        kind = err["type"]
        new = err.get("ctx", {}).get("new") if kind == SECTION_KEY_PROBLEM else None
        if new is not None:  # a renamed key (Section.renamed): name where it lives now
            parent = path.rpartition(".")[0]
            moved = f"{parent}.{new}" if parent else str(new)
            msg = f"`{path}` has moved: write `{moved}` (e.g. --set {moved}={err['input']!r})"
        elif kind == "extra_forbidden":
            msg = f"`{path}` is not a known key"
            if allowed:
                msg += f"; allowed here: {', '.join(allowed)}"
        elif kind == "union_tag_invalid":
            msg = f"`{path}.name` is {err['input'].get('name')!r}; allowed: {', '.join(algorithm_names())}"
        elif kind == "union_tag_not_found":
            msg = f"`{path}` needs a `name`; allowed: {', '.join(algorithm_names())}"
        else:
            shown = err.get("input")
            got = "" if isinstance(shown, dict) else f" (got {shown!r})"
            msg = f"`{path}`: {err['msg']}{got}"
        lines.append(msg)
    return config_problems(lines, source)


def config_problems(lines: Sequence[str], source: str) -> ConfigError:
    """One ConfigError listing each problem (a line naming its key) of the config from ``source``."""
    return ConfigError(
        f"invalid configuration in {source}:\n  - " + "\n  - ".join(lines),
        hint="correct the keys above in the YAML file or the --set overrides",
    )


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with the strict safe loader (edgelearn/yamlsafe.py: no duplicate keys, no alias
    bombs); a missing file, a non-mapping or a refused construct is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"config file {p} does not exist",
            hint="pass the path of a YAML file, e.g. configs/fedavg-digits.yaml",
        )
    try:
        data = load_yaml(p.read_text(encoding="utf-8"))
    except DuplicateKeyError as exc:
        raise ConfigError(
            f"config file {p}: key `{exc.key}` is given twice (line {exc.first_line} and line {exc.line})",
            hint="keep one of the two lines; YAML would silently use the last one",
        ) from None
    except AliasExpansionError as exc:
        raise ConfigError(f"config file {p}: {exc.problem}") from None
    except RecursionError:
        raise ConfigError(
            f"config file {p} is nested too deeply to read", hint="a config needs a few levels of sections"
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of sections, found {type(data).__name__}")
    return data


def _switch_algorithm(
    original: Any, algo: dict[str, Any], overrides: Sequence[str], source: str
) -> dict[str, Any]:
    """The algorithm section after ``--set algorithm.name=X`` switched algorithms on a shared config.

    Keys from the file that algorithm X does not know are dropped (and logged) only when another algorithm
    knows them, nested keys included: a key no algorithm knows stays and fails validation (a typo), and so
    does a key given explicitly by ``--set algorithm.KEY=...`` (the user asked for it), so nothing the user
    wrote is silently ignored. Without a switch (no such override, or the same name as the file's) the
    section is returned unchanged.
    """
    parsed = [parse_override(o) for o in overrides]
    if not any(path == ["algorithm", "name"] for path, _ in parsed):
        return algo
    name = str(algo.get("name"))
    known = _algorithm_fields(name)
    was = original.get("name", "fedavg") if isinstance(original, Mapping) else "fedavg"
    if known is None or str(was) == name:
        return algo
    explicit: set[Any] = set()
    for path, value in parsed:
        if path[0] == "algorithm" and len(path) > 1:
            explicit.add(path[1])
        elif path == ["algorithm"] and isinstance(value, dict):
            explicit.update(value)
    members = _section_type(RunConfig.model_fields["algorithm"].annotation).members
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for key, value in algo.items():
        owners = [m for m in members if key in m.model_fields] if isinstance(key, str) else []
        if key in known or key in explicit or not owners:
            kept[key] = value  # known: used; explicit or nobody's: validation names it with the allowed keys
            continue
        typos = _unknown_everywhere(owners, key, value, f"algorithm.{key}")
        if typos:
            unknown += typos
        else:
            dropped.append(key)
    if unknown:
        raise config_problems(unknown, source)
    if dropped:
        log.info("algorithm switched to %s: ignoring keys only other algorithms use: %s", name, dropped)
    return kept


def _unknown_everywhere(owners: Sequence[type[Section]], key: str, value: Any, where: str) -> list[str]:
    """Messages for nested keys of ``value`` that no algorithm in ``owners`` knows under field ``key``."""
    found = [_unknown_keys(m.model_fields[key].annotation, value, where) for m in owners]
    common = set.intersection(*(set(f) for f in found))
    return [found[0][path] for path in sorted(common)]


def _unknown_keys(annotation: Any, value: Any, where: str) -> dict[str, str]:
    """Unknown nested keys of ``value`` under a field typed ``annotation``: dotted path -> message."""
    out: dict[str, str] = {}
    section = _section_type(annotation)
    if isinstance(value, dict) and isinstance(section, type):
        for k, v in value.items():
            path = f"{where}.{k}"
            field = section.model_fields.get(k) if isinstance(k, str) else None
            if field is None:
                allowed = ", ".join(sorted(section.model_fields))
                out[path] = f"`{path}` is not a known key; allowed here: {allowed}"
            else:
                out.update(_unknown_keys(field.annotation, v, path))
    elif isinstance(value, list):
        items = [m for m in _members(annotation) if typing.get_origin(m) is list and typing.get_args(m)]
        for i, item in enumerate(value):
            if items:
                out.update(_unknown_keys(typing.get_args(items[0])[0], item, f"{where}[{i}]"))
    return out


def build_config(
    data: Mapping[str, Any],
    overrides: Iterable[str] = (),
    source: str = "config",
    base_dir: str | Path | None = None,
) -> RunConfig:
    """Validate a raw mapping (plus overrides) into a RunConfig or raise a readable ConfigError.

    The ``plugins`` it names are imported first (``.py`` files relative to ``base_dir``, the config file's
    folder; recorded as absolute paths), so their algorithms, models and datasets validate like built-ins.
    """
    overrides = list(overrides)
    merged = apply_overrides(data, overrides)
    plugins = merged.get("plugins")
    if plugins is not None:
        if not isinstance(plugins, list):
            problem = f"`plugins` must be a list of modules or .py files (got {plugins!r})"
            raise config_problems([problem], source)
        from edgelearn.extensions import load_plugins

        try:
            merged["plugins"] = load_plugins(plugins, base_dir)
        except ConfigError as exc:  # name the key, keep the plugin's own fix
            raise ConfigError(
                f"invalid configuration in {source}:\n  - `plugins`: {exc.message}", hint=exc.hint
            ) from None
    algo = merged.get("algorithm")
    if isinstance(algo, dict) and "name" in algo:
        registered(algo["name"], algorithm_names())  # an installed package may provide it
    if isinstance(algo, dict):
        algo = merged["algorithm"] = _switch_algorithm(data.get("algorithm"), algo, overrides, source)
    if isinstance(algo, dict) and "name" not in algo:
        merged["algorithm"] = {"name": "fedavg", **algo}
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as exc:
        raise format_validation_error(exc, source) from None
    except (TypeError, ValueError) as exc:  # validators on odd inputs (e.g. unhashable keys)
        raise ConfigError(f"invalid configuration in {source}: {exc}") from None


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """Read, override and validate a YAML config file (its ``plugins`` are found relative to it)."""
    return build_config(read_yaml(path), overrides, source=str(path), base_dir=Path(path).resolve().parent)


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML (tuples as lists), loadable again by :func:`load_config`."""
    return dump_yaml(cfg.model_dump(mode="json"), sort_keys=False)
