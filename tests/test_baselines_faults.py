"""Faults in the KD baselines FedGKT, FedDKC and DemLearn: a dropped device or one behind a failed edge
contributes nothing and keeps its model, lost uploads cost energy and deliver nothing, stragglers are cut
off, a round where nothing arrives keeps the delivered model, and a faulty run completes end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny import synthetic_context

from edgelearn.algorithms.base import Algorithm, RunContext
from edgelearn.algorithms.demlearn.algorithm import PHASE_BROADCAST, PHASE_UPLOAD, DemLearn, DemLearnConfig
from edgelearn.algorithms.feddkc.algorithm import FedDKC
from edgelearn.algorithms.feddkc.config import FedDKCConfig
from edgelearn.algorithms.fedgkt.algorithm import FedGKT
from edgelearn.algorithms.fedgkt.config import FedGKTConfig
from edgelearn.algorithms.kit.nodes import SERVER
from edgelearn.algorithms.kit.split import PHASE_FEATURES_UP, PHASE_SERVER_TRAIN
from edgelearn.engine import StateDict, average_states
from edgelearn.run_config import build_config
from edgelearn.runner import run
from edgelearn.system.faults import PHASE_LOST_UPLOAD, PHASE_STRAGGLER_TRAIN

# cloud 0; edge0 = 1 with devices 2, 3, 4; edge1 = 5 with devices 6, 7, 8
TWO_EDGES = ["topology.devices=null", "topology.edges=2", "topology.devices_per_edge=3"]
DEVICES = (2, 3, 4, 6, 7, 8)
KD_MODELS: dict[str, Any] = {"device": {"name": "cnn_small"}, "cloud": {"name": "resnet8"}}
DEM_MODELS: dict[str, Any] = {"device": {"name": "mlp", "options": {"hidden": [16]}}}
ALGORITHMS = ("fedgkt", "feddkc", "demlearn")


def algo_settings(name: str) -> dict[str, Any]:
    """Small, fast settings of each baseline (the algorithm section, name included)."""
    if name == "demlearn":
        return {"name": name, "rounds": 2, "models": DEM_MODELS, "local": {"batch_size": 16, "lr": 0.05}}
    return {"name": name, "rounds": 2, "models": KD_MODELS, "local": {"batch_size": 16}}


def make_ctx(*overrides: str) -> RunContext:
    """A tiny synthetic-image context (8x8, 10 classes, IID, 96 samples) on the CPU, serial executor."""
    return synthetic_context([*TWO_EDGES, *overrides])


def make_algo(name: str, *overrides: str, **cfg: Any) -> Algorithm:
    """Baseline ``name`` on :func:`make_ctx`, initialised."""
    ctx = make_ctx(*overrides)
    settings = {**algo_settings(name), **cfg}
    settings.pop("name")
    classes: dict[str, tuple[type[Algorithm], Any]] = {
        "fedgkt": (FedGKT, FedGKTConfig),
        "feddkc": (FedDKC, FedDKCConfig),
        "demlearn": (DemLearn, DemLearnConfig),
    }
    algo_class, config_class = classes[name]
    algo = algo_class(ctx, config_class.model_validate(settings))  # type: ignore[call-arg]
    algo.init()
    return algo


def device_state(algo: Algorithm, node: int) -> StateDict:
    """A copy of device ``node``'s model state."""
    states = algo.device_states if isinstance(algo, DemLearn) else algo.models.states  # type: ignore[attr-defined]
    return {k: v.clone() for k, v in states[node].items()}


def same(a: StateDict, b: StateDict) -> bool:
    """Whether two states are bit-identical."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def touched(algo: Algorithm, round_: int) -> set[int]:
    """Every node that computed, sent or received anything in ``round_``."""
    events = algo.ctx.system.ledger.event_dicts(round_)
    return {e["node"] for e in events} | {e["dst"] for e in events if e["kind"] == "transmit"}


def phase_sum(algo: Algorithm, phase: str, column: str, round_: int) -> float:
    """Total of one ledger column over one phase's events of one round."""
    events = algo.ctx.system.ledger.events(round_)
    return float(events[column][events["phase"] == phase].sum())


