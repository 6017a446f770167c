"""FedAgg (Wu et al., INFOCOM 2024): agglomerative federated learning over device -> edge -> cloud.

Every node owns a model of its tier's architecture (small on devices, larger on edges, largest in the cloud);
parameters are never averaged or exchanged. Each parent-child pair runs BSBODP (paper_fedagg.md §4): first
downward distillation (child = student of the parent's logits), then upward (parent = student of the
child's logits), both on the bridge samples of the child's subtree. Leaf students add cross-entropy on their
real data (Eq. 4), non-leaf students use CE + beta * KD_T (Eq. 2). Only embeddings + labels (once, at INIT)
and logits (every round) ever move.

Schedules (one round = one ``FEDAGG_TRAIN(root)``):

* ``parallel`` (Algorithm 2 with children in parallel): levels of parents, deepest first; at each level every
  child of every parent there learns from its parent at once (devices as one executor cohort, edges as
  another), then every parent learns from the union of its children's subtree bridge samples in one pass.
* ``sequential`` (the official demo, §5.2): depth first, child by child: ``DIR(child, parent)`` then
  ``DIR(parent, child)`` over that child's subtree, a non-leaf child finishing its own subtree first.

Deviations from the demo, on purpose: every device has its own model (the demo shares 15, §10 item 1);
teachers infer in eval mode under no_grad (``demo_compat: true`` restores train-mode teachers); bridge samples
are mapped to the data's scale (``bridge_scale: unit`` restores the raw [0, 1] decoder output).

Faults (``faults`` config, system/faults.py), applied at the start of each round after the configured
migrations:

* **Edge outage: failover and failback.** Every child (device or live sub-edge) of an edge that
  :meth:`FaultModel.failed_edges` reports down is re-parented with :meth:`FedAgg.migrate`, one child at a time
  in id order, deepest failed edge first, to :meth:`FedAgg.failover_target`: walking up from the failed
  edge's parent, the first ancestor that has a live edge child (no failed edge on its path to the cloud) gives
  the live edge with the fewest devices at that moment (ties: lowest id), so the children spread evenly;
  with no live edge left they go directly under the cloud. The failed edge, left without children, neither
  trains nor teaches while down; its model and stored bridge samples are frozen, not lost. A moved node
  remembers its home edge; in the first round its home is reachable again it migrates back. Every node that
  ever received a device's embeddings keeps them, so a migration sends them only to nodes on the new path that
  never held them (the failover costs one hop, charged as ``migrate_embed`` / ``migrate_decode``; the way
  back, and a repeated failover to the same edge, cost nothing). A configured migration of a displaced node
  makes its new parent its home.
* **Devices.** A device that is unavailable (dropout, trace) sits the round out: no logits reach it, it does
  not train and does not teach its parent. A straggler past the round deadline receives its teacher's logits
  and is cut off at the deadline (charged as system/faults.py documents; its partial training is discarded).
  A lost upload (its logits to its parent) is charged in full (``lost_upload``) after the device trained on
  its parent's logits; its parent learns from the children whose logits arrived. Edge-cloud pairs distil on
  the bridge samples the edges already store, so a device sitting out does not shrink them, and the cloud
  keeps learning from live edges even in a round where no device upload arrives. Both schedules honour lost
  uploads (the ``sequential`` one runs each pair's two directions through the same :meth:`FedAgg._step`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edgelearn.algorithms.base import Algorithm, RunContext, local_spec
from edgelearn.algorithms.bridge import (
    BridgeStore,
    build_bridge_store,
    charge_paths,
    check_disjoint,
    device_train_index,
    logit_bytes,
    pretrain_on_heldout,
    sample_bytes,
    upload_to_root,
)
from edgelearn.algorithms.comm import fault_stats
from edgelearn.algorithms.distill import (
    BRIDGE_KEY,
    TEACHER_KEY,
    LogitCache,
    leaf_loss,
    non_leaf_loss,
    spare_cpu_core,
    teacher_logits,
)
from edgelearn.algorithms.kit import NodeModels, charge_cut_and_lost
from edgelearn.algorithms.tiers import resolve_tier_models
from edgelearn.config import AutoencoderConfig, FedAggConfig, ModelConfig
from edgelearn.engine import ClientData, Cohort, CohortResult, StateDict, evaluate_state
from edgelearn.errors import ConfigError, DataError
from edgelearn.models.autoencoder import (
    ARCHITECTURE,
    MAX_PARAMS,
    Autoencoder,
    autoencoder_flops,
    build_autoencoder,
    load_autoencoder,
    num_params,
)
from edgelearn.system import Tier
from edgelearn.system.faults import PHASE_LOST_UPLOAD, UploadScreen, screen_uploads
from edgelearn.system.topology import ROOT_ID

if TYPE_CHECKING:
    from edgelearn.config import RunConfig

# Ledger phases of FedAgg's events.
PHASE_INIT_ENCODE = "init_encode"
PHASE_INIT_EMBED = "init_embed"
PHASE_INIT_DECODE = "init_decode"
PHASE_TEACHER = "kd_teacher"
PHASE_LOGITS_DOWN = "kd_logits_down"
PHASE_LOGITS_UP = "kd_logits_up"
PHASE_STUDENT = "kd_student"
PHASE_MIGRATE_EMBED = "migrate_embed"
PHASE_MIGRATE_DECODE = "migrate_decode"

DOWN, UP = 0, 1
"""Direction codes in seeds and the call trace: DOWN = child learns from parent, UP = parent from child."""
AUTOENCODER_SEED_PURPOSE = "fedagg_autoencoder"
"""Seed stream of the autoencoder's initialization and pre-training shuffles."""
SEED_BOUND = 2**31
"""Integer seeds handed to torch/numpy stay below this."""
LEAF_STEP_PASSES = 2
"""A leaf step runs the model on the real and the bridge version of each sample (predicted device work)."""


