"""SIGKILL at a random round, then ``--resume``, through the real CLI: FedAgg with an edge outage (re-parented
devices, their homes and who holds which embeddings live in the checkpoint), dropout and lost uploads.

tests/test_checkpoint.py already kills FedAvg (stateless between rounds but for one model) at fixed rounds;
this test covers an algorithm whose tree changes during the run, at kill rounds drawn from a seeded RNG, and
each case uses its own run seed, so the faults differ. The resumed ``metrics.jsonl`` and ``summary.json`` must
equal an uninterrupted run's, wall-clock keys aside.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edgelearn.run_config import load_config
from edgelearn.runner import run

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 6
CASES = 3
KILL_SEED = 2024
"""Seeds the kill rounds: ``CASES`` distinct rounds in 1..ROUNDS-2 (the run must not have finished)."""
KILL_ROUNDS = [
    int(k) for k in np.random.default_rng(KILL_SEED).choice(np.arange(1, ROUNDS - 1), CASES, replace=False)
]
ROUND_SLEEP_S = 0.3
"""Slows each round of the killed run so the kill lands before the run ends."""
POLL_S = 0.02
TIMEOUT_S = 120
TEST_FRACTION = 0.75
"""A quarter of digits (~450 samples) for training keeps each round short."""
WALL_KEYS = {"wall_s", "wall_s_by_part"}
"""Wall-clock keys, the only ones allowed to differ."""
CONFIG: dict[str, Any] = {
    "name": "sigkill",
    "device": "cpu",
    "executor": "serial",
    "engine": {"torch_threads": 1},
    "data": {"dataset": "digits", "test_fraction": TEST_FRACTION},
    "partition": {"method": "iid"},
    "topology": {"devices": None, "edges": 2, "devices_per_edge": 2},
    "algorithm": {
        "name": "fedagg",
        "rounds": ROUNDS,
        "local": {"batch_size": 64},
        "models": {
            "device": {"name": "mlp", "options": {"hidden": [16]}},
            "edge": {"name": "cnn_small"},
            "cloud": {"name": "cnn_small"},
        },
        "autoencoder": {"epochs": 1, "max_samples": 128, "batch_size": 64},
        "eval_devices": 2,
        "tier_eval_samples": 100,
    },
    "eval": {"every": 1},
    "output": {"checkpoint_every": 1, "plots": False, "progress": False},
    "faults": {
        "dropout": 0.2,
        "uplink_loss": 0.2,
        "edge_failures": [{"edge": "edge1", "start_round": 2, "end_round": ROUNDS - 2}],
    },
}


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    return [{k: v for k, v in r.items() if k not in WALL_KEYS} for r in rows]


def _summary(run_dir: Path) -> dict[str, Any]:
    return {k: v for k, v in json.loads((run_dir / "summary.json").read_text()).items() if k not in WALL_KEYS}


def _rounds_written(path: Path) -> int:
    """Complete metrics lines written so far (a kill may leave a partial last line)."""
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().split("\n")[:-1] if line)


@pytest.mark.parametrize("case", range(CASES))
def test_sigkill_at_a_random_round_then_resume_matches_the_uninterrupted_run(
    tmp_path: Path, case: int
) -> None:
    kill_after = KILL_ROUNDS[case]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "seed": case}), encoding="utf-8")
    reference = tmp_path / "reference"
    run(load_config(config), reference, progress=False)

    out = tmp_path / "killed"
    args = [sys.executable, "-m", "edgelearn.cli", "run", str(config), "--quiet", "--out", str(out)]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "OMP_NUM_THREADS": "1",
        "EDGELEARN_TEST_ROUND_SLEEP": str(ROUND_SLEEP_S),
    }
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while _rounds_written(metrics) < kill_after:
            if proc.poll() is not None:
                pytest.fail(f"the run ended before the kill: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                pytest.fail(f"round {kill_after} did not appear within {TIMEOUT_S} s")
            time.sleep(POLL_S)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()  # no-op when already dead; never leave it running on a failure
        proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists() and _rounds_written(metrics) < ROUNDS

    resumed = subprocess.run(
        [*args, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert resumed.returncode == 0, resumed.stderr
    assert _metrics(out) == _metrics(reference)
    assert _summary(out) == _summary(reference)
    expected = _metrics(reference)
    assert any(r.get("reparented") for r in expected)  # the outage moved devices within the run
    assert _summary(reference)["faults"]["rounds_with_edge_failure"] == ROUNDS - 3
