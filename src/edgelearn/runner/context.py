"""Build everything a config describes: data, partition, tree, physics, executor and model."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

from edgelearn.algorithms.base import RunContext
from edgelearn.algorithms.registry import algorithm_class
from edgelearn.data import load_dataset, partition
from edgelearn.data.dataset import split_holdout, subsample_train
from edgelearn.engine import ClientData, make_executor, resolve_device
from edgelearn.engine.precision import set_precision
from edgelearn.engine.threads import apply_threads, choose_threads
from edgelearn.memory import check_memory
from edgelearn.models import build_model, model_info
from edgelearn.run_config import RunConfig
from edgelearn.seeding import Seeds
from edgelearn.system import ChannelSpec, HardwareSpec, SystemModel, Tier, Topology
from edgelearn.system.faults import FaultModel

if TYPE_CHECKING:
    pass


log = logging.getLogger(__name__)


def build_topology(cfg: RunConfig) -> Topology:
    """The tree from the ``topology`` section (flat, edges x devices, or an explicit nested tree)."""
    t = cfg.topology
    if t.tree is not None:
        return Topology.from_spec(t.tree)
    if t.edges > 0:
        return Topology.hierarchical(t.edges, t.devices_per_edge, cloud_devices=t.cloud_devices)
    return Topology.flat(int(t.devices))


def build_system(cfg: RunConfig, topology: Topology, seeds: Seeds) -> SystemModel:
    """Hardware per tier, channel and ledger over the tree."""
    specs = {tier: HardwareSpec(**_spec_numbers(cfg, tier)) for tier in Tier}
    ch = cfg.channel.model_dump()
    ch.pop("include_downlink")
    system = SystemModel.build(topology, specs, ChannelSpec(**ch), seeds)
    system.attach_faults(FaultModel.from_config(cfg.faults, topology, seeds))
    return system


def _spec_numbers(cfg: RunConfig, tier: Tier) -> dict[str, Any]:
    """A tier's resolved hardware section without its profile name: the kind and numbers a spec takes."""
    fields = getattr(cfg.hardware, tier.value).model_dump()
    fields.pop("profile", None)
    return fields


def build_context(cfg: RunConfig) -> RunContext:
    """Load data, split it over the devices, and build the tree, physics, executor and model."""
    seeds = Seeds(cfg.seed)
    device = resolve_device(cfg.device)
    set_precision(cfg.engine.precision, device)
    check_memory(cfg)  # before loading: sizes that cannot fit fail now, not when the OS kills the run
    d = cfg.data
    options: dict[str, Any] = {}
    if d.dataset == "digits":
        options["test_fraction"] = d.test_fraction
    elif d.dataset == "synthetic":
        options.update(
            num_train=d.num_train, num_test=d.num_test, num_classes=d.num_classes, input_shape=d.input_shape
        )
    elif d.dataset == "cifar100":
        options["label_mode"] = d.label_mode
    options.update(d.options)  # a plugin dataset's loader options (checked against what it declared)
    bundle = load_dataset(d.dataset, data_dir=d.data_dir, seed=seeds.int_seed("data") % (2**31), **options)
    algo_cls = algorithm_class(cfg.algorithm.name)
    holdout = d.holdout if d.holdout is not None else algo_cls.holdout_size(cfg)
    if holdout > 0:  # before max_train and partitioning: no device can receive a held-out sample
        bundle = split_holdout(bundle, holdout, seeds.rng("holdout"))
    if d.max_train is not None:
        bundle = subsample_train(bundle, d.max_train, seeds.rng("max_train"))
    bundle, extras = algorithm_class(cfg.algorithm.name).prepare_data(cfg, bundle, seeds)
    topology = build_topology(cfg)
    p = cfg.partition
    method_options = {
        "iid": {},
        "dirichlet": {"alpha": p.alpha, "min_size": p.min_size},
        "shards": {"shards_per_device": p.shards_per_device},
    }.get(p.method, p.options)  # a plugin partitioner gets partition.options
    parts = partition(
        p.method, bundle.train.y, topology.num_devices, seeds.rng("partition"), **method_options
    )
    train_x = torch.as_tensor(bundle.train.x, device=device)
    train_y = torch.as_tensor(bundle.train.y, device=device)
    client_data = []
    for idx in parts:
        index = torch.as_tensor(idx, device=device)
        client_data.append(ClientData(train_x[index], train_y[index]))
    shape = tuple(bundle.input_shape)
    options_m = dict(cfg.model.options)
    name, num_classes = cfg.model.name, bundle.num_classes

    def model_fn() -> torch.nn.Module:  # captures only small values: it travels to Ray workers
        return build_model(name, shape, num_classes, **options_m)

    info = model_info(model_fn(), shape, name=cfg.model.name)
    workloads = algorithm_class(cfg.algorithm.name).thread_workloads(cfg, info, shape, num_classes, topology)
    threads = choose_threads(
        cfg.engine.torch_threads, workloads, executor=cfg.executor, device=device, engine=cfg.engine
    )
    apply_threads(threads)
    resolved = {} if threads.mode == "torch" else {"torch_threads": threads.chosen}
    engine = cfg.engine.model_copy(update=resolved)
    return RunContext(
        cfg=cfg,
        seeds=seeds,
        device=device,
        bundle=bundle,
        test_x=torch.as_tensor(bundle.test.x, device=device),
        test_y=torch.as_tensor(bundle.test.y, device=device),
        parts=parts,
        client_data=client_data,
        topology=topology,
        system=build_system(cfg, topology, seeds),
        executor=make_executor(cfg.executor, device, engine),  # Ray workers: capped by the choice
        model_fn=model_fn,
        arch_key=f"{cfg.model.name}:{shape}:{bundle.num_classes}:{sorted(options_m.items())}",
        info=info,
        extras=extras,
        torch_threads=threads.as_dict(),
    )


def release(ctx: RunContext) -> None:
    """Shut down what the context's executor holds (Ray's worker actors); a no-op for in-process ones."""
    shutdown = getattr(ctx.executor, "shutdown", None)
    if callable(shutdown):
        shutdown()
