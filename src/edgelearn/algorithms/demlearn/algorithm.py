"""DemLearn (Nguyen et al., "Self-organizing Democratized Learning: Towards Large-scale Distributed Learning
Systems", IEEE TNNLS 2022, arXiv:2007.03278) on the device/edge/cloud tree.

Devices learn locally; the cloud organizes their models into a hierarchy of groups by agglomerative
clustering, builds each group's *generalized* model bottom-up by averaging, then *specializes* top-down: every
group and device model moves toward its parent's. One round:

1. every device runs ``local_epochs`` of SGD from its own model (round 1: the cloud's initial model);
2. every device uploads its model to the cloud, hop by hop (edges relay);
3. every ``recluster_every`` rounds the cloud clusters the uploaded models into ``levels`` levels;
4. generalization, bottom-up: a group's model is the average of its children's, weighted by the number of
   devices below each child (so a group's model is the plain mean of its devices');
5. specialization, top-down: each group's model becomes ``(1 - alpha) * own + alpha * parent's``; each device
   downloads its parent group's model and sets ``(1 - alpha) * own + alpha * parent's``.

The delivered ("cloud-side") model is the root's generalized model, the mean of all device models, as in
FedAgg's Table II where DemLearn runs the device model M1 on every tier (Wu et al., INFOCOM 2024, §VI,
Table II: the cloud-side model is the one tested).

Assumptions, each taken from the official code (github.com/nhatminh/Dem-AI, ``Setting.py``,
``serverbase_dem.py``, ``hierrachical_clustering.py``) where the paper leaves it open:

* Clustering: average linkage on the devices' flattened trainable parameters, Euclidean (the code's
  ``"weight"``) or cosine distance; ``scipy.cluster.hierarchy.linkage`` instead of scikit-learn (same
  dendrogram up to the order of ties).
* Cutting the dendrogram into levels (``tree_construction``): the root (level ``levels + 1``) holds the two
  clusters of the last merge; a group at level L >= 2 holds the two clusters it was merged from; a group at
  level 1 holds all its devices directly; a cluster that is a single device is attached as that device at
  whatever level it appears.
* Re-clustering every round (``TREE_UPDATE_PERIOD = 1``), on the models after local training, before
  generalization. Generalization weights by device counts (the code), not data sizes; it is the code's hard
  update (``gamma = 1``) without its "Amplify" trick (x1.15 on early rounds).
* Specialization mixes with ``alpha = 0.7`` (``alpha_factor`` for Fashion-MNIST and CIFAR-10; 0.6 on MNIST);
  the root keeps its generalized model.
* Local learning: ``local_epochs = 2`` (``LOCAL_EPOCH``), plain SGD (``DemProx_SGD``, no momentum), FedAgg's
  shared lr 1e-3 and batch 8 (Wu et al., INFOCOM 2024, §VI), ``levels = 3`` (``K_Levels``; FedAgg does not
  state lv for CIFAR-10, and lv = 3 is DemLearn's best on CIFAR-100 in its Table III). ``mu > 0`` gives
  DemLearn-P's proximal term, but anchored at the start of local training (the engine's FedProx term; the
  code anchors at the parent group's model): default ``mu = 0``, plain DemLearn.
* Physical mapping: the hierarchy is logical and lives in the cloud (the edges only relay). Each distinct
  group model a device needs crosses its edge's backhaul once and each device link once; the mixing runs on
  the device. Downlink transfers follow ``channel.include_downlink`` as FedAvg's broadcast does.
* Costs: clustering is charged as the pairwise distances (``DISTANCE_FLOPS_PER_DIM`` per parameter per pair);
  averaging and mixing as :data:`~edgelearn.algorithms.comm.AGG_FLOPS_PER_PARAM` per parameter per model.
* Faults (``faults`` config, system/faults.py), as HierFAVG honours them: a device that is unavailable or sits
  below a failed edge (the cloud is out of reach; devices are not re-routed) skips the round and keeps its
  model; the initial model reaches a device in the first round it takes part. A straggler past the deadline
  (predicted: its local epochs, then its model's upload) is cut off, charged what it spent and keeps its
  model; a lost upload is charged in full and delivers nothing, and that device keeps its locally trained
  model. Clustering, generalization and specialization run over the devices whose model arrived: the
  hierarchy is pruned to them (re-clustered when one of them is missing from it); the root, their mean, is
  the delivered model. When nothing arrives every model is kept (``groups_by_level`` is empty).
* Only ``models.device`` is used: every group shares its architecture (averaging needs one); ``models.edge``
  and ``models.cloud`` are ignored (logged).

``accuracy_by_tier``: cloud = the root model (full test set); device = the mean over ``eval_devices`` (a fixed
seeded sample) of their specialized models on the fixed ``tier_eval_samples`` subset; edge = None (edges
hold no model).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from scipy.cluster.hierarchy import linkage as scipy_linkage

from edgelearn.algorithms.base import Algorithm, RunContext, local_spec
from edgelearn.algorithms.demlearn.config import DemLearnConfig
from edgelearn.algorithms.kit.comm import AGG_FLOPS_PER_PARAM, planned_samples, send_down, send_up
from edgelearn.algorithms.kit.nodes import (
    SERVER,
    accuracy_by_tier,
    bytes_by_phase,
    mean_accuracy,
    pick_eval_devices,
    tier_test_subset,
)
from edgelearn.algorithms.kit.tiers import make_arch, resolve_tier_models
from edgelearn.engine import Cohort, StateDict, average_states, clone_state, evaluate_state
from edgelearn.errors import ConfigError, DataError
from edgelearn.system.screen import RoundScreen

log = logging.getLogger(__name__)

# ========================================= end of the config block ==========================================

# Ledger phases of DemLearn events.
PHASE_BROADCAST = "dem_broadcast"
PHASE_TRAIN = "dem_train"
PHASE_UPLOAD = "dem_upload"
PHASE_CLUSTER = "dem_cluster"
PHASE_GENERALIZE = "dem_generalize"
PHASE_SPECIALIZE = "dem_specialize"
PHASE_DOWNLOAD = "dem_download"

DISTANCE_FLOPS_PER_DIM = 3
"""A squared-distance term costs a subtraction, a multiplication and an addition per parameter."""
MIX_MODELS = 2
"""A specialization mixes two models (own and parent's)."""


# ------------------------------------------------------------------------------------- the hierarchy
@dataclass
class Group:
    """A group of the DemLearn hierarchy: its level and its children (groups, or device node ids)."""

    level: int
    children: list[Group | int]
    index: int = field(default=-1, compare=False)
    """Preorder position in the hierarchy (0 = root), set by :func:`number_groups`."""

    def groups(self) -> Iterator[Group]:
        """This group and every group below it, in preorder."""
        yield self
        for c in self.children:
            if isinstance(c, Group):
                yield from c.groups()

    def members(self) -> list[int]:
        """Device node ids below this group, left to right."""
        out: list[int] = []
        for c in self.children:
            out.extend(c.members() if isinstance(c, Group) else [int(c)])
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for checkpoints)."""
        return {
            "level": self.level,
            "children": [c.to_dict() if isinstance(c, Group) else int(c) for c in self.children],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Group:
        """Inverse of :meth:`to_dict` (groups numbered in preorder)."""

        def build(d: Mapping[str, Any]) -> Group:
            kids = [build(c) if isinstance(c, Mapping) else int(c) for c in d["children"]]
            return Group(int(d["level"]), kids)

        return number_groups(build(data))


def number_groups(root: Group) -> Group:
    """Set every group's ``index`` to its preorder position; returns ``root``."""
    for i, g in enumerate(root.groups()):
        g.index = i
    return root


