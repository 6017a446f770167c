"""End-to-end runs on tiny configs: files written, reproducibility, and a round's ledger checked by hand."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from edgelearn.algorithms.registry import make_algorithm
from edgelearn.run_config import build_config
from edgelearn.runner import build_context, run

SUMMARY_KEYS = {
    "algorithm",
    "dataset",
    "seed",
    "rounds",
    "final_accuracy",
    "energy_j",
    "delay_s",
    "bytes_up",
    "bytes_down",
    "wall_s",
    "by_tier",
    "by_kind",
}


def _tiny(*extra: str, algorithm: str = "fedavg") -> list[str]:
    base = ["algorithm.rounds=3", "output.progress=false", f"algorithm.name={algorithm}"]
    if algorithm == "hierfavg":
        base += [
            "topology.devices=null",
            "topology.edges=2",
            "topology.devices_per_edge=4",
            "algorithm.kappa1=3",
        ]
    else:
        base += ["topology.devices=8"]
    return base + list(extra)


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("algorithm", ["fedavg", "hierfavg"])
def test_run_writes_a_complete_run_directory(tmp_path: Path, algorithm: str) -> None:
    summary = run(build_config({}, _tiny(algorithm=algorithm)), tmp_path)
    assert SUMMARY_KEYS <= set(summary)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["algorithm"] == algorithm and on_disk["rounds"] == 3
    assert on_disk["energy_j"] > 0 and on_disk["delay_s"] > 0 and on_disk["bytes_up"] > 0
    assert on_disk["by_kind"]["compute_j"] + on_disk["by_kind"]["transmit_j"] == pytest.approx(
        on_disk["energy_j"]
    )
    assert sum(t["energy_j"] for t in on_disk["by_tier"].values()) == pytest.approx(on_disk["energy_j"])
    lines = _metrics(tmp_path)
    assert [m["round"] for m in lines] == [1, 2, 3]
    assert on_disk["final_accuracy"] == lines[-1]["accuracy"]  # the last evaluation, copied exactly
    for key in ("accuracy", "loss", "energy_j", "delay_s", "bytes_up", "bytes_down", "wall_s"):
        assert key in lines[0]
    energies = [m["energy_j"] for m in lines]
    assert energies == sorted(energies) and energies[0] > 0
    assert lines[-1]["energy_j"] == pytest.approx(on_disk["energy_j"])
    for name in ("accuracy_vs_round.png", "accuracy_vs_energy.png", "accuracy_vs_time.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        build_config({}, _tiny(algorithm=algorithm)).model_dump()
        == build_config(__import__("yaml").safe_load((tmp_path / "config.yaml").read_text())).model_dump()
    )


@pytest.mark.parametrize("algorithm", ["fedavg", "hierfavg"])
def test_same_seed_same_metrics(tmp_path: Path, algorithm: str) -> None:
    overrides = _tiny("partition.alpha=0.3", "channel.fading=rayleigh", algorithm=algorithm)
    if algorithm == "fedavg":
        overrides.append("algorithm.clients_per_round=0.5")
    a = run(build_config({}, overrides), tmp_path / "a", progress=False)
    b = run(build_config({}, overrides), tmp_path / "b", progress=False)
    c = run(build_config({}, overrides + ["seed=1"]), tmp_path / "c", progress=False)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    assert strip(_metrics(tmp_path / "a")) == strip(_metrics(tmp_path / "b"))
    assert strip(_metrics(tmp_path / "a")) != strip(_metrics(tmp_path / "c"))
    assert a["energy_j"] == b["energy_j"]
    assert c["energy_j"] != a["energy_j"]


def test_one_fedavg_round_ledger_by_hand() -> None:
    """Recompute round 1 of FedAvg (3 devices under the cloud) from the cost formulas alone."""
    cfg = build_config({}, ["topology.devices=3", "algorithm.rounds=1", "partition.method=iid"])
    ctx = build_context(cfg)
    algo = make_algorithm(ctx)
    algo.init()
    algo.run_round(1)
    totals = ctx.system.ledger.totals()

    devices = ctx.topology.devices
    bits = 8 * ctx.info.param_bytes
    n0 = 10 ** (-174 / 10) / 1000  # W/Hz
    share = 1e6 / 3  # bandwidth per device
    kappa, cpf, f_dev = 1e-28, 0.25, 1e9  # devices: the paper's DVFS CPU
    cloud_flops_per_s, cloud_w = 6.24e13, 400.0  # the cloud: an A100 (catalog profile a100)
    energy = delay = 0.0
    branch = []
    for d in devices:
        dist_km = float(ctx.system.channel.distance(d)) / 1000
        gain = 10 ** (-(128.1 + 37.6 * math.log10(dist_km)) / 10)
        rate_down = share * math.log2(1 + 1.0 * gain / (n0 * share))  # cloud sends at 1 W
        rate_up = share * math.log2(1 + 0.1 * gain / (n0 * share))  # device sends at 0.1 W
        n = len(ctx.parts[ctx.topology.device_ordinal(d)])
        cycles = n * ctx.info.flops_train * cpf  # one epoch: every local sample once
        t_comp = cycles / f_dev
        e = 1.0 * bits / rate_down + kappa * cycles * f_dev**2 + 0.1 * bits / rate_up
        energy += e
        branch.append(bits / rate_down + t_comp + bits / rate_up)
    agg_flops = 2 * ctx.info.params * 3
    energy += cloud_w * agg_flops / cloud_flops_per_s
    delay = max(branch) + agg_flops / cloud_flops_per_s
    assert totals["energy_j"] == pytest.approx(energy, rel=1e-9)
    assert totals["delay_s"] == pytest.approx(delay, rel=1e-9)
    assert totals["bytes_up"] == 3 * ctx.info.param_bytes
    assert totals["bytes_down"] == 3 * ctx.info.param_bytes


def test_hierfavg_round_bytes_by_hand() -> None:
    """HierFAVG with 2 edges x 3 devices, kappa2=2: count every model that crosses each link in one round."""
    cfg = build_config(
        {},
        _tiny(
            "algorithm.kappa2=2", "algorithm.rounds=1", "topology.devices_per_edge=3", algorithm="hierfavg"
        ),
    )
    ctx = build_context(cfg)
    algo = make_algorithm(ctx)
    algo.init()
    algo.run_round(1)
    t = ctx.system.ledger.totals()
    b = ctx.info.param_bytes
    # up: 6 devices x 2 edge rounds + 2 edges -> cloud; down: cloud -> 2 edges + 2 edge rounds x 6 devices
    assert t["bytes_up"] == (6 * 2 + 2) * b
    assert t["bytes_down"] == (2 + 2 * 6) * b
    assert t["by_tier"]["edge"]["bytes_up"] == 2 * b
    assert t["by_tier"]["device"]["bytes_up"] == 12 * b


def test_fedavg_client_sampling_counts(tmp_path: Path) -> None:
    run(build_config({}, _tiny("algorithm.clients_per_round=3")), tmp_path)
    lines = _metrics(tmp_path)
    assert all(m["participants"] == 3 for m in lines)
    assert (
        lines[0]["bytes_up"]
        == 3 * json.loads((tmp_path / "summary.json").read_text())["model"]["param_bytes"]
    )


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not FASHION.is_dir() and not os.environ.get("CI"),
    reason="Debian package dataset-fashion-mnist not installed (CI installs it)",
)
def test_fashion_mnist_config_runs_end_to_end(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    from edgelearn.run_config import load_config

    cfg = load_config(
        root / "configs/fedavg-fashion.yaml",
        [
            "algorithm.rounds=2",
            "topology.devices=20",
            "algorithm.clients_per_round=5",
            "output.progress=false",
        ],
    )
    summary = run(cfg, tmp_path)
    assert summary["dataset"] == "fashion_mnist"
    assert summary["final_accuracy"] > 0.3  # two rounds of a small CNN on 5 devices: far above chance (0.1)
    assert np.isfinite(summary["energy_j"]) and summary["energy_j"] > 0


def test_rounds_to_target_in_the_summary(tmp_path: Path) -> None:
    # targets around the run's own curve: one reached (the first round at or above it), one never reached
    summary = run(build_config({}, _tiny("eval.targets=[0.05, 0.999]")), tmp_path, progress=False)
    accuracies = [m["accuracy"] for m in _metrics(tmp_path)]
    first = 1 + next(i for i, a in enumerate(accuracies) if a >= 0.05)
    assert summary["rounds_to_target"] == {"5%": first, "99.9%": None}
    assert "rounds_to_target" not in run(build_config({}, _tiny()), tmp_path / "none", progress=False)
    with pytest.raises(Exception, match="targets"):
        build_config({}, _tiny("eval.targets=[1.5]"))
