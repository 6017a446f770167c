"""FedAgg (Wu et al., INFOCOM 2024): agglomerative federated learning over device -> edge -> cloud.

Every node owns a model of its tier's architecture (small on devices, larger on edges, largest in the cloud);
parameters are never averaged or exchanged. Each parent-child pair runs BSBODP (the paper's Algorithms 1-2):
first downward distillation (child = student of the parent's logits), then upward (parent = student of the
child's logits), both on the bridge samples of the child's subtree. Leaf students add cross-entropy on their
real data (Eq. 4), non-leaf students use CE + beta * KD_T (Eq. 2). Only embeddings + labels (once, at INIT)
and logits (every round) ever move.

The parts: :mod:`~edgelearn.algorithms.fedagg.bsbodp` (the distillation step and its two schedules),
:mod:`~edgelearn.algorithms.fedagg.failover` (migrations, edge failover, device faults),
:mod:`~edgelearn.algorithms.fedagg.subtree` (per-node views of the tree), :mod:`~edgelearn.algorithms.fedagg.
bridge` (bridge samples) and :mod:`~edgelearn.algorithms.fedagg.pretrain` (the frozen autoencoder).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edgelearn.algorithms.base import Algorithm, RunContext
from edgelearn.algorithms.fedagg.bridge import (
    BridgeStore,
    build_bridge_store,
    sample_bytes,
)
from edgelearn.algorithms.fedagg.bsbodp import BSBODP, DOWN, UP
from edgelearn.algorithms.fedagg.config import AutoencoderConfig, FedAggConfig
from edgelearn.algorithms.fedagg.failover import Failover
from edgelearn.algorithms.fedagg.pretrain import load_or_pretrain
from edgelearn.algorithms.kit.comm import route
from edgelearn.algorithms.kit.nodes import NodeModels, accuracy_by_tier, mean_accuracy
from edgelearn.algorithms.kit.tiers import resolve_tier_models
from edgelearn.config import ModelConfig
from edgelearn.engine import StateDict, evaluate_state
from edgelearn.errors import ConfigError, DataError
from edgelearn.models.autoencoder import (
    Autoencoder,
    autoencoder_flops,
    num_params,
)

if TYPE_CHECKING:
    from edgelearn.run_config import RunConfig

# Ledger phases of FedAgg's INIT.
PHASE_INIT_ENCODE = "init_encode"
PHASE_INIT_EMBED = "init_embed"
PHASE_INIT_DECODE = "init_decode"


class FedAgg(BSBODP, Failover, Algorithm):
    """FedAgg: per-node heterogeneous models, BSBODP over every parent-child pair, the cloud model delivered.

    ``algo_cfg`` lets tests and scripts run FedAgg on a context built from another algorithm's config.
    """

    name = "fedagg"
    reparents_mid_run = True  # migrations (Theorem 1): a planned association can be executed mid-run

    @classmethod
    def holdout_size(cls, cfg: RunConfig) -> int:
        """``autoencoder.max_samples`` with ``autoencoder.source: holdout`` (also when ``path`` names a file
        pre-trained on that hold-out, so the devices never hold its samples), else none."""
        ac = getattr(cfg.algorithm, "autoencoder", None)
        return int(ac.max_samples) if isinstance(ac, AutoencoderConfig) and ac.source == "holdout" else 0

    def __init__(self, ctx: RunContext, algo_cfg: FedAggConfig | None = None) -> None:
        super().__init__(ctx)
        if algo_cfg is not None:
            self.cfg = algo_cfg
        if not isinstance(self.cfg, FedAggConfig):
            raise ConfigError(
                f"FedAgg needs an algorithm section of type FedAggConfig, got {type(self.cfg).__name__}",
                hint="set algorithm.name: fedagg",
            )
        self.trace: list[tuple[int, int, int]] = []
        """(direction, student, teacher) of every directional distillation of the latest round, in order."""
        self.wall: dict[str, float] = defaultdict(float)
        """Host wall seconds of the current round: teacher inference and student passes per tier."""
        self._idle: frozenset[int] = frozenset()
        """Devices sitting the current round out (unavailable or stragglers): :meth:`count` gives them 0."""
        self._lost: frozenset[int] = frozenset()
        """Devices whose upward logits are lost in the current round (:meth:`_step` drops their UP pair)."""
        self._moved = 0
        """Nodes re-parented by failover or failback in the current round."""
        self.displaced: dict[int, int] = {}
        """Node -> its home edge, for nodes moved away from a failed edge (module docstring)."""
        self.holders: dict[int, set[int]] = {}
        """Device -> the nodes holding its embeddings (set in :meth:`init`, grown by :meth:`migrate`)."""
        self.scheduled: list[tuple[int, int, int]] = []
        """(round, node, new parent) of the moves :meth:`schedule_reparenting` added to the configured."""
        self._after_moves: dict[int, list[Callable[[], None]]] = defaultdict(list)
        """Per round: what to call once that round's migrations are done (:meth:`schedule_reparenting`)."""

    def init(self) -> None:
        """Models, autoencoder, INIT embeddings up the tree (charged), bridge samples decoded once."""
        ctx, cfg = self.ctx, self.cfg
        shape = tuple(int(s) for s in ctx.bundle.input_shape)
        if len(shape) != 3:
            raise ConfigError(
                f"FedAgg needs image data (C, H, W); dataset {ctx.bundle.name!r} has input shape {shape}",
                hint="use an image dataset: digits, mnist, fashion_mnist, cifar10, cifar100",
            )
        self.num_classes = int(ctx.bundle.num_classes)
        topo = ctx.topology
        tier_models = resolve_tier_models(cfg.models, shape)
        self.models = NodeModels.build(
            topo,
            tier_models,
            shape,
            self.num_classes,
            init_seed=lambda n: ctx.seeds.int_seed("init", n),
            device=ctx.device,
            overrides=self._device_mix(),
        )
        self.autoencoder = self._load_or_pretrain(shape)
        self.enc_flops, self.dec_flops = autoencoder_flops(self.autoencoder)
        self.bytes_per_sample = sample_bytes(self.autoencoder.embed_numel)
        self.store: BridgeStore = build_bridge_store(
            self.autoencoder, ctx.client_data, scale=cfg.bridge_scale, batch_size=cfg.teacher_batch_size
        )
        self._cache_version = -1
        system = ctx.system
        system.begin_round(0)
        counts = {d: self.store.count(ctx.ordinal(d)) for d in topo.devices}
        holders = [d for d, k in counts.items() if k > 0]
        system.compute(holders, [self.enc_flops * counts[d] for d in holders], phase=PHASE_INIT_ENCODE)
        sizes = [float(counts[d] * self.bytes_per_sample) for d in holders]
        route(system, holders, sizes, direction="up", phase=PHASE_INIT_EMBED)
        # Every node decodes the embeddings it stores once (devices their own, for the leaf loss).
        decoders = [n for n in range(topo.num_nodes) if self.count(n) > 0]
        system.compute(decoders, [self.dec_flops * self.count(n) for n in decoders], phase=PHASE_INIT_DECODE)
        system.end_round()
        rng = ctx.seeds.rng("fedagg_eval")
        with_data = [d for d in topo.devices if counts[d] > 0]
        k = len(with_data) if cfg.eval_devices is None else min(cfg.eval_devices, len(with_data))
        self.eval_devices = sorted(int(d) for d in rng.choice(with_data, size=k, replace=False))
        n_test = len(ctx.test_y)
        m = n_test if cfg.tier_eval_samples is None else min(cfg.tier_eval_samples, n_test)
        picked = np.sort(rng.choice(n_test, size=m, replace=False))
        index = torch.as_tensor(picked, dtype=torch.long, device=ctx.test_y.device)
        self.tier_test = (ctx.test_x[index], ctx.test_y[index])
        self.holders = {int(d): set(topo.path_to_root(d)[1:]) for d in topo.devices}  # INIT sent them up
        self.displaced = {}

    def _device_mix(self) -> dict[int, ModelConfig]:
        """Devices switched to ``device_mix.model``: a seeded share of all devices."""
        mix = self.cfg.device_mix
        devices = self.ctx.topology.devices
        if mix is None or mix.share == 0:
            return {}
        k = int(round(mix.share * len(devices)))
        chosen = self.ctx.seeds.rng("fedagg_mix").choice(devices, size=k, replace=False)
        return {int(d): mix.model for d in chosen}

    def _load_or_pretrain(self, shape: tuple[int, ...]) -> Autoencoder:
        """The frozen autoencoder (:func:`~edgelearn.algorithms.fedagg.pretrain.load_or_pretrain`)."""
        model, self.bridge_source = load_or_pretrain(self.ctx, self.cfg.autoencoder, shape)
        return model

    def run_round(self, round_: int) -> dict[str, Any]:
        """Scheduled migrations, edge failover/failback and device faults (module docstring), then one
        FEDAGG_TRAIN(root); returns losses, bytes per phase and, with a fault model, the fault counters."""
        system = self.ctx.system
        faults = system.faults
        system.begin_round(round_)
        self.wall.clear()
        self.trace.clear()
        self._idle, self._lost, self._moved = frozenset(), frozenset(), 0
        for node, new_parent in self._migrations(round_):
            self.displaced.pop(node, None)  # an explicit move makes the new parent its home
            self.migrate(node, new_parent)
        for then in self._after_moves.get(round_, ()):
            then()
        screen = self._apply_faults(round_) if faults.enabled else None
        losses: dict[int, list[float]] = defaultdict(list)
        if self.cfg.schedule == "sequential":
            self._sequential(0, round_, losses)
        else:
            for pairs in self.levels():
                for direction in (DOWN, UP):
                    for n, v in self._step(direction, pairs, round_).items():
                        losses[n].append(v)
        self._idle, self._lost = frozenset(), frozenset()
        system.end_round()
        totals = system.ledger.round_totals(round_)
        tier_loss: dict[str, list[float]] = defaultdict(list)
        topo = self.ctx.topology
        for n, vals in losses.items():
            tier_loss[topo.tier(n).value].extend(v for v in vals if np.isfinite(v))
        stats: dict[str, Any] = {
            "train_loss": float(np.mean(losses[0])) if losses.get(0) else float("nan"),
            "train_loss_by_tier": {t: float(np.mean(v)) if v else None for t, v in sorted(tier_loss.items())},
            "bytes_by_phase": {
                p: v["bytes_up"] + v["bytes_down"]
                for p, v in sorted(totals["by_phase"].items())
                if v["bytes_up"] + v["bytes_down"] > 0
            },
            "wall_s_by_part": dict(sorted(self.wall.items())),
        }
        if screen is not None:
            stats.update(screen.close())
            stats["kept_previous_model"] = not losses.get(0)  # the cloud learns from live edges regardless
            stats["reparented"] = self._moved
        return stats

    def _migrations(self, round_: int) -> list[tuple[int, int]]:
        """(node, new parent) of round ``round_``'s moves: the configured ``migrations``, then scheduled."""
        configured = [(m.node, m.new_parent) for m in self.cfg.migrations if m.round == round_]
        scheduled = [(node, parent) for r, node, parent in self.scheduled if r == round_]
        return [(self._node_id(node), self._node_id(parent)) for node, parent in configured + scheduled]

    def schedule_reparenting(
        self, round_: int, moves: Mapping[int, int], then: Callable[[], None] | None = None
    ) -> None:
        """Migrate each node in ``moves`` to its new parent at the start of round ``round_`` exactly as a
        configured migration (``algorithm.migrations``) would, after that round's configured ones (Wu et al.,
        INFOCOM 2024, Theorem 1: the agglomerative learning stays valid on the new tree); then call ``then``,
        before the round's work. The runner executes a planned edge association this way
        (``plan.associate_round``)."""
        self.scheduled.extend((int(round_), int(node), int(parent)) for node, parent in moves.items())
        if then is not None:
            self._after_moves[int(round_)].append(then)

    def state_dict(self) -> dict[str, Any]:
        """Every node's model state, the tree's current parentage, the displaced nodes with their homes and
        who holds which device's embeddings (the autoencoder and bridge samples are rebuilt by ``init``)."""
        return {
            "node_states": dict(self.models.states),  # states are replaced, never mutated in place
            "parents": np.array(self.ctx.topology.parent_array, dtype=np.int64),
            "displaced": _pairs(sorted(self.displaced.items())),
            "holders": _pairs((d, n) for d, held in sorted(self.holders.items()) for n in sorted(held)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output after :meth:`init` (same tree and models); the parentage,
        displaced nodes and holders are optional (checkpoints written before edge failover lack them)."""
        saved = state.get("node_states")
        if not isinstance(saved, dict) or {int(n) for n in saved} != set(self.models.states):
            raise DataError(
                "FedAgg checkpoint: its node states do not match this run's nodes",
                hint="resume with the config the checkpoint was written by",
            )
        device = self.ctx.device
        self.models.states = {
            int(n): {k: v.to(device, copy=True) for k, v in s.items()} for n, s in saved.items()
        }
        if state.get("parents") is not None:
            self._restore_parents(np.asarray(state["parents"], dtype=np.int64))
        if state.get("displaced") is not None:
            self.displaced = {n: h for n, h in _unpairs(state["displaced"], "displaced")}
        if state.get("holders") is not None:
            self.holders = {int(d): set() for d in self.ctx.topology.devices}
            for d, n in _unpairs(state["holders"], "holders"):
                if d not in self.holders:
                    raise DataError(f"FedAgg checkpoint: holders name node {d}, not a device")
                self.holders[d].add(n)
        self._cache_version = -1

    def delivered_state(self) -> StateDict:
        """The cloud model's state."""
        return self.models.states[0]

    def summary_extras(self) -> dict[str, Any]:
        """summary.json entries: each tier's model(s) and the bridge-sample payload sizes."""
        topo = self.ctx.topology
        tiers: dict[str, dict[str, Any]] = {}
        for n in range(topo.num_nodes):
            arch = self.models.arch(n)
            entry = tiers.setdefault(topo.tier(n).value, {})
            info = entry.setdefault(
                arch.name, {"params": arch.info.params, "param_bytes": arch.info.param_bytes, "nodes": 0}
            )
            info["nodes"] += 1
        faults = self.ctx.system.faults
        return {
            "models_by_tier": tiers,
            "bridge": {
                "embedding_floats": self.autoencoder.embed_numel,
                "bytes_per_sample": self.bytes_per_sample,
                "autoencoder_params": num_params(self.autoencoder),
                **self.bridge_source,
            },
            **({"faults": faults.totals()} if faults.enabled else {}),
        }

    def evaluate(self) -> dict[str, Any]:
        """Cloud accuracy and loss (full test set), plus ``accuracy_by_tier``: cloud, the mean over edges
        and the mean over the evaluated devices (a fixed seeded sample of ``eval_devices``), both tested on a
        fixed seeded subset of ``tier_eval_samples`` test samples, so many devices stay cheap to evaluate;
        the node models infer through the executor (:func:`mean_accuracy`)."""
        ctx, batch = self.ctx, self.ctx.cfg.eval.batch_size
        acc, loss = evaluate_state(self.models.module(0), None, ctx.test_x, ctx.test_y, batch)
        x, y = self.tier_test
        edges = mean_accuracy(ctx.executor, self.models.members(ctx.topology.edges), x, y, batch)
        devices = mean_accuracy(ctx.executor, self.models.members(self.eval_devices), x, y, batch)
        return {"accuracy": acc, "loss": loss, "accuracy_by_tier": accuracy_by_tier(acc, edges, devices)}


def _pairs(items: Iterable[tuple[int, int]]) -> np.ndarray:
    """Integer pairs as an (n, 2) int64 array (checkpoint-friendly)."""
    return np.array([(int(a), int(b)) for a, b in items], dtype=np.int64).reshape(-1, 2)


def _unpairs(table: Any, what: str) -> list[tuple[int, int]]:
    """Inverse of :func:`_pairs`; a malformed table is a DataError naming ``what``."""
    arr = np.asarray(table)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.dtype.kind not in "iu":
        raise DataError(f"FedAgg checkpoint: {what} is not an (n, 2) integer table", hint="it is corrupt")
    return [(int(a), int(b)) for a, b in arr]
