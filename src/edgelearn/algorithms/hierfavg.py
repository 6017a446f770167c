"""HierFAVG (Liu et al., ICC 2020, "Client-Edge-Cloud Hierarchical Federated Learning").

Every device runs kappa1 local SGD steps, then its edge averages its devices' models; after kappa2 such
edge rounds the cloud averages the edge models (weighted by the data below each edge). One round here is
one cloud round. Devices attached directly to the cloud form a group whose "edge" is the cloud itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgelearn.algorithms.base import Algorithm, local_spec
from edgelearn.algorithms.comm import aggregate_cost, send_down, send_up
from edgelearn.engine import StateDict, average_states, clone_state


class HierFAVG(Algorithm):
    """Two-level averaging: device -> edge every kappa1 steps, edge -> cloud every kappa2 edge rounds."""

    name = "hierfavg"
    checkpoint_attrs = ("cloud_state", "edge_states")

    def init(self) -> None:
        """Cloud model, one aggregation group per parent of a device (with data)."""
        ctx = self.ctx
        topo = ctx.topology
        self.cloud_state: StateDict = ctx.init_state()
        self.devices = np.array([d for d in topo.devices if ctx.data_size(d) > 0], dtype=np.int64)
        self.heads = sorted({topo.parent(int(d)) for d in self.devices})  # edge (or cloud) of each group
        self.group_index = {h: i for i, h in enumerate(self.heads)}
        self.group_of = np.array(
            [self.group_index[topo.parent(int(d))] for d in self.devices], dtype=np.int64
        )
        self.group_data = np.bincount(
            self.group_of, weights=[ctx.data_size(int(d)) for d in self.devices], minlength=len(self.heads)
        )
        self.edge_states: list[StateDict] = [clone_state(self.cloud_state) for _ in self.heads]

    def run_round(self, round_: int) -> dict[str, Any]:
        """kappa2 edge rounds of kappa1 local steps, then the cloud aggregation."""
        ctx, system = self.ctx, self.ctx.system
        nbytes = ctx.info.param_bytes
        downlink = ctx.cfg.channel.include_downlink
        edge_heads = [h for h in self.heads if h != 0]
        system.begin_round(round_)
        if downlink and edge_heads:
            send_down(system, edge_heads, nbytes, phase="cloud_broadcast")
        losses = []
        spec = local_spec(self.cfg.local)
        for k in range(self.cfg.kappa2):
            if downlink:
                for head in self.heads:  # each edge broadcasts its own model to its devices
                    members = self.devices[self.group_of == self.group_index[head]]
                    send_down(system, members, nbytes, source=head, phase="edge_broadcast")
            # Seeds keyed by the global edge-round index so every (round, edge round) has fresh batches.
            cohort = ctx.cohort(
                self.devices,
                self.edge_states,
                self.group_of,
                self.group_of,
                len(self.heads),
                (round_ - 1) * self.cfg.kappa2 + k,
            )
            result = ctx.executor.train(cohort, spec)
            self.check_finite(result, self.devices, round_)
            losses.append(np.nanmean(result.train_loss))
            system.compute(self.devices, result.samples * float(ctx.info.flops_train), phase="train")
            for head in self.heads:
                members = self.devices[self.group_of == self.group_index[head]]
                send_up(system, members, nbytes, target=head, phase="edge_upload")
                aggregate_cost(system, head, len(members), ctx.info.params, phase="edge_aggregate")
            self.edge_states = [
                s if s is not None else self.edge_states[i] for i, s in enumerate(result.group_states)
            ]
        if edge_heads:
            send_up(system, edge_heads, nbytes, phase="cloud_upload")
        aggregate_cost(system, 0, len(self.heads), ctx.info.params, phase="cloud_aggregate")
        self.cloud_state = average_states(self.edge_states, self.group_data.tolist())
        self.edge_states = [clone_state(self.cloud_state) for _ in self.heads]
        system.end_round()
        return {"train_loss": float(np.mean(losses))}

    def delivered_state(self) -> StateDict:
        """The cloud model after the latest cloud aggregation."""
        return self.cloud_state
