"""FedAvg's extension points (the hooks plugin algorithms override): each is called where its docstring says,
with what it says, and the defaults are plain FedAvg."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from edgelearn.algorithms.fedavg.algorithm import FedAvg
from edgelearn.engine import CohortResult, LocalSpec, StateDict
from edgelearn.run_config import build_config
from edgelearn.runner import build_context

TINY = [
    "topology.devices=6",
    "algorithm.rounds=2",
    "executor=serial",
    "output.plots=false",
    "engine.torch_threads=1",
]


def _run(cls: type[FedAvg], *extra: str, rounds: int = 2) -> FedAvg:
    algo = cls(build_context(build_config({}, [*TINY, *extra])))
    algo.init()
    for r in range(1, rounds + 1):
        algo.run_round(r)
    return algo


class Recording(FedAvg):
    """FedAvg that records every hook call and changes nothing."""

    def init(self) -> None:
        super().init()
        self.calls: list[tuple[str, Any]] = []

    def local_training(self, round_: int) -> LocalSpec:
        self.calls.append(("local_training", round_))
        return super().local_training(round_)

    def cohort_options(self, trainers: np.ndarray, round_: int) -> dict[str, Any]:
        self.calls.append(("cohort_options", (trainers.tolist(), round_)))
        return {"keep_states": True}

    def client_results(
        self, trainers: np.ndarray, arrived: np.ndarray, result: CohortResult, round_: int
    ) -> None:
        assert result.client_states is not None and len(result.client_states) == len(trainers)
        self.calls.append(("client_results", (trainers.tolist(), arrived.tolist(), round_)))
        self.seen_global = {k: v.clone() for k, v in self.global_state.items()}

    def server_update(self, previous: StateDict, averaged: StateDict, round_: int) -> StateDict:
        assert all(torch.equal(previous[k], self.seen_global[k]) for k in previous)  # still the start model
        self.calls.append(("server_update", round_))
        return super().server_update(previous, averaged, round_)


def test_default_hooks_are_plain_fedavg_and_are_called_in_order() -> None:
    plain, recorded = _run(FedAvg), _run(Recording)
    for k, v in plain.global_state.items():
        assert torch.equal(recorded.global_state[k], v)
    names = [name for name, _ in recorded.calls]
    assert names == ["local_training", "cohort_options", "client_results", "server_update"] * 2
    devices = plain.ctx.topology.device_ids.tolist()
    assert recorded.calls[1] == ("cohort_options", (devices, 1))
    assert recorded.calls[2] == ("client_results", (devices, [True] * 6, 1))


def test_lost_uploads_are_marked_and_a_round_without_arrivals_skips_the_server_update() -> None:
    lossy = _run(Recording, "faults.uplink_loss=0.5", "seed=3")
    arrived = [a for name, (_, a, _) in [c for c in lossy.calls if c[0] == "client_results"]]
    assert any(not all(a) for a in arrived) and any(any(a) for a in arrived)
    lost_all = _run(Recording, "faults.uplink_loss=1.0")
    assert "server_update" not in [name for name, _ in lost_all.calls]
    start = lost_all.ctx.init_state()
    assert all(torch.equal(lost_all.global_state[k], start[k]) for k in start)  # kept the initial model


class Damped(FedAvg):
    """Server step halfway from the previous model to the average (a server learning rate of 0.5)."""

    def server_update(self, previous: StateDict, averaged: StateDict, round_: int) -> StateDict:
        return {k: previous[k] + 0.5 * (averaged[k] - previous[k]) for k in previous}


def test_server_update_sets_the_global_model() -> None:
    plain, damped = _run(FedAvg, rounds=1), _run(Damped, rounds=1)
    start = plain.ctx.init_state()
    for k in start:  # one round from the same start: the damped model is halfway to FedAvg's
        torch.testing.assert_close(damped.global_state[k], 0.5 * (start[k] + plain.global_state[k]))


class Proximal(FedAvg):
    """FedAvg with a large proximal term, uniform weights and empty gradient shifts, all for the executor."""

    def local_training(self, round_: int) -> LocalSpec:
        return dataclasses.replace(super().local_training(round_), prox_mu=10.0)

    def cohort_options(self, trainers: np.ndarray, round_: int) -> dict[str, Any]:
        return {"grad_shift": [{} for _ in trainers], "weights": np.ones(len(trainers))}


def test_local_training_and_cohort_options_reach_the_executor() -> None:
    plain, prox = _run(FedAvg, rounds=1), _run(Proximal, rounds=1)
    start = plain.ctx.init_state()

    def moved(algo: FedAvg) -> float:
        return sum(float((algo.global_state[k] - start[k]).norm()) for k in start)

    assert moved(prox) < 0.5 * moved(plain)  # the proximal term holds the devices near the start


class DoubleUpload(FedAvg):
    def upload_bytes(self) -> int:
        return 2 * super().upload_bytes()

    def download_bytes(self) -> int:
        return 3 * super().download_bytes()


@pytest.mark.parametrize("faults", [[], ["faults.uplink_loss=0.5", "seed=3"]], ids=["clean", "lossy"])
def test_upload_and_download_bytes_are_what_the_ledger_charges(faults: list[str]) -> None:
    plain, double = _run(FedAvg, *faults), _run(DoubleUpload, *faults)
    a, b = plain.ctx.system.ledger.totals(), double.ctx.system.ledger.totals()
    assert b["bytes_up"] == 2 * a["bytes_up"] > 0  # uploads, lost uploads included
    assert b["bytes_down"] == 3 * a["bytes_down"] > 0