# ---------------------------------------------------------------------------------------- algorithm
@dataclass
class _Student:
    """One student of a directional call: its data (with the teacher's logits) and who taught it."""

    node: int
    data: ClientData
    leaf: bool
    teacher: int


class FedAgg(Algorithm):
    """FedAgg: per-node heterogeneous models, BSBODP over every parent-child pair, the cloud model delivered.

    ``algo_cfg`` lets tests and scripts run FedAgg on a context built from another algorithm's config.
    """

    name = "fedagg"

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

    # ------------------------------------------------------------------------------------- init
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
        upload_to_root(system, counts, self.bytes_per_sample, phase=PHASE_INIT_EMBED)
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
        """The frozen autoencoder: loaded (checksum-verified) from ``autoencoder.path`` or pre-trained."""
        ac, ctx = self.cfg.autoencoder, self.ctx
        if ac.path is not None:
            state, meta = load_autoencoder(ac.path)
            _check_autoencoder_meta(meta, ac, shape)
            _check_autoencoder_data(meta, ac, ctx)
            model = build_autoencoder(shape, state, embed_channels=ac.embed_channels, device=ctx.device)
        else:
            model, meta = pretrain_autoencoder(ctx, ac)
        self.bridge_source = {
            "autoencoder_source": str(meta["source"]),
            "autoencoder_file": ac.path,
            "autoencoder_samples": len(meta["train_indices"]),
            "autoencoder_indices_sha256": str(meta["indices_sha256"]),
            "autoencoder_mse": meta.get("mse"),
        }
        if num_params(model) > MAX_PARAMS:
            raise ConfigError(
                f"the autoencoder has {num_params(model)} parameters, above the paper's {MAX_PARAMS}",
                hint="lower autoencoder.embed_channels",
            )
        return model

    # ------------------------------------------------------------------------------- tree views
    def _refresh(self) -> None:
        topo = self.ctx.topology
        if self._cache_version == topo.version:
            return
        self._ordinals: dict[int, list[int]] = {}
        self._counts: dict[int, int] = {}
        for n in range(topo.num_nodes):
            ords = [self.ctx.ordinal(d) for d in topo.subtree_devices(n)]
            self._ordinals[n] = ords
            self._counts[n] = sum(self.store.count(k) for k in ords)
        self._cache_version = topo.version

    def count(self, node: int) -> int:
        """Samples (bridge samples) in ``node``'s subtree; a device's own sample count, 0 while it sits the
        round out (so the schedules skip its pair; its ancestors keep the bridge samples they store)."""
        self._refresh()
        if node in self._idle:
            return 0
        return self._counts[int(node)]

    def ordinals(self, node: int) -> list[int]:
        """Device ordinals of ``node``'s subtree, in node-id order (the row order of its bridge samples)."""
        self._refresh()
        return self._ordinals[int(node)]

    def is_leaf(self, node: int) -> bool:
        """True for devices (the leaves of the tree)."""
        return self.ctx.topology.tier(int(node)) is Tier.DEVICE

    # ----------------------------------------------------------------------------- primitives
    def _teach(self, teacher: int, ordinals: Sequence[int]) -> torch.Tensor:
        """``teacher``'s logits on the bridges of ``ordinals``, large no-grad batches (callers charge it).

        A non-leaf teacher's logits are reused while its state is unchanged: an edge teaches the cloud at
        the end of a round and its devices at the start of the next with the same model on the same rows,
        and downward logits may have been computed ahead by :meth:`_prefetch_down`. Reuse returns exactly
        what a fresh computation would (same rows, same batch size, eval mode).
        """
        started = time.perf_counter()
        demo = self.cfg.demo_compat
        if demo:
            bridges, _ = self.store.take(ordinals)
            module = self.models.module(teacher)
            logits = teacher_logits(module, bridges, batch_size=self.cfg.local.batch_size, train_mode=True)
            # Train-mode BatchNorm updated the teacher's running statistics: keep them.
            self.models.states[teacher] = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            rows = self._rows(ordinals)
            cache = self._logit_cache()
            state = self.models.states[teacher]
            hit = cache.lookup(teacher, state, rows)
            if hit is not None:
                logits, background = hit
                self.wall["teacher_background"] += background
            else:
                bridges, _ = self.store.take(rows)
                logits = teacher_logits(
                    self.models.module(teacher), bridges, batch_size=self.cfg.teacher_batch_size
                )
                if not self.is_leaf(teacher):  # a device always trains before it teaches again
                    cache.store(teacher, state, rows, logits)
        self.wall["teacher"] += time.perf_counter() - started
        return logits

    def _rows(self, ordinals: Sequence[int]) -> tuple[int, ...]:
        """The device ordinals that hold samples, in order: the key of a set of bridge rows."""
        return tuple(int(k) for k in ordinals if self.store.count(int(k)) > 0)

    def _logit_cache(self) -> LogitCache:
        """This run's :class:`LogitCache` (built on first use; background prefetch only where it can help)."""
        cache: LogitCache | None = getattr(self, "_logits", None)
        if cache is None:
            cfg = self.cfg
            background = (
                cfg.schedule == "parallel" and not cfg.demo_compat and spare_cpu_core(self.ctx.device)
            )
            cache = LogitCache(batch_size=cfg.teacher_batch_size, background=background)
            self._logits = cache
        return cache

    def _prefetch_down(self, current: Sequence[tuple[int, int]]) -> None:
        """Start the downward logits of every level above ``current`` in a background thread.

        In the parallel schedule a parent trains only after it has taught its own children, so the teachers
        of the upper levels still hold their round-start models while the lower levels train: their logits
        (the cloud's on every bridge sample, the largest inference of a round) can be computed beside that
        training. :meth:`_teach` uses them only if the teacher's state and rows are still the same.
        """
        cache = self._logit_cache()
        if not cache.background or not current:
            return
        depth = self.ctx.topology.depth
        top = min(depth(p) for p, _ in current)
        for pairs in self.levels():
            by_parent: dict[int, list[int]] = defaultdict(list)
            for parent, child in pairs:
                if depth(parent) < top:
                    by_parent[parent].append(child)
            for parent, children in by_parent.items():
                rows = self._rows([k for c in children for k in self.ordinals(c)])
                if not rows:
                    continue
                arch = self.models.arch(parent)
                cache.prefetch(
                    parent,
                    self.models.states[parent],
                    rows,
                    arch.key,
                    lambda parent=parent: self.models.module(parent),
                    lambda rows=rows: self.store.take(rows)[0],
                )

    def _leaf_data(self, node: int, logits: torch.Tensor) -> ClientData:
        """A device's real samples with their aligned bridge samples and the teacher's logits on them."""
        k = self.ctx.ordinal(node)
        real = self.ctx.client_data[k]
        return ClientData(
            real.x, real.y, extra={BRIDGE_KEY: self.store.bridges[self.store.span(k)], TEACHER_KEY: logits}
        )

    def _bridge_data(self, ordinals: Sequence[int], logits: torch.Tensor) -> ClientData:
        """Bridge samples of ``ordinals`` with their labels and the teacher's logits (a non-leaf student)."""
        bridges, labels = self.store.take(ordinals)
        return ClientData(bridges, labels, extra={TEACHER_KEY: logits})

    def _train(self, students: Sequence[_Student], round_: int, direction: int) -> dict[int, float]:
        """Train students in cohorts of (architecture, leaf or not) through the executor; charge FLOPs."""
        cfg, ctx = self.cfg, self.ctx
        groups: dict[tuple[str, bool], list[_Student]] = defaultdict(list)
        for s in students:
            groups[(self.models.arch_of[s.node], s.leaf)].append(s)
        losses: dict[int, float] = {}
        for (key, leaf), members in groups.items():
            arch = self.models.archs[key]
            nodes = [s.node for s in members]
            cohort = Cohort(
                model_fn=arch.model_fn,
                arch_key=arch.key,
                data=[s.data for s in members],
                starts=[self.models.states[n] for n in nodes],
                start_of=np.arange(len(nodes)),
                group_of=np.zeros(len(nodes), dtype=np.int64),
                num_groups=1,
                weights=np.ones(len(nodes)),
                seeds=np.array(
                    [
                        ctx.seeds.int_seed("fedagg_batches", round_, s.node, direction, s.teacher)
                        for s in members
                    ],
                    dtype=np.int64,
                ),
                keep_states=True,
                client_ids=np.asarray(nodes, dtype=np.int64),
            )
            loss = (
                leaf_loss(cfg.gamma, cfg.beta_leaf, cfg.T, joint_forward=not cfg.demo_compat)
                if leaf
                else non_leaf_loss(cfg.beta, cfg.T)
            )
            spec = replace(local_spec(cfg.local), loss=loss)
            started = time.perf_counter()
            result: CohortResult = ctx.executor.train(cohort, spec)
            self.wall[f"student_{ctx.topology.tier(nodes[0]).value}"] += time.perf_counter() - started
            self.check_finite(result, nodes, round_)
            assert result.client_states is not None
            for n, state in zip(nodes, result.client_states):
                self.models.states[n] = state
            self._logit_cache().forget(nodes)  # their cached logits belong to the replaced states
            # A leaf step runs the model on the real and the bridge version of each sample.
            passes = 2 if leaf else 1
            ctx.system.compute(
                nodes, result.samples * float(passes * arch.info.flops_train), phase=PHASE_STUDENT
            )
            losses.update({n: float(v) for n, v in zip(nodes, result.train_loss)})
        return losses

    def _down(self, pairs: Sequence[tuple[int, int]], round_: int) -> dict[int, float]:
        """Downward KD for (parent, child) pairs at once: each parent infers once on all its listed children's
        subtrees, sends each child its logits, then all children train in parallel cohorts."""
        self._prefetch_down(pairs)
        by_parent: dict[int, list[int]] = defaultdict(list)
        for parent, child in pairs:
            by_parent[parent].append(child)
        students: list[_Student] = []
        src, dst, nbytes, teachers, flops = [], [], [], [], []
        for parent, children in by_parent.items():
            ords = [k for c in children for k in self.ordinals(c)]
            logits = self._teach(parent, ords)
            teachers.append(parent)
            flops.append(self.models.arch(parent).info.flops_forward * logits.shape[0])
            start = 0
            for child in children:
                n = self.count(child)
                part = logits[start : start + n]
                start += n
                self.trace.append((DOWN, child, parent))
                leaf = self.is_leaf(child)
                data = self._leaf_data(child, part) if leaf else self._bridge_data(self.ordinals(child), part)
                students.append(_Student(child, data, leaf, parent))
                src.append(parent)
                dst.append(child)
                nbytes.append(logit_bytes(self.num_classes, n))
        system = self.ctx.system
        system.compute(teachers, flops, phase=PHASE_TEACHER)
        system.transmit(
            np.array(src), np.array(dst), np.array(nbytes, dtype=np.float64), phase=PHASE_LOGITS_DOWN
        )
        return self._train(students, round_, DOWN)

    def _up(self, pairs: Sequence[tuple[int, int]], round_: int) -> dict[int, float]:
        """Upward KD: each child infers on its own subtree and sends the logits up; each parent then trains
        once on the union of its listed children's bridge samples."""
        by_parent: dict[int, list[int]] = defaultdict(list)
        for parent, child in pairs:
            by_parent[parent].append(child)
        students: list[_Student] = []
        src, dst, nbytes, teachers, flops = [], [], [], [], []
        for parent, children in by_parent.items():
            parts, ords = [], []
            for child in children:
                child_ords = self.ordinals(child)
                logits = self._teach(child, child_ords)
                self.trace.append((UP, parent, child))
                parts.append(logits)
                ords.extend(child_ords)
                teachers.append(child)
                flops.append(self.models.arch(child).info.flops_forward * logits.shape[0])
                src.append(child)
                dst.append(parent)
                nbytes.append(logit_bytes(self.num_classes, logits.shape[0]))
            teacher = children[0] if len(children) == 1 else self.ctx.topology.num_nodes  # a union
            students.append(_Student(parent, self._bridge_data(ords, torch.cat(parts)), False, teacher))
        system = self.ctx.system
        system.compute(teachers, flops, phase=PHASE_TEACHER)
        system.transmit(
            np.array(src), np.array(dst), np.array(nbytes, dtype=np.float64), phase=PHASE_LOGITS_UP
        )
        return self._train(students, round_, UP)

    # --------------------------------------------------------------------------------- rounds
    def levels(self) -> list[list[tuple[int, int]]]:
        """(parent, child) pairs with data, grouped by the parent's depth, deepest level first."""
        topo = self.ctx.topology
        by_depth: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for n in range(topo.num_nodes):
            if self.is_leaf(n):
                continue
            for c in topo.children(n):
                if self.count(c) > 0:
                    by_depth[topo.depth(n)].append((n, c))
        return [by_depth[d] for d in sorted(by_depth, reverse=True)]

    def _sequential(self, node: int, round_: int, losses: dict[int, list[float]]) -> None:
        """The official demo's depth-first order: each child's subtree, then BSBODP(child, node)."""
        for child in self.ctx.topology.children(node):
            if self.count(child) == 0:
                continue
            if not self.is_leaf(child):
                self._sequential(child, round_, losses)
            for direction in (DOWN, UP):
                for n, v in self._step(direction, [(node, child)], round_).items():
                    losses[n].append(v)

    def run_round(self, round_: int) -> dict[str, Any]:
        """Scheduled migrations, edge failover/failback and device faults (module docstring), then one
        FEDAGG_TRAIN(root); returns losses, bytes per phase and, with a fault model, the fault counters."""
        system = self.ctx.system
        faults = system.faults
        system.begin_round(round_)
        self.wall.clear()
        self.trace.clear()
        self._idle, self._lost, self._moved = frozenset(), frozenset(), 0
        for m in self.cfg.migrations:
            if m.round == round_:
                node = self._node_id(m.node)
                self.displaced.pop(node, None)  # an explicit move makes the new parent its home
                self.migrate(node, self._node_id(m.new_parent))
        counts = self._apply_faults(round_) if faults.enabled else None
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
        if counts is not None:
            faults.record(round_, **counts)
            stats.update(fault_stats(faults, round_))
            stats["kept_previous_model"] = not losses.get(0)  # the cloud learns from live edges regardless
            stats["reparented"] = self._moved
        return stats

    def _step(self, direction: int, pairs: Sequence[tuple[int, int]], round_: int) -> dict[int, float]:
        """One directional step over ``pairs``; an upward step leaves out the children whose logits are lost
        this round (charged: their inference and the lost upload) and skips parents left with none."""
        if direction == DOWN:
            return self._down(pairs, round_)
        lost = [c for _, c in pairs if c in self._lost]
        if lost:
            self._charge_lost_logits(lost)
        kept = [(p, c) for p, c in pairs if c not in self._lost]
        return self._up(kept, round_) if kept else {}

    # --------------------------------------------------------------------------------- faults
    def _apply_faults(self, round_: int) -> dict[str, int]:
        """Failback, failover, then which devices sit the round out or lose their upload; the round's
        counters (system/faults.py ``COUNTERS``)."""
        ctx, system = self.ctx, self.ctx.system
        faults = system.faults
        self._moved = self._failback(round_) + self._failover(round_)
        devices = np.array(
            [d for d in ctx.topology.devices if self.store.count(ctx.ordinal(d)) > 0], dtype=np.int64
        )
        available = faults.available(round_, devices)
        reachable = faults.reachable(round_, devices)
        active = devices[available & reachable]
        samples = np.array([self.store.count(ctx.ordinal(int(d))) for d in active], dtype=np.float64)
        per_sample = np.array(
            [
                LEAF_STEP_PASSES * info.flops_train + info.flops_forward
                for info in (self.models.arch(int(d)).info for d in active)
            ],
            dtype=np.float64,
        )
        flops = samples * per_sample  # a leaf step on every sample, then teaching its parent
        nbytes = np.asarray(logit_bytes(self.num_classes, samples), dtype=np.float64)
        screen = screen_uploads(system, round_, active, flops, nbytes)
        self._charge_stragglers(screen, flops, nbytes)
        stragglers = screen.nodes[screen.straggler]
        self._idle = frozenset(int(d) for d in devices[~(available & reachable)]) | frozenset(
            int(d) for d in stragglers
        )
        self._lost = frozenset(int(d) for d in screen.nodes[screen.lost])
        arrived = int(screen.arrived.sum())
        return {
            "dropped": int((~available).sum()),
            "edge_down": int((available & ~reachable).sum()),
            "straggled": len(stragglers),
            "lost": len(self._lost),
            "arrived": arrived,
            "edges_failed": len(faults.failed_edges(round_)),
            "empty": int(arrived == 0),
        }

    def _failback(self, round_: int) -> int:
        """Displaced nodes whose home edge is reachable again move back under it; returns how many."""
        faults = self.ctx.system.faults
        moved = 0
        for node, home in sorted(self.displaced.items()):
            if bool(faults.reachable(round_, [home])[0]):
                del self.displaced[node]
                self.migrate(node, home)
                moved += 1
        return moved

    def _failover(self, round_: int) -> int:
        """Children of every failed edge (deepest first) move to :meth:`failover_target`; returns how many."""
        topo = self.ctx.topology
        failed = self.ctx.system.faults.failed_edges(round_)
        down = set(failed)
        moved = 0
        for edge in sorted(failed, key=lambda e: (-topo.depth(e), e)):
            for child in list(topo.children(edge)):
                if child in down:
                    continue  # a failed sub-edge was emptied first; it stays where it is
                self.displaced.setdefault(child, edge)  # a node displaced twice keeps its first home
                self.migrate(child, self.failover_target(edge, round_))
                moved += 1
        return moved

    def failover_target(self, edge: int, round_: int) -> int:
        """Where a child of failed ``edge`` goes in ``round_``: walking up from the edge's parent, the first
        ancestor with a live edge child gives the live edge with the fewest devices (ties: lowest id); an
        ancestor without one takes the child itself if it is reachable (the cloud always is)."""
        topo = self.ctx.topology
        faults = self.ctx.system.faults

        def live(node: int) -> bool:
            return bool(faults.reachable(round_, [node])[0])

        for ancestor in topo.path_to_root(edge)[1:]:
            edges = [c for c in topo.children(ancestor) if topo.tier(c) is Tier.EDGE and live(c)]
            if edges:
                return min(edges, key=lambda e: (len(topo.subtree_devices(e)), e))
            if live(ancestor):
                return ancestor
        return ROOT_ID

    def _charge_lost_logits(self, devices: Sequence[int]) -> None:
        """Each device inferred its logits and sent them up, but they were lost: inference + full upload."""
        system = self.ctx.system
        nodes = np.asarray(devices, dtype=np.int64)
        samples = np.array([self.count(int(d)) for d in nodes], dtype=np.float64)
        forward = np.array([self.models.arch(int(d)).info.flops_forward for d in nodes], dtype=np.float64)
        system.compute(nodes, samples * forward, phase=PHASE_TEACHER)
        system.transmit(
            nodes,
            system.topology.parent_array[nodes],
            np.asarray(logit_bytes(self.num_classes, samples), dtype=np.float64),
            phase=PHASE_LOST_UPLOAD,
        )

    def _charge_stragglers(self, screen: UploadScreen, flops: np.ndarray, nbytes: np.ndarray) -> None:
        """Stragglers received their teacher's logits (its inference and the transfer are charged), then are
        charged what they spent until the deadline (system/faults.py)."""
        idx = np.flatnonzero(screen.straggler)
        if not idx.size:
            return
        system = self.ctx.system
        nodes = screen.nodes[idx]
        parents = system.topology.parent_array[nodes]
        samples = np.array([self.store.count(self.ctx.ordinal(int(d))) for d in nodes], dtype=np.float64)
        forward = np.array([self.models.arch(int(p)).info.flops_forward for p in parents], dtype=np.float64)
        system.compute(parents, samples * forward, phase=PHASE_TEACHER)
        system.transmit(
            parents,
            nodes,
            np.asarray(logit_bytes(self.num_classes, samples), dtype=np.float64),
            phase=PHASE_LOGITS_DOWN,
        )
        charge_cut_and_lost(system, screen, flops, nbytes, lost=False)

    # ------------------------------------------------------------------------------ migration
    def _node_id(self, ref: int | str) -> int:
        topo = self.ctx.topology
        if isinstance(ref, str):
            for n in topo.nodes:
                if n.name == ref:
                    return n.id
            raise ConfigError(
                f"algorithm.migrations: no node named {ref!r}",
                hint="use a node id or a default name such as edge0 or dev3",
            )
        if not 0 <= int(ref) < topo.num_nodes:
            raise ConfigError(f"algorithm.migrations: node id {ref} is not in 0..{topo.num_nodes - 1}")
        return int(ref)

    def migrate(self, node: int, new_parent: int) -> dict[tuple[int, int], float]:
        """Re-parent ``node`` (with its subtree) under ``new_parent`` (Theorem 1) and send each subtree
        device's embeddings + labels hop by hop up the new path, to just below the first node that already
        holds them; each new holder decodes them once. Holders keep what they received (at INIT a device's
        ancestors, later the nodes migrations sent it to), so moving a device between two edges costs one hop
        the first time, and moving it back, or up to a node that holds its data, costs nothing.

        Charged to the system's current round; returns the bytes per (child, parent) link.
        """
        topo, system = self.ctx.topology, self.ctx.system
        old_path = topo.path_to_root(node)
        system.reparent(node, new_parent)
        new_path = topo.path_to_root(node)
        if new_path == old_path:
            return {}
        flows: list[tuple[list[int], float]] = []
        decoded: dict[int, int] = defaultdict(int)
        for device in topo.subtree_devices(node):
            held = self.holders[device]
            stop = next(i for i, n in enumerate(new_path) if i > 0 and n in held)  # the cloud holds all
            receivers = new_path[1:stop]
            held.update(receivers)
            samples = self.store.count(self.ctx.ordinal(device))
            if receivers and samples:
                flows.append((new_path[:stop], float(samples * self.bytes_per_sample)))
                for r in receivers:
                    decoded[r] += samples
        load = charge_paths(system, flows, phase=PHASE_MIGRATE_EMBED)
        if decoded:
            work = [float(self.dec_flops * k) for k in decoded.values()]
            system.compute(list(decoded), work, phase=PHASE_MIGRATE_DECODE)
        return load

    # -------------------------------------------------------------------------- checkpointing
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

    def _restore_parents(self, parents: np.ndarray) -> None:
        """Adopt a saved parent per node (-1 for the cloud) into this run's tree."""
        topo = self.ctx.topology
        if parents.shape != (topo.num_nodes,):
            raise DataError(
                f"FedAgg checkpoint: {parents.shape} parents for a tree of {topo.num_nodes} nodes",
                hint="resume with the config the checkpoint was written by",
            )
        if np.array_equal(parents, topo.parent_array):
            return
        tree = topo.to_dict()
        for entry in tree["nodes"]:
            parent = int(parents[entry["id"]])
            entry["parent"] = None if parent < 0 else parent
        topo.load_dict(tree)
        self.ctx.system.channel.refresh()

    # -------------------------------------------------------------------------------- metrics
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

    def _accuracy(self, node: int, full: bool = False) -> tuple[float, float]:
        """Test accuracy and loss of ``node``'s model (the full test set, or the fixed tier subset)."""
        x, y = (self.ctx.test_x, self.ctx.test_y) if full else self.tier_test
        return evaluate_state(self.models.module(node), None, x, y, self.ctx.cfg.eval.batch_size)

    def evaluate(self) -> dict[str, Any]:
        """Cloud accuracy and loss (full test set), plus ``accuracy_by_tier``: cloud, the mean over edges
        and the mean over the evaluated devices (a fixed seeded sample of ``eval_devices``), both tested on a
        fixed seeded subset of ``tier_eval_samples`` test samples, so many devices stay cheap to evaluate."""
        acc, loss = self._accuracy(0, full=True)
        edges = self.ctx.topology.edges
        edge_acc = [self._accuracy(e)[0] for e in edges]
        dev_acc = [self._accuracy(d)[0] for d in self.eval_devices]
        return {
            "accuracy": acc,
            "loss": loss,
            "accuracy_by_tier": {
                "cloud": acc,
                "edge": float(np.mean(edge_acc)) if edge_acc else None,
                "device": float(np.mean(dev_acc)) if dev_acc else None,
            },
        }


