"""CLI: exit codes, overrides, and readable errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgelearn", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=300,
    )


def test_run_and_report(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _cli(
        "run",
        "configs/fedavg-digits.yaml",
        "--set",
        "algorithm.rounds=2",
        "--set",
        "topology.devices=10",
        "--seed",
        "3",
        "--out",
        str(out),
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 3 and summary["rounds"] == 2
    proc = _cli("report", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Final accuracy" in proc.stdout + proc.stderr


def test_bad_config_key_exits_2_naming_the_key(tmp_path: Path) -> None:
    proc = _cli("run", "configs/fedavg-digits.yaml", "--set", "algorithm.local.lr=-1", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "algorithm.local.lr" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_config_and_bad_data_dir_exit_2(tmp_path: Path) -> None:
    proc = _cli("run", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = _cli(
        "run",
        "configs/fedavg-digits.yaml",
        "--set",
        "data.dataset=mnist",
        "--set",
        f"data.data_dir={tmp_path}",
        "--out",
        str(tmp_path / "r"),
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(tmp_path) in proc.stderr


def test_impossible_partition_exits_2(tmp_path: Path) -> None:
    proc = _cli(
        "run",
        "configs/fedavg-digits.yaml",
        "--set",
        "partition.min_size=500",
        "--out",
        str(tmp_path),
        "--quiet",
    )
    assert proc.returncode == 2 and "min_size" in proc.stderr


def test_report_on_missing_dir_exits_2(tmp_path: Path) -> None:
    proc = _cli("report", str(tmp_path / "none"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_usage_error_exits_2() -> None:
    assert _cli("run").returncode == 2
    assert _cli("frobnicate").returncode == 2


def test_sweep_check_counts_the_chosen_cases_and_seeds() -> None:
    suite = "configs/fedagg/experiments.yaml"
    chosen = ["--only", "table2", "--case", "fedagg", "--seed", "0", "--seed", "4"]
    proc = _cli("sweep", suite, "--check", *chosen)
    assert proc.returncode == 0, proc.stderr
    assert f"{suite}: 4 runs, every config valid" in proc.stderr  # the console; 1 case x 2 alphas x 2 seeds
    proc = _cli("sweep", suite, "--check", "--case", "fedag")
    assert proc.returncode == 2 and "--case ['fedag']" in proc.stderr and "Traceback" not in proc.stderr
    proc = _cli("sweep", suite, "--check", "--only", "table2", "--seed", "-1")
    assert proc.returncode == 2 and "seed -1" in proc.stderr and "Traceback" not in proc.stderr


BOMB_YAML = (
    "model:\n  name: mlp\n  options:\n    a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10))
)


def test_inputs_that_used_to_slip_through_exit_2_naming_the_key(tmp_path: Path) -> None:
    dup = tmp_path / "dup.yaml"
    dup.write_text("algorithm:\n  name: fedavg\n  rounds: 2\n  rounds: 3\n")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB_YAML)
    base = ["run", "configs/fedavg-digits.yaml", "--out", str(tmp_path / "run"), "--quiet", "--set"]
    cases = [
        (
            [*base, "algorithm.name=hierfavg", "--set", "algorithm.kappa_1=5"],
            "`algorithm.kappa_1` is not a known key",
        ),
        ([*base, "algorithm.rounds=true"], "`algorithm.rounds`: a boolean is not a number"),
        (
            [*base, "data.dataset=synthetic", "--set", "data.num_train=1000000000"],
            "data.num_train=1000000000",
        ),
        (
            [*base, "channel.bandwidth_hz=1e-300", "--set", "topology.devices=4"],
            "channel.bandwidth_hz (1e-300)",
        ),
        (
            ["run", str(dup), "--out", str(tmp_path / "run")],
            "key `rounds` is given twice (line 3 and line 4)",
        ),
        (["run", str(bomb), "--out", str(tmp_path / "run")], "expand to"),
        (
            ["sweep", "configs/fedagg/experiments.yaml", "--check", "--set", "algorithm.betta=1"],
            "algorithm.betta",
        ),
    ]
    for args, fragment in cases:
        proc = _cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert fragment in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