def build_hierarchy(
    vectors: np.ndarray,
    devices: Sequence[int],
    levels: int,
    *,
    linkage: str = "average",
    metric: str = "euclidean",
) -> Group:
    """Cluster ``vectors`` (one row per device) agglomeratively and cut the dendrogram into ``levels`` levels
    below the root, as Dem-AI's ``tree_construction`` does (module docstring)."""
    x = np.asarray(vectors, dtype=np.float64)
    n = len(devices)
    if x.ndim != 2 or x.shape[0] != n or n == 0:
        raise DataError(f"DemLearn clustering needs one vector per device: {x.shape} for {n} devices")
    if levels < 1:
        raise ConfigError(f"algorithm.levels must be >= 1, got {levels}")
    if not np.all(np.isfinite(x)):
        raise DataError(
            "DemLearn clustering: a device model has non-finite parameters",
            hint="training diverged; lower algorithm.local.lr",
        )
    if metric == "cosine" and np.any(np.linalg.norm(x, axis=1) == 0):
        raise DataError("DemLearn clustering: a device model is all zeros, its cosine distance is undefined")
    if n == 1:
        return number_groups(Group(levels + 1, [int(devices[0])]))
    merges = scipy_linkage(x, method=linkage, metric=metric)[:, :2].astype(np.int64)

    def leaves(cluster: int) -> list[int]:
        out, stack = [], [cluster]
        while stack:
            c = stack.pop()
            if c < n:
                out.append(int(devices[c]))
            else:
                a, b = merges[c - n]
                stack.extend((int(b), int(a)))  # left child popped first
        return out

    def make(cluster: int, level: int) -> Group | int:
        if cluster < n:
            return int(devices[cluster])
        if level == 1:
            return Group(1, leaves(cluster))
        a, b = merges[cluster - n]
        return Group(level, [make(int(a), level - 1), make(int(b), level - 1)])

    a, b = merges[-1]
    return number_groups(Group(levels + 1, [make(int(a), levels), make(int(b), levels)]))


