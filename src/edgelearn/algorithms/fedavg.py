"""FedAvg (McMahan et al., AISTATS 2017): local SGD on devices, data-size-weighted averaging in the cloud.

On a deeper tree, edge servers only relay models (no partial aggregation): that is HierFAVG's job.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgelearn.algorithms.base import Algorithm, local_spec
from edgelearn.algorithms.comm import aggregate_cost, send_down, send_up
from edgelearn.engine import StateDict


class FedAvg(Algorithm):
    """Cloud-coordinated FedAvg with optional client sampling per round."""

    name = "fedavg"
    checkpoint_attrs = ("global_state",)

    def init(self) -> None:
        """Initial global model; devices with no data never take part."""
        self.global_state: StateDict = self.ctx.init_state()
        topo = self.ctx.topology
        self.eligible = np.array([d for d in topo.devices if self.ctx.data_size(d) > 0], dtype=np.int64)

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
        """Broadcast, local training, upload, weighted average."""
        ctx, system = self.ctx, self.ctx.system
        nbytes = ctx.info.param_bytes
        system.begin_round(round_)
        chosen = self.sample(round_)
        if ctx.cfg.channel.include_downlink:
            send_down(system, chosen, nbytes, phase="broadcast")
        cohort = ctx.cohort(
            chosen, [self.global_state], np.zeros(len(chosen)), np.zeros(len(chosen)), 1, round_
        )
        result = ctx.executor.train(cohort, local_spec(self.cfg.local))
        self.check_finite(result, chosen, round_)
        system.compute(chosen, result.samples * float(ctx.info.flops_train), phase="train")
        send_up(system, chosen, nbytes, phase="upload")
        aggregate_cost(system, 0, len(chosen), ctx.info.params)
        self.global_state = result.group_states[0]
        system.end_round()
        return {"train_loss": float(np.nanmean(result.train_loss)), "participants": int(len(chosen))}

    def delivered_state(self) -> StateDict:
        """The global (cloud) model."""
        return self.global_state
