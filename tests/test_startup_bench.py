"""Smoke test of benchmarks/startup.py on a tiny W: both processes run, phases add up, JSON is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "startup.py"


def test_startup_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "startup.json"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--pairs",
        "1",
        "--rounds",
        "2",
        "--devices",
        "10",
        "--no-warmup",
        "--json",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300)
    assert "edgelearn / plain =" in done.stdout
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["workload"]["rounds"] == 2 and result["pairs"] == 1
    env = result["environment"]
    assert env["cpu_capability"] and env["torch_default_threads"] >= 1 and len(env["loadavg"]) == 3
    for side in ("edgelearn", "plain"):
        medians = result[side]
        assert medians["wall_s"] > 0 and medians["threads"]
        assert all(v >= 0 for v in medians["phases_s"].values()), medians["phases_s"]
        (run,) = medians["runs"]
        # the phases are differences of timestamps that tile the process wall (up to clock resolution)
        assert sum(run["phases_s"].values()) == pytest.approx(run["wall_s"], abs=1e-3)
    assert result["edgelearn"]["runs"][0]["rounds"] == 2
    assert result["ratio"] == result["edgelearn"]["wall_s"] / result["plain"]["wall_s"]
