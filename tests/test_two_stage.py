"""Two-stage edge learning end to end: plan, execute, and compare the ledger with the prediction."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import TWO_STAGE_CONFIG, TWO_STAGE_TINY

from edgelearn.run_config import load_config
from edgelearn.runner import run

ROOT = Path(__file__).resolve().parents[1]
CONFIG, TINY = TWO_STAGE_CONFIG, TWO_STAGE_TINY


@pytest.mark.parametrize("extra", [["algorithm.shift.level=0.0"], ["algorithm.scheme=fixed_ratio"]])
def test_executed_plan_matches_its_prediction(tmp_path: Path, extra: list[str]) -> None:
    summary = run(load_config(CONFIG, TINY + extra), tmp_path, progress=False)
    plan = summary["plan"]
    assert plan["feasible"]
    assert plan["M"] + plan["N"] > 0
    pred, meas = summary["predicted"], summary["measured"]
    # The ledger prices each executed step with the same closed-form energy (kappa C B f^2, p tau) and delay
    # (C B / f, bits / rate) expressions the plan predicts with, in float64: they differ only by summation
    # order, ~1e-15 relative (measured 0 to 1.9e-15 on both cases, also under ATEN_CPU_CAPABILITY=avx2).
    # 1e-9 leaves six orders of headroom and still catches any modelling mismatch: one missed step or upload
    # is ~3e-4 of the total here (one of the 2,887 pre-training steps; one of 56 fine-tuning rounds ~2e-2).
    assert meas["energy_j"] == pytest.approx(pred["energy_j"], rel=1e-9, abs=0)
    assert meas["delay_s"] == pytest.approx(pred["delay_s"], rel=1e-9, abs=0)
    assert pred["energy_j"] <= 2.0 * (1 + 1e-6) and pred["delay_s"] <= 6.0 * (1 + 1e-6)
    # uploads: one model-sized gradient per device per fine-tuning round; pre-training sends nothing
    assert summary["bytes_up"] == plan["N"] * 4 * summary["model"]["param_bytes"]
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all("grad_norm_sq" in m and m["grad_norm_sq"] >= 0 for m in lines)
    assert summary["shift"]["w1"] > 0
    assert summary["constants"]["L"] > 0


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgelearn", *args], capture_output=True, text=True, cwd=ROOT, timeout=600
    )


def test_plan_json_has_the_interface_keys() -> None:
    sets = [x for o in TINY for x in ("--set", o)]
    proc = _cli("plan", str(CONFIG), "--json", *sets)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    for key in ("M", "N", "energy_j", "delay_s", "bound", "feasible", "schemes"):
        assert key in report
    assert set(report["schemes"]) == {
        "finetune_only",
        "pretrain_only",
        "fixed_ratio",
        "no_optimization",
        "separate",
    }
    # the optimized plan's bound is no worse than any feasible baseline's: the joint design takes a baseline's
    # plan where its search ends worse (planning.joint.no_worse_than_baselines), so only float noise remains
    # (1e-9; the JSON keeps floats exactly); pretrain_only too (algorithm.joint_min_ft_rounds defaults to 0)
    for name, p in report["schemes"].items():
        if p["feasible"]:
            assert report["bound"] <= p["bound"] * (1 + 1e-9), name


def test_infeasible_budget_exits_2_with_the_minimum_budgets() -> None:
    sets = [x for o in TINY for x in ("--set", o)]
    proc = _cli("plan", str(CONFIG), *sets, "--set", "algorithm.budget.energy_j=1e-6")
    assert proc.returncode == 2
    assert "budget.energy_j" in proc.stderr and "Traceback" not in proc.stderr


def test_two_stage_rejects_a_downlink_it_does_not_model(tmp_path: Path) -> None:
    sets = [x for o in TINY for x in ("--set", o)]
    proc = _cli("run", str(CONFIG), *sets, "--set", "channel.include_downlink=true", "--out", str(tmp_path))
    assert proc.returncode == 2 and "include_downlink" in proc.stderr


def test_landscape_grid_never_beats_the_plan() -> None:
    from edgelearn.commands.plan import landscape_report

    land = landscape_report(CONFIG, TINY, m_points=5, n_points=5)
    values = [v for row in land["bound"] for v in row if v is not None]
    assert len(land["bound"]) == len(land["M"]) and len(land["bound"][0]) == len(land["N"])
    assert land["M"][0] == 0 and land["N"][0] == 0 and land["bound"][0][0] is None  # M = N = 0 is undefined
    assert min(values) == pytest.approx(land["grid_best"]["bound"])
    # the searched, integer-rounded plan is at least as good as the best coarse-grid cell (1% rounding slack)
    assert land["plan"]["bound"] <= land["grid_best"]["bound"] * 1.01


def test_faults_drop_devices_and_retransmissions_break_the_budget(tmp_path: Path) -> None:
    # dropout only: fewer devices work, so the run spends less than planned and the budget holds
    dropped = run(load_config(CONFIG, [*TINY, "faults.dropout=0.5"]), tmp_path / "drop", progress=False)
    assert dropped["faults"]["dropped"] > 0
    assert dropped["measured"]["energy_j"] < dropped["predicted"]["energy_j"]
    assert dropped["budget"] == {
        "met": True,
        "over_from_round": None,
        "energy_budget_j": 2.0,
        "delay_budget_s": 6.0,
    }
    # lost uploads re-sent: each try is charged, so the plan's budget can no longer be met and it says when
    lossy = [*TINY, "faults.uplink_loss=0.5", "algorithm.retransmissions=3"]
    resent = run(load_config(CONFIG, lossy), tmp_path / "resend", progress=False)
    plan = resent["plan"]
    assert resent["faults"]["lost"] > 0
    assert resent["bytes_up"] > plan["N"] * 4 * resent["model"]["param_bytes"]
    assert resent["measured"]["energy_j"] > resent["predicted"]["energy_j"]
    assert resent["budget"]["met"] is False
    assert plan["M"] < resent["budget"]["over_from_round"] <= plan["M"] + plan["N"]
    records = [json.loads(line) for line in (tmp_path / "resend" / "metrics.jsonl").read_text().splitlines()]
    assert min(r["budget_left_j"] for r in records if "budget_left_j" in r) < 0


def test_fault_free_run_with_fading_never_reports_the_budget_broken(tmp_path: Path) -> None:
    # per-round channels make per-round costs differ: the check must project with each round's own plan
    summary = run(load_config(CONFIG, [*TINY, "channel.fading=rayleigh"]), tmp_path, progress=False)
    assert summary["plan"]["N"] > 1
    assert summary["budget"]["met"] is True
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    left = [r["budget_left_s"] for r in records if "budget_left_s" in r]
    assert left and min(left) >= -1e-6 * 6.0
