"""FedAvg (McMahan et al., AISTATS 2017): local SGD on devices, data-size-weighted averaging in the cloud.

On a deeper tree, edge servers only relay models (no partial aggregation): that is HierFAVG's job.
Under faults (``faults`` config, system/faults.py) the cloud averages what arrived, weights renormalized:
unavailable devices and devices behind a failed edge sit the round out, stragglers past the deadline and
lost uploads are charged but not aggregated, and a round where nothing arrives keeps the previous model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgelearn.algorithms.base import Algorithm, local_spec
from edgelearn.algorithms.comm import aggregate_cost, fault_stats, planned_samples, send_down, send_up
from edgelearn.engine import StateDict
from edgelearn.system.faults import (
    FaultModel,
    charge_lost,
    charge_stragglers,
    screen_uploads,
    screened_counts,
)

ARRIVED_GROUP = 0
LOST_GROUP = 1
"""Cohort groups: the updates that reach the cloud, and those trained but lost on the way (discarded)."""


class FedAvg(Algorithm):
    """Cloud-coordinated FedAvg with optional client sampling per round."""

    name = "fedavg"
    checkpoint_attrs = ("global_state",)

    def init(self) -> None:
        """Initial global model and the fault model; devices with no data never take part."""
        ctx = self.ctx
        self.global_state: StateDict = ctx.init_state()
        topo = ctx.topology
        self.eligible = topo.device_ids[ctx.data_sizes(topo.device_ids) > 0]
        ctx.system.attach_faults(FaultModel.from_config(ctx.cfg.faults, topo, ctx.seeds))

    def sample(self, round_: int) -> np.ndarray:
        """Devices taking part in ``round_`` (all, a count or a share; drawn from the 'sampling' stream)."""
        k = self.cfg.clients_per_round
        n = len(self.eligible)
        if k is None:
            return self.eligible
        count = int(k) if isinstance(k, int) else max(1, int(round(float(k) * n)))
        count = min(count, n)
        rng = self.ctx.seeds.rng("sampling", round_)
        return np.sort(rng.choice(self.eligible, size=count, replace=False))

    def run_round(self, round_: int) -> dict[str, Any]:
        """Broadcast, local training, upload, weighted average over the updates that arrived."""
        ctx, system = self.ctx, self.ctx.system
        faults = system.faults
        nbytes = ctx.info.param_bytes
        system.begin_round(round_)
        chosen = self.sample(round_)
        available = faults.available(round_, chosen)
        reachable = faults.reachable(round_, chosen)
        active = chosen[available & reachable]
        if ctx.cfg.channel.include_downlink and len(active):
            send_down(system, active, nbytes, phase="broadcast")
        sizes = ctx.data_sizes(active)
        flops = planned_samples(sizes, self.cfg.local) * float(ctx.info.flops_train)
        screen = screen_uploads(system, round_, active, flops, nbytes)
        trainers = active[screen.trained]
        loss = float("nan")
        if len(trainers):
            group = np.where(screen.lost[screen.trained], LOST_GROUP, ARRIVED_GROUP)
            cohort = ctx.cohort(trainers, [self.global_state], np.zeros(len(trainers)), group, 2, round_)
            result = ctx.executor.train(cohort, local_spec(self.cfg.local))
            self.check_finite(result, trainers, round_)
            system.compute(trainers, result.samples * float(ctx.info.flops_train), phase="train")
            loss = float(np.nanmean(result.train_loss))
            if result.group_states[ARRIVED_GROUP] is not None:
                self.global_state = result.group_states[ARRIVED_GROUP]
        charge_stragglers(system, screen, flops, nbytes)
        charge_lost(system, screen, nbytes)
        arrived = active[screen.arrived]
        send_up(system, arrived, nbytes, phase="upload")
        aggregate_cost(system, 0, len(arrived), ctx.info.params)
        system.end_round()
        stats: dict[str, Any] = {"train_loss": loss, "participants": int(len(chosen))}
        if faults.enabled:
            faults.record(round_, **screened_counts(faults, round_, available, reachable, screen))
            stats.update(fault_stats(faults, round_))
        return stats

    def summary_extras(self) -> dict[str, Any]:
        """Fault totals over the run (only when a fault model is configured)."""
        faults = self.ctx.system.faults
        return {"faults": faults.totals()} if faults.enabled else {}

    def delivered_state(self) -> StateDict:
        """The global (cloud) model."""
        return self.global_state