def parents(root: Group) -> dict[int, Group]:
    """The group each device hangs from."""
    return {int(c): g for g in root.groups() for c in g.children if not isinstance(c, Group)}


def generalize(root: Group, device_states: Mapping[int, StateDict]) -> list[StateDict]:
    """Every group's model, bottom-up: the mean of its children's weighted by devices below (by index)."""
    out: list[StateDict] = [{} for _ in root.groups()]

    def visit(g: Group) -> int:
        parts, weights = [], []
        for c in g.children:
            if isinstance(c, Group):
                weights.append(visit(c))
                parts.append(out[c.index])
            else:
                weights.append(1)
                parts.append(device_states[int(c)])
        out[g.index] = average_states(parts, [float(w) for w in weights])
        return sum(weights)

    visit(root)
    return out


def prune(root: Group, keep: set[int]) -> Group | None:
    """The hierarchy restricted to the devices in ``keep``: other devices, and groups left empty, are dropped
    (levels kept, groups renumbered in preorder); None when no device is kept."""

    def visit(g: Group) -> Group | None:
        kids: list[Group | int] = []
        for c in g.children:
            if isinstance(c, Group):
                sub = visit(c)
                if sub is not None:
                    kids.append(sub)
            elif int(c) in keep:
                kids.append(int(c))
        return Group(g.level, kids) if kids else None

    out = visit(root)
    return None if out is None else number_groups(out)


def mix(own: StateDict, parent: StateDict, alpha: float) -> StateDict:
    """``(1 - alpha) * own + alpha * parent`` (integer buffers keep the larger), in new storage."""
    return average_states([own, parent], [1.0 - alpha, alpha])