def _pairs(items: Iterable[tuple[int, int]]) -> np.ndarray:
    """Integer pairs as an (n, 2) int64 array (checkpoint-friendly)."""
    return np.array([(int(a), int(b)) for a, b in items], dtype=np.int64).reshape(-1, 2)


def _unpairs(table: Any, what: str) -> list[tuple[int, int]]:
    """Inverse of :func:`_pairs`; a malformed table is a DataError naming ``what``."""
    arr = np.asarray(table)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.dtype.kind not in "iu":
        raise DataError(f"FedAgg checkpoint: {what} is not an (n, 2) integer table", hint="it is corrupt")
    return [(int(a), int(b)) for a, b in arr]


# ------------------------------------------------------------------------------- autoencoder files
def _check_autoencoder_meta(meta: Mapping[str, Any], ac: AutoencoderConfig, shape: tuple[int, ...]) -> None:
    """ConfigError naming both values and the key when a loaded autoencoder file's metadata disagrees with
    the config (architecture, ``algorithm.autoencoder.embed_channels``) or the data's input shape; a run
    must never use a file other than the one its config describes. Keys a file lacks are checked by
    loading its tensors into the configured layout (a mismatch raises there)."""
    where = f"autoencoder file {ac.path} (algorithm.autoencoder.path)"
    arch = meta.get("architecture")
    if arch is not None and arch != ARCHITECTURE:
        raise ConfigError(
            f"{where} holds architecture {arch!r}; this version builds {ARCHITECTURE!r}",
            hint="pre-train a new file with `edgelearn pretrain-autoencoder`",
        )
    embed = meta.get("embed_channels")
    if embed is not None and int(embed) != ac.embed_channels:
        raise ConfigError(
            f"{where} has embed_channels={int(embed)} but algorithm.autoencoder.embed_channels="
            f"{ac.embed_channels}",
            hint=f"set algorithm.autoencoder.embed_channels: {int(embed)}, or pre-train a file with "
            f"{ac.embed_channels}",
        )
    saved = tuple(int(s) for s in meta.get("input_shape", ()))
    if saved != shape:
        raise ConfigError(
            f"{where} was trained for input shape {saved}, but the data (data.dataset, data.input_shape) "
            f"has {shape}",
            hint="pre-train an autoencoder on this dataset (edgelearn pretrain-autoencoder)",
        )


