"""Machinery the tier algorithms share and no algorithm owns: every node's own model (:class:`NodeModels`),
per-phase byte counts, the fixed seeded samples of per-node evaluation and the tier accuracies (faults, with
per-device payloads too, are screened and charged by :class:`edgelearn.system.screen.RoundScreen`). FedAgg
(Wu et al., INFOCOM 2024), FedGKT (He et al., NeurIPS 2020), FedDKC and DemLearn import it instead of each
other, and so can a plugin algorithm.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from edgelearn.algorithms.base import RunContext
from edgelearn.algorithms.kit.tiers import TierArch, make_arch
from edgelearn.config import ModelConfig
from edgelearn.engine import Executor, StateDict
from edgelearn.engine.infer import InferCohort, InferSpec, predictions
from edgelearn.system import SystemModel, Topology

SERVER = 0
"""The cloud's node id: the server of FedGKT-style algorithms and the root of every tree."""

EVAL_DEVICES_STREAM, TIER_TEST_STREAM = 0, 1
"""Sub-streams of an algorithm's evaluation seed purpose: which devices, which test samples."""


# ------------------------------------------------------------------------------------ per-node models
class NodeModels:
    """Every node's own model: an architecture per node and a state per node, never shared between nodes.

    Inference goes through the executor (``executor.infer``, given each node's architecture and state);
    :meth:`module` keeps one module per architecture, loaded with a node's state, for single-model uses.
    """

    def __init__(self, archs: Mapping[str, TierArch], arch_of: Mapping[int, str], device: torch.device):
        self.archs = dict(archs)
        self.arch_of = dict(arch_of)
        self.device = device
        self.states: dict[int, StateDict] = {}
        self._modules: dict[str, nn.Module] = {}

    @classmethod
    def build(
        cls,
        topology: Topology,
        tier_models: Mapping[str, ModelConfig],
        input_shape: Sequence[int],
        num_classes: int,
        *,
        init_seed: Callable[[int], int],
        device: torch.device,
        overrides: Mapping[int, ModelConfig] | None = None,
    ) -> NodeModels:
        """Architectures from ``tier_models`` (``overrides`` per node id win) and freshly seeded states.

        Node ``n``'s weights are drawn after ``torch.manual_seed(init_seed(n))``; the caller's torch RNG is
        restored afterwards.
        """
        archs: dict[str, TierArch] = {}
        arch_of: dict[int, str] = {}
        by_cfg: dict[str, TierArch] = {}
        for node in topology.nodes:
            cfg = (overrides or {}).get(node.id) or tier_models[node.tier.value]
            ident = cfg.model_dump_json()
            if ident not in by_cfg:
                by_cfg[ident] = make_arch(cfg, input_shape, num_classes)
            arch = by_cfg[ident]
            archs[arch.key] = arch
            arch_of[node.id] = arch.key
        models = cls(archs, arch_of, device)
        with torch.random.fork_rng(devices=[]):
            for node in topology.nodes:
                torch.manual_seed(init_seed(node.id))
                module = models.arch(node.id).model_fn()
                models.states[node.id] = {
                    k: v.detach().to(device, copy=True) for k, v in module.state_dict().items()
                }
        return models

    def arch(self, node: int) -> TierArch:
        """The architecture of node ``node``."""
        return self.archs[self.arch_of[int(node)]]

    def members(self, nodes: Sequence[int]) -> list[tuple[TierArch, StateDict]]:
        """(architecture, current state) of each of ``nodes``: what :func:`mean_accuracy` evaluates."""
        return [(self.arch(n), self.states[int(n)]) for n in nodes]

    def module(self, node: int) -> nn.Module:
        """The shared inference module of ``node``'s architecture, loaded with ``node``'s state."""
        arch = self.arch(node)
        module = self._modules.get(arch.key)
        if module is None:
            module = arch.model_fn().to(self.device)
            self._modules[arch.key] = module
        module.load_state_dict(self.states[int(node)])
        return module


def bytes_by_phase(system: SystemModel, round_: int) -> dict[str, float]:
    """Bytes (up + down) per ledger phase in ``round_``, phases without bytes left out."""
    totals = system.ledger.round_totals(round_)["by_phase"]
    return {
        p: v["bytes_up"] + v["bytes_down"]
        for p, v in sorted(totals.items())
        if v["bytes_up"] + v["bytes_down"]
    }


# -------------------------------------------------------------------------------------- evaluation
def pick_eval_devices(ctx: RunContext, devices: Sequence[int], k: int | None, purpose: str) -> list[int]:
    """A fixed seeded sample of ``k`` devices (all when ``k`` is None), sorted."""
    count = len(devices) if k is None else min(int(k), len(devices))
    rng = ctx.seeds.rng(purpose, EVAL_DEVICES_STREAM)
    return sorted(int(d) for d in rng.choice(np.asarray(devices, dtype=np.int64), size=count, replace=False))


def tier_test_subset(ctx: RunContext, samples: int | None, purpose: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed seeded subset of ``samples`` test samples (all when None) for per-node accuracies."""
    n_test = len(ctx.test_y)
    m = n_test if samples is None else min(int(samples), n_test)
    picked = np.sort(ctx.seeds.rng(purpose, TIER_TEST_STREAM).choice(n_test, size=m, replace=False))
    index = torch.as_tensor(picked, dtype=torch.long, device=ctx.test_y.device)
    return ctx.test_x[index], ctx.test_y[index]


def node_accuracies(
    executor: Executor,
    members: Sequence[tuple[TierArch, StateDict]],
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int | None,
) -> list[float]:
    """Test accuracy (0..1) of each node model (its architecture and state) on ``(x, y)``, in order.

    The models infer through the executor, one ``infer`` call per architecture with ``x`` shared by all
    (vmapped or spread over Ray workers where the executor does that), predicting classes in batches of
    ``batch_size`` (None: the device's evaluation default). The serial executor reproduces
    :func:`~edgelearn.engine.evaluate_state`'s accuracies exactly: same batches, same argmax.
    """
    by_arch: dict[str, list[int]] = {}
    for j, (arch, _) in enumerate(members):
        by_arch.setdefault(arch.key, []).append(j)
    n = max(1, len(y))
    out = [0.0] * len(members)
    spec = InferSpec(batch_size=batch_size, output=predictions)
    for picked in by_arch.values():
        arch = members[picked[0]][0]
        cohort = InferCohort(arch.model_fn, arch.key, [members[j][1] for j in picked], x)
        for j, predicted in zip(picked, executor.infer(cohort, spec).output()):
            out[j] = int((predicted == y).sum()) / n
    return out


def mean_accuracy(
    executor: Executor,
    members: Sequence[tuple[TierArch, StateDict]],
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int | None,
) -> float | None:
    """Mean test accuracy of several node models (:func:`node_accuracies`) on ``(x, y)``; None when there
    are none (a tier without models)."""
    accuracies = node_accuracies(executor, members, x, y, batch_size)
    return float(np.mean(accuracies)) if accuracies else None


def accuracy_by_tier(cloud: float, edge: float | None, device: float | None) -> dict[str, float | None]:
    """The ``accuracy_by_tier`` metric every tier algorithm reports: the delivered model's accuracy and the
    mean accuracy of the edge and device models (None for a tier without models)."""
    return {"cloud": cloud, "edge": edge, "device": device}