def specialize(
    root: Group, group_states: Sequence[StateDict], device_states: Mapping[int, StateDict], alpha: float
) -> tuple[list[StateDict], dict[int, StateDict]]:
    """Top-down: each child group and device mixed with its (already specialized) parent; the root unchanged.

    Returns the new group states (by index) and the new states of the hierarchy's devices.
    """
    groups = list(group_states)
    devices: dict[int, StateDict] = {}

    def visit(g: Group) -> None:
        for c in g.children:
            if isinstance(c, Group):
                groups[c.index] = mix(groups[c.index], groups[g.index], alpha)
                visit(c)
            else:
                devices[int(c)] = mix(device_states[int(c)], groups[g.index], alpha)

    visit(root)
    return groups, devices


def flat_parameters(states: Sequence[StateDict], names: Sequence[str]) -> np.ndarray:
    """One row per state: the named tensors flattened and concatenated (float64, on the host)."""
    rows = [torch.cat([s[k].detach().reshape(-1).to(torch.float64) for k in names]) for s in states]
    return torch.stack(rows).cpu().numpy()


# ---------------------------------------------------------------------------------------- algorithm
class DemLearn(Algorithm):
    """DemLearn over the tree: devices learn, the cloud clusters, generalizes and specializes.

    ``algo_cfg`` lets tests and scripts run it on a context built from another algorithm's config.
    """

    name = "demlearn"

    def __init__(self, ctx: RunContext, algo_cfg: DemLearnConfig | None = None) -> None:
        super().__init__(ctx)
        if algo_cfg is not None:
            self.cfg = algo_cfg
        if not isinstance(self.cfg, DemLearnConfig):
            raise ConfigError(
                f"DemLearn needs an algorithm section of type DemLearnConfig, got {type(self.cfg).__name__}",
                hint="set algorithm.name: demlearn",
            )

    def init(self) -> None:
        """The device architecture, one common initial model cloned per device, the evaluation plan."""
        ctx, cfg = self.ctx, self.cfg
        shape = tuple(int(s) for s in ctx.bundle.input_shape)
        tiers = resolve_tier_models(cfg.models, shape)
        ignored = [t for t in ("edge", "cloud") if getattr(cfg.models, t) not in (None, tiers["device"])]
        if ignored:
            log.warning("demlearn runs models.device on every tier; models.%s ignored", "/".join(ignored))
        self.arch = make_arch(tiers["device"], shape, int(ctx.bundle.num_classes))
        self.devices = [int(d) for d in ctx.topology.devices if ctx.data_size(int(d)) > 0]
        if not self.devices:
            raise DataError("demlearn: no device holds any training sample", hint="use fewer devices")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seeds.int_seed("init"))
            module = self.arch.model_fn()
        self.param_names = [n for n, _ in module.named_parameters()]
        initial = {k: v.detach().to(ctx.device, copy=True) for k, v in module.state_dict().items()}
        self.cloud_state: StateDict = initial
        self.device_states: dict[int, StateDict] = {d: clone_state(initial) for d in self.devices}
        self.root: Group | None = None
        self.group_states: list[StateDict] = []
        self.joined: set[int] = set()
        """Devices that received the initial model (in their first round taking part)."""
        self.eval_devices = pick_eval_devices(ctx, self.devices, cfg.eval_devices, "demlearn_eval")
        self.tier_test = tier_test_subset(ctx, cfg.tier_eval_samples, "demlearn_eval")
        self._module: torch.nn.Module | None = None

    def _cluster(self, round_: int) -> bool:
        """Whether this round re-clusters (always before any hierarchy exists)."""
        return self.root is None or (round_ - 1) % self.cfg.recluster_every == 0

    def run_round(self, round_: int) -> dict[str, Any]:
        """Local training, upload, (re-)clustering, generalization, specialization and download, over the
        devices whose upload arrived (module docstring, faults); nothing arriving keeps every model."""
        ctx, cfg, system = self.ctx, self.cfg, self.ctx.system
        nbytes = self.arch.info.param_bytes
        downlink = ctx.cfg.channel.include_downlink
        system.begin_round(round_)
        screen = RoundScreen.open(system, round_, self.devices)
        active = screen.active
        fresh = [int(d) for d in active if int(d) not in self.joined]
        if fresh and downlink:  # a device's first round: the cloud's initial model reaches it
            send_down(system, fresh, nbytes, phase=PHASE_BROADCAST)
        self.joined.update(fresh)
        sizes = np.array([ctx.data_size(int(d)) for d in active], dtype=np.float64)
        flops = planned_samples(sizes, cfg.local) * float(self.arch.info.flops_train)
        screen.screen(flops, nbytes)
        trainers = [int(d) for d in screen.trainers]
        trained, losses = self._train(round_, trainers)
        screen.charge()
        arrived = [int(d) for d in screen.arrived]
        send_up(system, arrived, nbytes, phase=PHASE_UPLOAD)
        for d in screen.lost:  # trained, but the cloud never saw it: it keeps its own model
            self.device_states[int(d)] = trained[int(d)]
        groups: list[Group] = []
        if arrived:
            groups = self._organize(round_, arrived, trained)
        system.end_round()
        by_level: dict[str, int] = {}
        for g in groups:
            by_level[str(g.level)] = by_level.get(str(g.level), 0) + 1
        stats: dict[str, Any] = {
            "train_loss": float(np.nanmean(losses)) if losses else float("nan"),
            "groups_by_level": dict(sorted(by_level.items())),
            "bytes_by_phase": bytes_by_phase(system, round_),
        }
        stats.update(screen.close())
        return stats

    def _train(self, round_: int, nodes: Sequence[int]) -> tuple[dict[int, StateDict], list[float]]:
        """``local_epochs`` of SGD on each of ``nodes`` from its own model, FLOPs charged; returns the trained
        states and the training losses."""
        ctx, cfg = self.ctx, self.cfg
        if not nodes:
            return {}, []
        n = len(nodes)
        cohort = Cohort(
            model_fn=self.arch.model_fn,
            arch_key=self.arch.key,
            data=[ctx.client_data[ctx.ordinal(d)] for d in nodes],
            starts=[self.device_states[d] for d in nodes],
            start_of=np.arange(n),
            group_of=np.zeros(n, dtype=np.int64),
            num_groups=1,
            weights=np.ones(n),
            seeds=ctx.client_seeds("demlearn_train", round_, nodes),
            keep_states=True,
            client_ids=np.asarray(nodes, dtype=np.int64),
        )
        spec = replace(local_spec(cfg.local), prox_mu=cfg.mu)
        result = ctx.executor.train(cohort, spec)
        self.check_finite(result, nodes, round_)
        assert result.client_states is not None
        ctx.system.compute(nodes, result.samples * float(self.arch.info.flops_train), phase=PHASE_TRAIN)
        return dict(zip(nodes, result.client_states)), [float(v) for v in result.train_loss]

    def _organize(self, round_: int, arrived: Sequence[int], trained: Mapping[int, StateDict]) -> list[Group]:
        """Cluster (when due, or when an arrived device is missing from the hierarchy), then generalize and
        specialize over the arrived devices' branch of the hierarchy; returns that branch's groups."""
        cfg, system = self.cfg, self.ctx.system
        params, nbytes = self.arch.info.params, self.arch.info.param_bytes
        known = set() if self.root is None else set(self.root.members())
        if self._cluster(round_) or not set(arrived) <= known:
            vectors = flat_parameters([trained[d] for d in arrived], self.param_names)
            self.root = build_hierarchy(vectors, arrived, cfg.levels, linkage=cfg.linkage, metric=cfg.metric)
            n = len(arrived)
            if n > 1:
                pairs = n * (n - 1) / 2
                system.compute(SERVER, DISTANCE_FLOPS_PER_DIM * params * pairs, phase=PHASE_CLUSTER)
        assert self.root is not None
        root = prune(self.root, set(arrived))
        assert root is not None  # every arrived device is in the hierarchy
        groups = list(root.groups())
        general = generalize(root, trained)
        system.compute(
            np.full(len(groups), SERVER),
            np.array([AGG_FLOPS_PER_PARAM * params * len(g.children) for g in groups], dtype=np.float64),
            phase=PHASE_GENERALIZE,
        )
        self.group_states, special = specialize(root, general, trained, cfg.alpha)
        if len(groups) > 1:
            system.compute(
                SERVER, AGG_FLOPS_PER_PARAM * params * MIX_MODELS * (len(groups) - 1), phase=PHASE_SPECIALIZE
            )
        if self.ctx.cfg.channel.include_downlink:
            for g in groups:
                below = [int(c) for c in g.children if not isinstance(c, Group)]
                if below:
                    send_down(system, below, nbytes, phase=PHASE_DOWNLOAD)
        system.compute(list(arrived), AGG_FLOPS_PER_PARAM * params * MIX_MODELS, phase=PHASE_SPECIALIZE)
        self.device_states.update(special)
        self.cloud_state = self.group_states[0]
        return groups

    # ------------------------------------------------------------------------------ metrics
    def delivered_state(self) -> StateDict:
        """The root's generalized model (the initial model before round 1)."""
        return self.cloud_state

    def _accuracy(self, state: StateDict, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        if self._module is None:
            self._module = self.arch.model_fn().to(self.ctx.device)
        return evaluate_state(self._module, state, x, y, self.ctx.cfg.eval.batch_size)

    def evaluate(self) -> dict[str, Any]:
        """Root accuracy and loss (full test set) and ``accuracy_by_tier`` (module docstring)."""
        acc, loss = self._accuracy(self.cloud_state, self.ctx.test_x, self.ctx.test_y)
        x, y = self.tier_test
        members = [(self.arch, self.device_states[d]) for d in self.eval_devices]
        devices = mean_accuracy(self.ctx.executor, members, x, y, self.ctx.cfg.eval.batch_size)
        return {"accuracy": acc, "loss": loss, "accuracy_by_tier": accuracy_by_tier(acc, None, devices)}

    def summary_extras(self) -> dict[str, Any]:
        """summary.json entries: the model every tier runs, the latest hierarchy and the fault totals."""
        extras: dict[str, Any] = {
            "models_by_tier": {"device": {self.arch.name: {"params": self.arch.info.params}}},
        }
        faults = self.ctx.system.faults
        if faults.enabled:
            extras["faults"] = faults.totals()
        if self.root is not None:
            extras["hierarchy"] = self.root.to_dict()
        return extras

    # -------------------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Device and group states, the hierarchy, the delivered model (all replaced, never mutated) and the
        devices that received the initial model."""
        return {
            "device_states": dict(self.device_states),
            "group_states": list(self.group_states),
            "cloud_state": self.cloud_state,
            "tree": None if self.root is None else self.root.to_dict(),
            "joined": np.array(sorted(self.joined), dtype=np.int64),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output after :meth:`init` (checkpoints turn node ids into strings)."""
        saved = {int(n): s for n, s in dict(state.get("device_states", {})).items()}
        if set(saved) != set(self.device_states):
            raise DataError(
                "demlearn checkpoint: its device states do not match this run's devices",
                hint="resume with the config the checkpoint was written by",
            )
        device = self.ctx.device

        def move(s: Mapping[str, torch.Tensor]) -> StateDict:
            return {k: v.to(device, copy=True) for k, v in s.items()}

        self.device_states = {n: move(s) for n, s in saved.items()}
        self.group_states = [move(s) for s in state.get("group_states", [])]
        self.cloud_state = move(state["cloud_state"])
        tree = state.get("tree")
        self.root = None if tree is None else Group.from_dict(tree)
        joined = state.get("joined")  # absent before faults: every device got the model in round 1
        self.joined = set(self.devices) if joined is None else {int(d) for d in np.asarray(joined).ravel()}
