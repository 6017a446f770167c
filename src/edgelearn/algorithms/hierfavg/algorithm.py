"""HierFAVG (Liu et al., ICC 2020, "Client-Edge-Cloud Hierarchical Federated Learning").

Every device runs kappa1 local SGD steps, then its edge averages its devices' models; after kappa2 such
edge rounds the cloud averages the edge models (weighted by the data below each edge). One round here is
one cloud round. Devices attached directly to the cloud form a group whose "edge" is the cloud itself.

Under faults (``faults`` config, system/faults.py): availability (dropout, trace) is drawn once per cloud
round; a device under a failed edge sits the whole round out and that edge's model is not aggregated
(devices are not re-routed to the cloud); the deadline and lost uploads apply to every edge round (loss
draws keyed by the edge round). An edge averages the updates that arrived, renormalized, and keeps its
model when none did. The cloud averages the edges that received at least one update in the round, each
weighted by the data of its devices that delivered at least once; when none did it keeps its model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgelearn.algorithms.base import Algorithm, local_spec
from edgelearn.algorithms.kit.comm import aggregate_cost, planned_samples, send_down, send_up
from edgelearn.engine import StateDict, average_states, clone_state
from edgelearn.system.screen import RoundScreen


class HierFAVG(Algorithm):
    """Two-level averaging: device -> edge every kappa1 steps, edge -> cloud every kappa2 edge rounds."""

    name = "hierfavg"
    checkpoint_attrs = ("cloud_state", "edge_states")

    def init(self) -> None:
        """Cloud model and one aggregation group per parent of a device (with data)."""
        ctx = self.ctx
        topo = ctx.topology
        self.cloud_state: StateDict = ctx.init_state()
        self.devices = topo.device_ids[ctx.data_sizes(topo.device_ids) > 0]
        self.heads = sorted({topo.parent(int(d)) for d in self.devices})  # edge (or cloud) of each group
        self.group_index = {h: i for i, h in enumerate(self.heads)}
        self.group_of = np.array(
            [self.group_index[topo.parent(int(d))] for d in self.devices], dtype=np.int64
        )
        self.sizes = ctx.data_sizes(self.devices)
        self.group_data = np.bincount(self.group_of, weights=self.sizes, minlength=len(self.heads))
        self.edge_states: list[StateDict] = [clone_state(self.cloud_state) for _ in self.heads]

    def run_round(self, round_: int) -> dict[str, Any]:
        """kappa2 edge rounds of kappa1 local steps, then the cloud aggregation over what arrived."""
        ctx, system = self.ctx, self.ctx.system
        faults = system.faults
        nbytes = ctx.info.param_bytes
        downlink = ctx.cfg.channel.include_downlink
        lost_group = len(self.heads)  # trained updates lost on the way: a discarded extra group
        system.begin_round(round_)
        screen = RoundScreen.open(system, round_, self.devices)
        active = screen.active_mask
        heads_up = [h for h in self.heads if h == 0 or bool(faults.reachable(round_, [h])[0])]
        edge_heads = [h for h in heads_up if h != 0]
        if downlink and edge_heads:
            send_down(system, edge_heads, nbytes, phase="cloud_broadcast")
        nodes, groups = self.devices[active], self.group_of[active]
        flops = planned_samples(self.sizes[active], self.cfg.local) * float(ctx.info.flops_train)
        delivered = np.zeros(len(nodes), dtype=bool)
        losses = []
        spec = local_spec(self.cfg.local)
        for k in range(self.cfg.kappa2):
            if downlink:
                for head in heads_up:  # each edge broadcasts its own model to its active devices
                    members = nodes[groups == self.group_index[head]]
                    if len(members):
                        send_down(system, members, nbytes, source=head, phase="edge_broadcast")
            screen.screen(flops, nbytes, step=k)  # counters add up over the edge rounds
            trained = screen.trained_mask
            if trained.any():
                # Seeds keyed by the global edge-round index so every (round, edge round) has fresh batches.
                cohort = ctx.cohort(
                    nodes[trained],
                    self.edge_states,
                    groups[trained],
                    np.where(screen.lost_mask[trained], lost_group, groups[trained]),
                    len(self.heads) + 1,
                    (round_ - 1) * self.cfg.kappa2 + k,
                )
                result = ctx.executor.train(cohort, spec)
                self.check_finite(result, nodes[trained], round_)
                losses.append(np.nanmean(result.train_loss))
                system.compute(nodes[trained], result.samples * float(ctx.info.flops_train), phase="train")
                self.edge_states = [
                    s if s is not None else self.edge_states[i]
                    for i, s in enumerate(result.group_states[:lost_group])
                ]
            screen.charge()
            for head in heads_up:
                members = nodes[(groups == self.group_index[head]) & screen.arrived_mask]
                send_up(system, members, nbytes, target=head, phase="edge_upload")
                aggregate_cost(system, head, len(members), ctx.info.params, phase="edge_aggregate")
            delivered |= screen.arrived_mask
        weights = np.bincount(groups[delivered], weights=self.sizes[active][delivered], minlength=lost_group)
        contributing = [i for i in range(len(self.heads)) if weights[i] > 0]
        uploads = [self.heads[i] for i in contributing if self.heads[i] != 0]
        if uploads:
            send_up(system, uploads, nbytes, phase="cloud_upload")
        aggregate_cost(system, 0, len(contributing), ctx.info.params, phase="cloud_aggregate")
        if contributing:
            self.cloud_state = average_states(
                [self.edge_states[i] for i in contributing], [float(weights[i]) for i in contributing]
            )
        self.edge_states = [clone_state(self.cloud_state) for _ in self.heads]
        system.end_round()
        stats: dict[str, Any] = {"train_loss": float(np.mean(losses)) if losses else float("nan")}
        stats.update(screen.close(empty=int(not contributing)))
        return stats

    def delivered_state(self) -> StateDict:
        """The cloud model after the latest cloud aggregation."""
        return self.cloud_state

    def summary_extras(self) -> dict[str, Any]:
        """Fault totals over the run (only when a fault model is configured)."""
        faults = self.ctx.system.faults
        return {"faults": faults.totals()} if faults.enabled else {}
