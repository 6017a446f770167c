"""What every algorithm sees (the run context) and the small contract it implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from edgelearn.algorithms.kit.tiers import resolve_tier_models
from edgelearn.data import DatasetBundle
from edgelearn.engine import ClientData, Cohort, CohortResult, Executor, LocalSpec, StateDict, evaluate_state
from edgelearn.engine.threads import Workload
from edgelearn.errors import DivergenceError
from edgelearn.models import ModelInfo
from edgelearn.seeding import Seeds
from edgelearn.system import SystemModel, Topology

if TYPE_CHECKING:  # the run config is assembled above the algorithms
    from edgelearn.run_config import RunConfig


@dataclass
class RunContext:
    """Everything built from a config that algorithms share: data, tree, physics, executor, model."""

    cfg: RunConfig
    seeds: Seeds
    device: torch.device
    bundle: DatasetBundle
    test_x: torch.Tensor
    test_y: torch.Tensor
    parts: list[np.ndarray]  # per device ordinal: indices into the train set
    client_data: list[ClientData]  # per device ordinal, on `device`
    topology: Topology
    system: SystemModel
    executor: Executor
    model_fn: Callable[[], nn.Module]
    arch_key: str
    info: ModelInfo
    extras: dict[str, Any] = field(default_factory=dict)  # what an algorithm's prepare_data added
    torch_threads: dict[str, Any] = field(default_factory=dict)  # the ThreadChoice (engine/threads.py)

    def init_state(self) -> StateDict:
        """A freshly initialised model state, seeded from the run seed ('init' stream)."""
        torch.manual_seed(self.seeds.int_seed("init"))
        return {k: v.detach().clone() for k, v in self.model_fn().to(self.device).state_dict().items()}

    def ordinal(self, node: int) -> int:
        """Data-partition index of a device node."""
        return self.topology.device_ordinal(node)

    def data_size(self, node: int) -> int:
        """Number of local training samples of a device node."""
        return len(self.client_data[self.ordinal(node)])

    def data_sizes(self, nodes: Sequence[int] | np.ndarray) -> np.ndarray:
        """Numbers of local training samples of many device nodes (vectorized :meth:`data_size`)."""
        ids = np.asarray(nodes, dtype=np.int64)
        sizes = np.fromiter((len(d) for d in self.client_data), dtype=np.int64, count=len(self.client_data))
        return sizes[self.topology.device_ordinals(ids)]

    def client_seeds(self, purpose: str, round_: int, nodes: Sequence[int] | np.ndarray) -> np.ndarray:
        """Per-client integer seeds for batch orders, keyed by (round, node) so executors agree.

        Derived for the whole cohort in one vectorized pass, equal to ``seeds.int_seed(purpose, round_, n)``.
        """
        return self.seeds.int_seeds(purpose, int(round_), np.asarray(nodes, dtype=np.int64).reshape(-1))

    def cohort(
        self,
        nodes: Sequence[int],
        starts: Sequence[StateDict],
        start_of: Sequence[int],
        group_of: Sequence[int],
        num_groups: int,
        round_: int,
        **kwargs: Any,
    ) -> Cohort:
        """A cohort of device nodes weighted by local data size, with per-(round, node) batch seeds."""
        ordinals = self.topology.device_ordinals(np.asarray(nodes, dtype=np.int64).reshape(-1)).tolist()
        data = [self.client_data[k] for k in ordinals]
        kwargs.setdefault("weights", np.fromiter((len(d) for d in data), dtype=np.float64, count=len(data)))
        return Cohort(
            model_fn=self.model_fn,
            arch_key=self.arch_key,
            data=data,
            starts=starts,
            start_of=np.asarray(start_of, dtype=np.int64),
            group_of=np.asarray(group_of, dtype=np.int64),
            num_groups=num_groups,
            seeds=self.client_seeds("train", round_, nodes),
            client_ids=np.asarray(nodes, dtype=np.int64),
            **kwargs,
        )


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_device(v, device) for v in obj]
    return obj


def local_spec(local: Any) -> LocalSpec:
    """LocalSpec from a LocalTrainConfig section."""
    return LocalSpec(
        lr=local.lr,
        batch_size=local.batch_size,
        epochs=local.epochs,
        steps=local.steps,
        momentum=local.momentum,
        weight_decay=local.weight_decay,
    )


class Algorithm(ABC):
    """An algorithm: ``init`` once, ``run_round`` per round, ``evaluate`` the model it delivers.

    It never trains devices itself: it builds cohorts and calls ``ctx.executor.train``; it reports what
    moved and what was computed to ``ctx.system``, which prices it in the ledger.
    """

    name: ClassVar[str]
    # Attributes holding everything a checkpoint must restore (model states and the like).
    checkpoint_attrs: ClassVar[tuple[str, ...]] = ()
    reparents_mid_run: ClassVar[bool] = False
    """Whether a node may move to another parent between rounds of a run (:meth:`schedule_reparenting`):
    FedAgg's migration (Wu et al., INFOCOM 2024, Theorem 1) keeps its learning valid on the new tree, so a
    planned edge association can be executed mid-run (``plan.associate_round``). Averaging algorithms
    (FedAvg, HierFAVG) fix their tree at the start. A plugin opts in by setting this and overriding
    :meth:`schedule_reparenting`."""

    @classmethod
    def prepare_data(
        cls, cfg: RunConfig, bundle: DatasetBundle, seeds: Seeds
    ) -> tuple[DatasetBundle, dict[str, Any]]:
        """Reshape the loaded dataset before it is partitioned (e.g. carve general vs task data).

        Returns the bundle whose train split the devices share and whose test split measures accuracy, plus
        extras stored on the RunContext. The default keeps the bundle as loaded.
        """
        return bundle, {}

    @classmethod
    def holdout_size(cls, cfg: RunConfig) -> int:
        """Training samples this algorithm needs held out before partitioning (``data.holdout: null``).

        The runner removes a seeded, class-stratified slice of this size from the training split before
        ``data.max_train`` and partitioning (``bundle.holdout``), so no device ever holds it; an explicit
        ``data.holdout`` overrides the answer for every algorithm. The default asks for none.
        """
        return 0

    @classmethod
    def thread_workloads(
        cls, cfg: RunConfig, info: ModelInfo, input_shape: Sequence[int], num_classes: int, topology: Topology
    ) -> list[Workload]:
        """The training steps a run makes, sized before it starts, for ``engine.torch_threads: auto``.

        The default: every device trains the run's model (``cfg.model``, measured as ``info``) at the
        section's mini-batch (``local.batch_size``, else ``batch_size``); a section with per-tier ``models``
        (FedAgg and the baselines) trains those instead: the devices', edges' and cloud's at that batch.
        """
        section = cfg.algorithm
        local = getattr(section, "local", None)
        batch = int(getattr(local, "batch_size", None) or getattr(section, "batch_size", 1))
        devices = topology.num_devices
        models = getattr(section, "models", None)
        if models is None:
            return [Workload(f"device {cfg.model.name}", info.flops_train, batch, devices, info.params)]
        from edgelearn.models import describe

        counts = {"device": devices, "edge": len(topology.edges), "cloud": 1}
        out = []
        for tier, model in resolve_tier_models(models, input_shape).items():
            tinfo = describe(model.name, input_shape, num_classes, **model.options)
            clients = max(1, counts[tier])
            out.append(Workload(f"{tier} {model.name}", tinfo.flops_train, batch, clients, tinfo.params))
        return out

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg.algorithm
        self._eval_module: nn.Module | None = None

    @property
    def rounds(self) -> int:
        """Number of rounds this algorithm runs."""
        return int(self.cfg.rounds)

    @abstractmethod
    def init(self) -> None:
        """Create the initial models (and charge any one-off setup, such as FedAgg's embeddings)."""

    @abstractmethod
    def run_round(self, round_: int) -> dict[str, Any]:
        """One round (1-based); returns per-round statistics such as the mean training loss."""

    def schedule_reparenting(
        self, round_: int, moves: Mapping[int, int], then: Callable[[], None] | None = None
    ) -> None:
        """Move each node in ``moves`` under its new parent (node id -> parent id) at the start of round
        ``round_``, charged to that round as the algorithm's own re-parenting is, then call ``then`` (before
        the round's work; the runner sets the operating point planned for the new tree there). Only for
        algorithms with :attr:`reparents_mid_run`; call it before the run's first round."""
        raise NotImplementedError(f"{type(self).__name__} cannot re-parent nodes mid-run")

    @abstractmethod
    def delivered_state(self) -> StateDict:
        """The state of the model the algorithm delivers (the cloud's)."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint stores for this algorithm: the attributes named in ``checkpoint_attrs``."""
        return {name: getattr(self, name) for name in self.checkpoint_attrs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output after :meth:`init` (tensors are moved to the run's device)."""
        for name in self.checkpoint_attrs:
            setattr(self, name, _to_device(state[name], self.ctx.device))

    def check_finite(self, result: CohortResult, nodes: Sequence[int], round_: int) -> None:
        """Stop with a DivergenceError naming the round, tier and node whose training loss is NaN/inf.

        Clients that trained on no sample report NaN by convention and are not flagged.
        """
        bad = np.flatnonzero(~np.isfinite(result.train_loss) & (result.samples > 0))
        if len(bad):
            node = int(nodes[int(bad[0])])
            raise DivergenceError(
                f"training diverged in round {round_}: tier {self.ctx.topology.tier(node).value}, "
                f"node {node} "
                f"({self.ctx.topology.nodes[node].name}) has a non-finite loss",
                hint="lower the learning rate; the run directory keeps the last good checkpoint (--resume)",
            )

    def summary_extras(self) -> dict[str, Any]:
        """Algorithm-specific entries for summary.json (e.g. a two-stage plan's predictions)."""
        return {}

    def evaluate(self) -> dict[str, Any]:
        """Test accuracy and loss of the delivered model."""
        if self._eval_module is None:
            self._eval_module = self.ctx.model_fn().to(self.ctx.device)
        acc, loss = evaluate_state(
            self._eval_module,
            self.delivered_state(),
            self.ctx.test_x,
            self.ctx.test_y,
            self.ctx.cfg.eval.batch_size,
        )
        return {"accuracy": acc, "loss": loss}
