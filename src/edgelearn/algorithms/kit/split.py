"""Group knowledge transfer over split models (He, Annavaram & Avestimehr, "Group Knowledge Transfer",
NeurIPS 2020), the machinery FedGKT runs and FedDKC refines; no algorithm owns it.

Every device (client) owns a small model split into a feature extractor and a classifier head
(:class:`SplitModel`); the cloud (server) owns a large model that classifies the clients' extracted features.
One round: clients train with ``CE + beta * KD_T`` towards their latest server logits (plain CE before any
exist); each extracts the features and logits of its samples and sends them up with the labels, hop by hop;
the server trains on what arrived with :meth:`SplitTransfer.server_loss` on :meth:`SplitTransfer.server_data`
(the hooks FedDKC overrides), infers its logits and sends each client its own, hop by hop down. Faults,
evaluation and the ledger phases are as :mod:`edgelearn.algorithms.fedgkt.algorithm` describes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from edgelearn.algorithms.base import Algorithm, RunContext, local_spec
from edgelearn.algorithms.kit.comm import FLOAT_BYTES, LABEL_BYTES, planned_samples, route
from edgelearn.algorithms.kit.distill import TEACHER_KEY, ce_kd_loss, teacher_logits
from edgelearn.algorithms.kit.nodes import (
    SERVER,
    NodeModels,
    accuracy_by_tier,
    bytes_by_phase,
    mean_accuracy,
    pick_eval_devices,
    tier_test_subset,
)
from edgelearn.algorithms.kit.split_config import SplitTransferConfig
from edgelearn.algorithms.kit.tiers import TierArch, make_arch, resolve_tier_models
from edgelearn.config import Section
from edgelearn.engine import (
    ClientData,
    Cohort,
    LocalSpec,
    LossFn,
    StateDict,
    prediction_totals,
)
from edgelearn.engine import cross_entropy_loss as _ce_loss
from edgelearn.engine.infer import InferCohort, InferSpec
from edgelearn.errors import ConfigError, DataError
from edgelearn.models import MLP, ConvNet, ResNet, SmallCNN, build_model
from edgelearn.models.flops import MEASURE_DEVICE
from edgelearn.system.screen import RoundScreen

# Ledger phases of FedGKT (and FedDKC) events.
PHASE_CLIENT_TRAIN = "gkt_client_train"
PHASE_CLIENT_EXTRACT = "gkt_client_extract"
PHASE_FEATURES_UP = "gkt_features_up"
PHASE_SERVER_TRAIN = "gkt_server_train"
PHASE_SERVER_LOGITS = "gkt_server_logits"
PHASE_LOGITS_DOWN = "gkt_logits_down"

TEST_SHARES_STREAM = 2
"""Sub-key of the evaluation seed purpose that deals the test shares (after the kit's streams 0 and 1)."""


# ------------------------------------------------------------------------------------- split models
class SplitModel(nn.Module):
    """A client model as FedGKT needs it: ``classifier(extractor(x))``, with the features reachable."""

    def __init__(self, extractor: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, num_classes)."""
        return self.classifier(self.extractor(x))


def split_outputs(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A :class:`SplitModel`'s (features, logits) on ``x``: the output function of its extraction (an
    ``executor.infer`` output, :data:`~edgelearn.engine.infer.OutputFn`)."""
    features = module.extractor(x)
    return features, module.classifier(features)


def split_model(module: nn.Module, name: str = "") -> tuple[nn.Module, nn.Module]:
    """(extractor, classifier) of a zoo model: the convolutional body vs the pooling + FC head.

    MLPs split before their last linear layer; models without a hidden layer cannot be split.
    """
    if isinstance(module, (SmallCNN, ConvNet)):
        return module.features, nn.Sequential(module.pool, module.head)
    if isinstance(module, ResNet):
        return nn.Sequential(module.stem, module.blocks), nn.Sequential(
            module.pool, nn.Flatten(1), module.head
        )
    if isinstance(module, MLP) and len(module.net) > 2:
        return module.net[:-1], module.net[-1:]
    raise ConfigError(
        f"model {name or type(module).__name__!r} cannot be split into a feature extractor and a classifier",
        hint="use a CNN, ResNet or an MLP with at least one hidden layer as models.device",
    )


def client_arch(base: TierArch, input_shape: Sequence[int], num_classes: int) -> TierArch:
    """The split version of ``base``: same layers, parameters and FLOPs; keys under extractor/classifier."""
    shape = tuple(int(s) for s in input_shape)
    name, options = base.name, dict(base.options)

    def model_fn() -> nn.Module:
        return SplitModel(*split_model(build_model(name, shape, num_classes, **options), name))

    return TierArch(
        key=f"split:{base.key}", name=base.name, options=base.options, model_fn=model_fn, info=base.info
    )


def feature_shape(arch: TierArch, input_shape: Sequence[int]) -> tuple[int, ...]:
    """Per-sample shape of the extractor's output (measured on a CPU copy; the caller's RNG is untouched)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad(), MEASURE_DEVICE:
        module = arch.model_fn()
        out = module.extractor(torch.zeros((1, *tuple(input_shape))))
    return tuple(int(s) for s in out.shape[1:])


def seeded_states(
    arch_of: Mapping[int, TierArch], seed_of: Callable[[int], int], device: torch.device
) -> dict[int, StateDict]:
    """A fresh state per node, node ``n`` drawn after ``torch.manual_seed(seed_of(n))``; own storage each."""
    states: dict[int, StateDict] = {}
    with torch.random.fork_rng(devices=[]):
        for node, arch in arch_of.items():
            torch.manual_seed(seed_of(node))
            module = arch.model_fn()
            states[int(node)] = {k: v.detach().to(device, copy=True) for k, v in module.state_dict().items()}
    return states


# ---------------------------------------------------------------------------------------- algorithm
class SplitTransfer(Algorithm):
    """Group knowledge transfer over split models (module docstring); a subclass names the algorithm and its
    config class (a :class:`SplitTransferConfig`) and may override the server's hooks (:meth:`check_config`,
    :meth:`server_data`, :meth:`server_loss`).

    ``algo_cfg`` lets tests and scripts run it on a context built from another algorithm's config.
    """

    config_class: ClassVar[type[Section]] = SplitTransferConfig

    def __init__(self, ctx: RunContext, algo_cfg: Section | None = None) -> None:
        super().__init__(ctx)
        if algo_cfg is not None:
            self.cfg = algo_cfg
        if not isinstance(self.cfg, self.config_class):
            raise ConfigError(
                f"{type(self).__name__} needs an algorithm section of type {self.config_class.__name__}, "
                f"got {type(self.cfg).__name__}",
                hint=f"set algorithm.name: {self.name}",
            )

    # --------------------------------------------------------------------------------- init
    def init(self) -> None:
        """Client and server architectures, a seeded model per device and for the server, the eval plan."""
        ctx, cfg = self.ctx, self.cfg
        shape = tuple(int(s) for s in ctx.bundle.input_shape)
        self.num_classes = int(ctx.bundle.num_classes)
        tiers = resolve_tier_models(cfg.models, shape)
        self.client = client_arch(
            make_arch(tiers["device"], shape, self.num_classes), shape, self.num_classes
        )
        self.feature_shape = feature_shape(self.client, shape)
        self.server = make_arch(tiers["cloud"], self.feature_shape, self.num_classes)
        self.check_config()
        topo = ctx.topology
        self.devices = [int(d) for d in topo.devices if ctx.data_size(int(d)) > 0]
        if not self.devices:
            raise DataError(f"{self.name}: no device holds any training sample", hint="use fewer devices")
        arch_of = {d: self.client for d in self.devices} | {SERVER: self.server}
        self.models = NodeModels(
            {self.client.key: self.client, self.server.key: self.server},
            {n: a.key for n, a in arch_of.items()},
            ctx.device,
        )
        self.models.states = seeded_states(arch_of, lambda n: ctx.seeds.int_seed("init", n), ctx.device)
        self.server_logits: dict[int, torch.Tensor] = {}
        """Each device's latest server logits, rows aligned with its samples (empty before round 1 ends)."""
        self.feature_numel = int(np.prod(self.feature_shape))
        self.up_bytes_per_sample = FLOAT_BYTES * (self.feature_numel + self.num_classes) + LABEL_BYTES
        self.down_bytes_per_sample = FLOAT_BYTES * self.num_classes
        self.eval_devices = pick_eval_devices(ctx, self.devices, cfg.eval_devices, f"{self.name}_eval")
        self.tier_test = tier_test_subset(ctx, cfg.tier_eval_samples, f"{self.name}_eval")
        perm = ctx.seeds.rng(f"{self.name}_eval", TEST_SHARES_STREAM).permutation(len(ctx.test_y))
        self.test_shares = [np.sort(s) for s in np.array_split(perm, len(self.eval_devices))]

    def check_config(self) -> None:
        """Hook for subclasses to validate their settings against the data (FedGKT has nothing to check)."""

    # ------------------------------------------------------------------------------ the server's loss
    def server_weights(self) -> tuple[float, float]:
        """(CE weight, KD weight) of the server's loss for ``server_loss`` (paper or fedml)."""
        beta = float(self.cfg.beta)
        return (1.0, beta) if self.cfg.server_loss == "paper" else (beta, 1.0)

    def server_data(self, features: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor) -> ClientData:
        """The server's training set: features, labels and the clients' logits as KD teachers."""
        return ClientData(features, labels, extra={TEACHER_KEY: logits})

    def server_loss(self) -> LossFn:
        """The server's per-sample loss on :meth:`server_data` batches."""
        ce_w, kd_w = self.server_weights()
        return ce_kd_loss(ce_w, kd_w, self.cfg.T)

    # ---------------------------------------------------------------------------------- rounds
    def _client_cohort(self, round_: int, nodes: Sequence[int]) -> tuple[Cohort, LocalSpec]:
        """Clients ``nodes`` as one cohort: CE + beta * KD against their latest server logits when they all
        hold some, plain CE when none does (round 1, or clients that never heard back from the server)."""
        ctx, cfg = self.ctx, self.cfg
        data = []
        for d in nodes:
            own = ctx.client_data[ctx.ordinal(d)]
            logits = self.server_logits.get(d)
            data.append(own if logits is None else ClientData(own.x, own.y, extra={TEACHER_KEY: logits}))
        distill = [d in self.server_logits for d in nodes]
        if any(distill) != all(distill):
            raise ValueError("_client_cohort: clients with and without server logits need separate cohorts")
        loss = ce_kd_loss(1.0, cfg.beta, cfg.T) if any(distill) else _ce_loss
        cohort = Cohort(
            model_fn=self.client.model_fn,
            arch_key=self.client.key,
            data=data,
            starts=[self.models.states[d] for d in nodes],
            start_of=np.arange(len(nodes)),
            group_of=np.zeros(len(nodes), dtype=np.int64),
            num_groups=1,
            weights=np.ones(len(nodes)),
            seeds=ctx.client_seeds(f"{self.name}_client", round_, nodes),
            keep_states=True,
            client_ids=np.asarray(nodes, dtype=np.int64),
        )
        spec = replace(local_spec(cfg.local), loss=loss)
        return cohort, spec

    def _train_clients(self, round_: int, nodes: Sequence[int]) -> list[float]:
        """Train clients ``nodes`` (those with server logits and those without in separate cohorts), store
        their states, charge the FLOPs; returns their training losses."""
        ctx, system = self.ctx, self.ctx.system
        losses: list[float] = []
        with_logits = [d for d in nodes if d in self.server_logits]
        without = [d for d in nodes if d not in self.server_logits]
        for part in (without, with_logits):
            if not part:
                continue
            cohort, spec = self._client_cohort(round_, part)
            result = ctx.executor.train(cohort, spec)
            self.check_finite(result, part, round_)
            assert result.client_states is not None
            for d, state in zip(part, result.client_states):
                self.models.states[d] = state
            system.compute(
                part, result.samples * float(self.client.info.flops_train), phase=PHASE_CLIENT_TRAIN
            )
            losses.extend(float(v) for v in result.train_loss)
        return losses

    def extract_all(
        self, nodes: Sequence[int], inputs: Sequence[torch.Tensor]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(features, logits) of each device's client model in ``nodes`` on its ``inputs``: one executor
        ``infer`` call for all of them (eval mode, no gradients, the precision policy; batches of
        ``teacher_batch_size``)."""
        states = [self.models.states[d] for d in nodes]
        cohort = InferCohort(self.client.model_fn, self.client.key, states, inputs)
        spec = InferSpec(batch_size=self.cfg.teacher_batch_size, output=split_outputs)
        return [(features, logits) for features, logits in self.ctx.executor.infer(cohort, spec).outputs]

    def extract(self, node: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, logits) of device ``node``'s client model on ``x`` (:meth:`extract_all` for one)."""
        return self.extract_all([node], [x])[0]

    def _screen(self, round_: int) -> RoundScreen:
        """The round's device faults: who is unavailable or behind a failed edge (they sit out), and among
        the others who straggles past the deadline or loses its upload (predicted: training + extraction,
        then features + logits + labels of every local sample, each client its own payload)."""
        ctx = self.ctx
        screen = RoundScreen.open(ctx.system, round_, self.devices)
        active = screen.active
        sizes = np.array([ctx.data_size(int(d)) for d in active], dtype=np.float64)
        info = self.client.info
        trained = planned_samples(sizes, self.cfg.local)
        flops = trained * float(info.flops_train) + sizes * float(info.flops_forward)
        nbytes = sizes * self.up_bytes_per_sample
        return screen.screen(flops, nbytes)

    def run_round(self, round_: int) -> dict[str, Any]:
        """Client training, upload of features + logits + labels, server training, logits back down; under
        faults (module docstring) over the clients whose upload arrived, the server kept when none did."""
        ctx, system = self.ctx, self.ctx.system
        system.begin_round(round_)
        screen = self._screen(round_)
        trainers = [int(d) for d in screen.trainers]
        arrivals = [int(d) for d in screen.arrived]
        lost = [int(d) for d in screen.lost]
        # 1. clients (stragglers are cut off at the deadline: their partial training is discarded)
        device_losses = self._train_clients(round_, trainers)
        # 2. extraction and upload (lost uploads are extracted and sent too, but nothing arrives)
        sent = sorted(arrivals + lost)
        if sent:
            sizes = np.array([ctx.data_size(d) for d in sent], dtype=np.float64)
            system.compute(sent, sizes * self.client.info.flops_forward, phase=PHASE_CLIENT_EXTRACT)
        screen.charge()
        arrived_sizes = [ctx.data_size(d) for d in arrivals]
        up = np.asarray(arrived_sizes, dtype=np.float64) * self.up_bytes_per_sample
        route(system, arrivals, up, direction="up", phase=PHASE_FEATURES_UP)
        server_loss = float("nan")
        if arrivals:  # 3. + 4. the server, over what arrived (else it keeps its model)
            server_loss = self._server_round(round_, arrivals, arrived_sizes)
        system.end_round()
        stats: dict[str, Any] = {
            "train_loss": server_loss,
            "train_loss_by_tier": {
                "cloud": server_loss,
                "device": float(np.nanmean(device_losses)) if device_losses else None,
            },
            "bytes_by_phase": bytes_by_phase(system, round_),
        }
        stats.update(screen.close())
        return stats

    def _server_round(self, round_: int, arrivals: Sequence[int], sizes: Sequence[int]) -> float:
        """Server training on the features that arrived, then its logits back down to those clients."""
        ctx, cfg, system = self.ctx, self.cfg, self.ctx.system
        parts = self.extract_all(arrivals, [ctx.client_data[ctx.ordinal(d)].x for d in arrivals])
        features = torch.cat([f for f, _ in parts])
        client_logits = torch.cat([z for _, z in parts])
        labels = torch.cat([ctx.client_data[ctx.ordinal(d)].y for d in arrivals])
        server_cohort = Cohort(
            model_fn=self.server.model_fn,
            arch_key=self.server.key,
            data=[self.server_data(features, labels, client_logits)],
            starts=[self.models.states[SERVER]],
            start_of=np.zeros(1, dtype=np.int64),
            group_of=np.zeros(1, dtype=np.int64),
            num_groups=1,
            weights=np.ones(1),
            seeds=ctx.client_seeds(f"{self.name}_server", round_, [SERVER]),
            keep_states=True,
            client_ids=np.array([SERVER], dtype=np.int64),
        )
        server_spec = LocalSpec(
            lr=cfg.local.lr,
            batch_size=cfg.local.batch_size,
            epochs=cfg.server_epochs,
            momentum=cfg.local.momentum,
            weight_decay=cfg.local.weight_decay,
            loss=self.server_loss(),
        )
        server_result = ctx.executor.train(server_cohort, server_spec)
        self.check_finite(server_result, [SERVER], round_)
        assert server_result.client_states is not None
        self.models.states[SERVER] = server_result.client_states[0]
        system.compute(
            SERVER, float(server_result.samples[0]) * self.server.info.flops_train, phase=PHASE_SERVER_TRAIN
        )
        z = teacher_logits(self.models.module(SERVER), features, batch_size=cfg.teacher_batch_size)
        system.compute(SERVER, float(z.shape[0]) * self.server.info.flops_forward, phase=PHASE_SERVER_LOGITS)
        self.server_logits.update(zip(arrivals, torch.split(z, list(sizes))))
        down = np.asarray(sizes, dtype=np.float64) * self.down_bytes_per_sample
        route(system, arrivals, down, direction="down", phase=PHASE_LOGITS_DOWN)
        return float(server_result.train_loss[0])

    # ------------------------------------------------------------------------------ metrics
    def delivered_state(self) -> StateDict:
        """The server's state (it is evaluated behind the clients' extractors, see :meth:`evaluate`)."""
        return self.models.states[SERVER]

    def evaluate(self) -> dict[str, Any]:
        """Accuracy and loss of extractor + server over the test set (dealt out over the evaluated devices),
        plus ``accuracy_by_tier``: that value for the cloud and the devices' own models' mean accuracy."""
        ctx = self.ctx
        batch = ctx.cfg.eval.batch_size
        correct, loss = 0, 0.0
        dealt = [(d, share) for d, share in zip(self.eval_devices, self.test_shares) if len(share)]
        index = [torch.as_tensor(share, dtype=torch.long, device=ctx.test_y.device) for _, share in dealt]
        extracted = self.extract_all([d for d, _ in dealt], [ctx.test_x[i] for i in index])
        for i, (feats, _) in zip(index, extracted):
            c, s = prediction_totals(self.models.module(SERVER), feats, ctx.test_y[i], batch)
            correct, loss = correct + c, loss + s
        n = max(1, len(ctx.test_y))
        acc = correct / n
        x, y = self.tier_test
        members = [(self.client, self.models.states[d]) for d in self.eval_devices]
        devices = mean_accuracy(ctx.executor, members, x, y, batch)
        return {"accuracy": acc, "loss": loss / n, "accuracy_by_tier": accuracy_by_tier(acc, None, devices)}

    def summary_extras(self) -> dict[str, Any]:
        """summary.json entries: client and server models, the per-sample payloads and fault totals."""
        faults = self.ctx.system.faults
        return {
            "models_by_tier": {
                "device": {self.client.name: {"params": self.client.info.params, "nodes": len(self.devices)}},
                "cloud": {self.server.name: {"params": self.server.info.params, "nodes": 1}},
            },
            "feature_shape": list(self.feature_shape),
            "bytes_per_sample": {"up": self.up_bytes_per_sample, "down": self.down_bytes_per_sample},
            **({"faults": faults.totals()} if faults.enabled else {}),
        }

    # -------------------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Every node's state and each device's latest server logits (states are replaced, never mutated)."""
        return {"node_states": dict(self.models.states), "server_logits": dict(self.server_logits)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output after :meth:`init` (checkpoints turn node ids into strings)."""
        saved = {int(n): s for n, s in dict(state.get("node_states", {})).items()}
        if set(saved) != set(self.models.states):
            raise DataError(
                f"{self.name} checkpoint: its node states do not match this run's nodes",
                hint="resume with the config the checkpoint was written by",
            )
        device = self.ctx.device
        self.models.states = {n: {k: v.to(device, copy=True) for k, v in s.items()} for n, s in saved.items()}
        self.server_logits = {
            int(n): z.to(device, copy=True) for n, z in dict(state.get("server_logits", {})).items()
        }