@pytest.mark.parametrize("name", ALGORITHMS)
def test_a_dropped_device_contributes_nothing_and_keeps_its_model(name: str, tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("round,node,available\n2,dev0,0\n", encoding="utf-8")  # dev0 = node 2
    extra = {"alpha": 0.0} if name == "demlearn" else {}  # alpha 0: devices keep what they trained
    algo = make_algo(name, f"faults.availability_trace={trace}", **extra)
    algo.run_round(1)
    before = device_state(algo, 2)
    stats = algo.run_round(2)
    assert same(device_state(algo, 2), before)
    assert 2 not in touched(algo, 2)
    assert (stats["dropped"], stats["arrived"], stats["kept_previous_model"]) == (1, 5, False)
    others = [d for d in DEVICES if d != 2]
    if isinstance(algo, DemLearn):  # the root is the plain mean of the models that arrived
        mean = average_states([algo.device_states[d] for d in others], [1.0] * len(others))
        assert all(torch.allclose(algo.cloud_state[k], mean[k], atol=1e-6) for k in mean)
        assert sorted(algo.root.members()) == others
    else:  # the server trained on the other devices' features only
        samples = sum(algo.ctx.data_size(d) for d in others)
        server_flops = samples * algo.server.info.flops_train  # type: ignore[attr-defined]
        assert phase_sum(algo, PHASE_SERVER_TRAIN, "flops", 2) == server_flops
    algo.run_round(3)
    assert not same(device_state(algo, 2), before)  # back the round after


@pytest.mark.parametrize("name", ALGORITHMS)
def test_lost_uploads_cost_energy_and_keep_the_delivered_model(name: str) -> None:
    algo = make_algo(name, "faults.uplink_loss=1.0")
    delivered = {k: v.clone() for k, v in algo.delivered_state().items()}
    before = {d: device_state(algo, d) for d in DEVICES}
    stats = algo.run_round(1)
    assert stats["lost"] == len(DEVICES) and stats["arrived"] == 0 and stats["kept_previous_model"]
    assert same(algo.delivered_state(), delivered)
    assert all(not same(device_state(algo, d), before[d]) for d in DEVICES)  # they trained locally
    if isinstance(algo, DemLearn):
        payload = len(DEVICES) * algo.arch.info.param_bytes
        assert phase_sum(algo, PHASE_UPLOAD, "bytes", 1) == 0
    else:
        payload = sum(algo.ctx.data_size(d) for d in DEVICES) * algo.up_bytes_per_sample  # type: ignore[attr-defined]
        assert phase_sum(algo, PHASE_FEATURES_UP, "bytes", 1) == 0 and algo.server_logits == {}  # type: ignore[attr-defined]
    assert phase_sum(algo, PHASE_LOST_UPLOAD, "bytes", 1) == payload
    assert phase_sum(algo, PHASE_LOST_UPLOAD, "joules", 1) > 0
    servers = {1, 5, SERVER}  # nothing reached an edge or the cloud: they only sent the initial model
    events = algo.ctx.system.ledger.event_dicts(1)
    assert {e["phase"] for e in events if e["node"] in servers} <= {PHASE_BROADCAST}


@pytest.mark.parametrize("name", ALGORITHMS)
def test_devices_behind_a_failed_edge_sit_out(name: str) -> None:
    algo = make_algo(name, "faults.edge_failures=[{edge: edge0, start_round: 1, end_round: 1}]")
    before = {d: device_state(algo, d) for d in (2, 3, 4)}
    stats = algo.run_round(1)
    assert (stats["edge_down"], stats["edges_failed"], stats["arrived"]) == (3, 1, 3)
    assert all(same(device_state(algo, d), s) for d, s in before.items())
    assert {1, 2, 3, 4}.isdisjoint(touched(algo, 1))
    assert algo.ctx.topology.parent(2) == 1  # not re-routed


@pytest.mark.parametrize("name", ALGORITHMS)
def test_stragglers_are_cut_off_at_the_deadline(name: str) -> None:
    algo = make_algo(name, "faults.deadline_s=1e-9")
    before = {d: device_state(algo, d) for d in DEVICES}
    stats = algo.run_round(1)
    assert stats["straggled"] == len(DEVICES) and stats["kept_previous_model"]
    assert all(same(device_state(algo, d), s) for d, s in before.items())
    assert phase_sum(algo, PHASE_STRAGGLER_TRAIN, "flops", 1) > 0


def test_a_device_that_never_heard_from_the_server_trains_on_ce_alone(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("round,node,available\n1,dev0,0\n", encoding="utf-8")
    algo = make_algo("fedgkt", f"faults.availability_trace={trace}")
    algo.run_round(1)
    assert 2 not in algo.server_logits  # type: ignore[attr-defined]
    algo.run_round(2)  # dev0 (no logits yet) and the others (with logits) train in separate cohorts
    assert 2 in algo.server_logits  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ALGORITHMS)
def test_a_faulty_run_completes_and_reports_fault_totals(name: str, tmp_path: Path) -> None:
    overrides = [
        "data.dataset=synthetic",
        "data.num_train=96",
        "data.num_test=40",
        "executor=serial",
        "output.plots=false",
        *TWO_EDGES,
        "faults.dropout=0.3",
        "faults.uplink_loss=0.2",
        "faults.edge_failures=[{edge: edge1, start_round: 2, end_round: 2}]",
    ]
    cfg = build_config({"algorithm": {**algo_settings(name), "rounds": 3}}, overrides)
    summary = run(cfg, tmp_path, progress=False)
    totals = summary["faults"]
    assert totals["rounds_with_edge_failure"] == 1 and totals["edge_down"] > 0
    assert totals["dropped"] > 0 and totals["arrived"] > 0
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["round"] == 3 and summary["final_accuracy"] == last["accuracy"]
    correct = summary["final_accuracy"] * 40  # a count of right answers over the 40 test samples
    assert correct == pytest.approx(round(correct), abs=1e-9)  # 1e-9: the division's rounding, x 40
