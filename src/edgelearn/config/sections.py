"""The run's shared sections: data, partition, topology, channel, model, engine, evaluation and output.

Every algorithm reads these; an algorithm's own settings live beside it (``edgelearn/algorithms/<name>/
config.py``) and the whole run's :class:`~edgelearn.run_config.RunConfig` is assembled above the algorithms.
Each field carries its default and the reason for it, so no layer below needs a magic number.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from edgelearn.config.base import FloatOrRange, NonNegInt, PositiveFloat, PositiveInt, Section


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
    edge_distances: Literal["per_node", "per_pair"] = Field(
        "per_node",
        description="per_node: a device is equally far from any edge server; per_pair: its own distance to "
        "each (needed to plan edge association, plan.associate)",
    )


class ModelConfig(Section):
    """Architecture from the registry plus its keyword options (e.g. hidden: [128] for mlp)."""

    name: str = "mlp"
    options: dict[str, Any] = Field(default_factory=dict)


class TierModelsConfig(Section):
    """Model of each tier; a tier left empty gets the dataset-sized default (algorithms/kit/tiers.py)."""

    device: ModelConfig | None = None
    edge: ModelConfig | None = None
    cloud: ModelConfig | None = None


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
