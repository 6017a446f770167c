"""FedAvg (McMahan et al., AISTATS 2017): local SGD on devices, data-size-weighted averaging in the cloud.

On a deeper tree, edge servers only relay models (no partial aggregation): that is HierFAVG's job.
Under faults (``faults`` config, system/faults.py) the cloud averages what arrived, weights renormalized:
unavailable devices and devices behind a failed edge sit the round out, stragglers past the deadline and
lost uploads are charged but not aggregated, and a round where nothing arrives keeps the previous model.

FedAvg is also the base of algorithms that change one step of its round (the plugin extension points,
docs/extending.md): :meth:`FedAvg.local_training` (the devices' local objective: FedProx's proximal term),
:meth:`FedAvg.cohort_options` (extra :class:`~edgelearn.engine.Cohort` fields: SCAFFOLD's ``grad_shift``,
kept client states, other aggregation weights), :meth:`FedAvg.client_results` (what each device sent, before
aggregation: SCAFFOLD's control variates), :meth:`FedAvg.server_update` (the cloud's step from the average:
FedAdam/FedYogi's server optimizers) and :meth:`FedAvg.upload_bytes` / :meth:`FedAvg.download_bytes` (what
a device sends and receives, priced by the ledger). Each default is plain FedAvg.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgelearn.algorithms.base import Algorithm, local_spec
from edgelearn.algorithms.kit.comm import aggregate_cost, planned_samples, send_down, send_up
from edgelearn.engine import CohortResult, LocalSpec, StateDict
from edgelearn.system.screen import RoundScreen

ARRIVED_GROUP = 0
LOST_GROUP = 1
"""Cohort groups: the updates that reach the cloud, and those trained but lost on the way (discarded)."""


class FedAvg(Algorithm):
    """Cloud-coordinated FedAvg with optional client sampling per round."""

    name = "fedavg"
    checkpoint_attrs = ("global_state",)

    def init(self) -> None:
        """Initial global model; devices with no data never take part (the runner attached the faults)."""
        ctx = self.ctx
        self.global_state: StateDict = ctx.init_state()
        topo = ctx.topology
        self.eligible = topo.device_ids[ctx.data_sizes(topo.device_ids) > 0]

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

    # ------------------------------------------------------------------ extension points (plugins)
    def local_training(self, round_: int) -> LocalSpec:
        """How ``round_``'s devices train locally: the config's ``local`` section. Override to change the
        local objective, e.g. FedProx's proximal term: ``dataclasses.replace(spec, prox_mu=mu)``."""
        return local_spec(self.cfg.local)

    def cohort_options(self, trainers: np.ndarray, round_: int) -> dict[str, Any]:
        """Extra :class:`~edgelearn.engine.Cohort` fields for ``round_``'s trainers (device node ids in
        cohort order), passed to ``ctx.cohort``: ``grad_shift`` (one mapping per trainer),
        ``keep_states=True`` (per-client final states for :meth:`client_results`), ``weights`` (aggregation
        weights; the default is local data size). None by default."""
        return {}

    def client_results(
        self, trainers: np.ndarray, arrived: np.ndarray, result: CohortResult, round_: int
    ) -> None:
        """See what every trainer produced before the cloud aggregates (``self.global_state`` is still the
        model they started from). ``arrived`` marks the trainers whose upload reached the cloud (the others
        were lost on the way); ``result.client_states`` is set when :meth:`cohort_options` asked for
        ``keep_states``, ``result.steps`` counts each trainer's local steps. Does nothing by default."""

    def server_update(self, previous: StateDict, averaged: StateDict, round_: int) -> StateDict:
        """The cloud's new model from the previous one and the weighted average of the updates that arrived
        (called only when one arrived). FedAvg takes the average; server optimizers (FedAdam, FedYogi:
        Reddi et al., ICLR 2021) step from ``previous`` along ``averaged - previous``. State an override
        keeps across rounds belongs in ``checkpoint_attrs`` so a resumed run continues exactly."""
        return averaged

    def upload_bytes(self) -> int:
        """Bytes each device uploads per round: one model (override when a device sends more, e.g. SCAFFOLD's
        control-variate delta, or less, e.g. a compressed update)."""
        return int(self.ctx.info.param_bytes)

    def download_bytes(self) -> int:
        """Bytes the cloud broadcasts to each device per round: one model (override when it sends more)."""
        return int(self.ctx.info.param_bytes)

    # ------------------------------------------------------------------ the round
    def run_round(self, round_: int) -> dict[str, Any]:
        """Broadcast, local training, upload, weighted average over the updates that arrived."""
        ctx, system = self.ctx, self.ctx.system
        nbytes = self.upload_bytes()
        system.begin_round(round_)
        chosen = self.sample(round_)
        screen = RoundScreen.open(system, round_, chosen)
        active = screen.active
        if ctx.cfg.channel.include_downlink and len(active):
            send_down(system, active, self.download_bytes(), phase="broadcast")
        spec = self.local_training(round_)
        sizes = ctx.data_sizes(active)
        flops = planned_samples(sizes, spec) * float(ctx.info.flops_train)
        screen.screen(flops, nbytes)
        trainers = screen.trainers
        loss = float("nan")
        if len(trainers):
            group = np.where(screen.lost_mask[screen.trained_mask], LOST_GROUP, ARRIVED_GROUP)
            extra = self.cohort_options(trainers, round_)
            cohort = ctx.cohort(
                trainers, [self.global_state], np.zeros(len(trainers)), group, 2, round_, **extra
            )
            result = ctx.executor.train(cohort, spec)
            self.check_finite(result, trainers, round_)
            system.compute(trainers, result.samples * float(ctx.info.flops_train), phase="train")
            loss = float(np.nanmean(result.train_loss))
            self.client_results(trainers, group == ARRIVED_GROUP, result, round_)
            averaged = result.group_states[ARRIVED_GROUP]
            if averaged is not None:
                self.global_state = self.server_update(self.global_state, averaged, round_)
        screen.charge()
        arrived = screen.arrived
        send_up(system, arrived, nbytes, phase="upload")
        aggregate_cost(system, 0, len(arrived), ctx.info.params)
        system.end_round()
        stats: dict[str, Any] = {"train_loss": loss, "participants": int(len(chosen))}
        stats.update(screen.close())
        return stats

    def summary_extras(self) -> dict[str, Any]:
        """Fault totals over the run (only when a fault model is configured)."""
        faults = self.ctx.system.faults
        return {"faults": faults.totals()} if faults.enabled else {}

    def delivered_state(self) -> StateDict:
        """The global (cloud) model."""
        return self.global_state