def _check_autoencoder_data(meta: Mapping[str, Any], ac: AutoencoderConfig, ctx: RunContext) -> None:
    """A loaded file must have been pre-trained on training samples no device of this run holds: refuse
    files pre-trained on the test split, files that do not record their samples' positions (written before
    the positions were recorded), files of another dataset, and files whose samples some device holds."""
    where = f"autoencoder file {ac.path} (algorithm.autoencoder.path)"
    redo = "pre-train a file for this config with `edgelearn pretrain-autoencoder`"
    if meta.get("source") == "test" or meta.get("split", "train") != "train":
        raise ConfigError(
            f"{where} was pre-trained on the test split: evaluation data would shape every bridge sample",
            hint=redo,
        )
    positions = meta.get("train_indices")
    if not isinstance(positions, list) or "indices_sha256" not in meta:
        raise ConfigError(
            f"{where} does not record which training samples it was pre-trained on, so the run cannot "
            "prove they are no device's",
            hint=redo,
        )
    if meta.get("dataset") != ctx.bundle.name:
        raise ConfigError(
            f"{where} was pre-trained on dataset {meta.get('dataset')!r}, this run uses {ctx.bundle.name!r}",
            hint=redo,
        )
    check_disjoint(
        np.asarray(positions, dtype=np.int64), device_train_index(ctx.bundle, ctx.parts), where=where
    )


def pretrain_autoencoder(ctx: RunContext, ac: AutoencoderConfig) -> tuple[Autoencoder, dict[str, Any]]:
    """Pre-train the bridge autoencoder on the context's held-out images (seeded by the run seed): what a run
    with ``autoencoder.path: null`` does at init, and what ``edgelearn pretrain-autoencoder`` saves."""
    return pretrain_on_heldout(
        ctx.bundle,
        ctx.parts,
        source=ac.source,
        max_samples=ac.max_samples,
        epochs=ac.epochs,
        lr=ac.lr,
        batch_size=ac.batch_size,
        embed_channels=ac.embed_channels,
        seed=ctx.seeds.int_seed(AUTOENCODER_SEED_PURPOSE) % SEED_BOUND,
        device=ctx.device,
    )
