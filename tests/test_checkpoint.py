"""Checkpoints: atomic, checksummed, weights-only; resume after SIGKILL reproduces the uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edgelearn.checkpoint import checkpoints, load_latest, read_checkpoint, save_checkpoint
from edgelearn.errors import ConfigError, DataError, DivergenceError
from edgelearn.run_config import build_config, load_config
from edgelearn.runner import run

ROOT = Path(__file__).resolve().parents[1]


def test_roundtrip_keeps_numpy_and_tensors(tmp_path: Path) -> None:
    payload = {"a": np.arange(4, dtype=np.int8), "b": {"w": torch.ones(2, 3)}, "c": [1.5, "x", None], "d": 3}
    save_checkpoint(tmp_path, 7, payload)
    back = read_checkpoint(tmp_path / "ckpt-000007.pt")
    assert back["a"].dtype == np.int8 and back["a"].tolist() == [0, 1, 2, 3]
    assert torch.equal(back["b"]["w"], torch.ones(2, 3))
    assert back["c"] == [1.5, "x", None] and back["d"] == 3


def test_keep_prunes_and_corruption_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for r in (1, 2, 3):
        save_checkpoint(tmp_path, r, {"round": r}, keep=2)
    assert [r for r, _ in checkpoints(tmp_path)] == [2, 3]
    newest = tmp_path / "ckpt-000003.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    with pytest.raises(DataError, match="SHA-256"):
        read_checkpoint(newest)
    round_, payload = load_latest(tmp_path)
    assert round_ == 2 and payload["round"] == 2
    assert "falling back" in caplog.text


def test_keep_deletes_nothing_until_more_than_keep_are_saved(tmp_path: Path) -> None:
    """Fewer checkpoints than ``keep`` are all kept (a negative slice once deleted all but the newest)."""
    for r in (1, 2, 3):
        save_checkpoint(tmp_path, r, {"round": r}, keep=4)
        assert [k for k, _ in checkpoints(tmp_path)] == list(range(1, r + 1))
    for r in (4, 5):
        save_checkpoint(tmp_path, r, {"round": r}, keep=4)
    assert [k for k, _ in checkpoints(tmp_path)] == [2, 3, 4, 5]


def test_tampered_checkpoint_cannot_run_code(tmp_path: Path) -> None:
    import hashlib
    import pickle

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "ckpt-000001.pt"
    import io

    buf = io.BytesIO()
    torch.save({"x": Evil()}, buf, pickle_module=pickle)
    path.write_bytes(buf.getvalue())
    path.with_suffix(".pt.sha256").write_text(hashlib.sha256(buf.getvalue()).hexdigest())
    with pytest.raises(DataError, match="cannot be loaded safely"):
        read_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def _strip(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def _summary(path: Path) -> dict:
    s = json.loads(path.read_text())
    return {k: v for k, v in s.items() if k != "wall_s"}


OVERRIDES = [
    "topology.devices=12",
    "algorithm.rounds=8",
    "output.checkpoint_every=1",
    "output.plots=false",
    "channel.fading=rayleigh",
    "algorithm.clients_per_round=0.5",
]


@pytest.mark.parametrize("kill_after", [2, 5])
def test_sigkill_then_resume_matches_uninterrupted(tmp_path: Path, kill_after: int) -> None:
    ref = tmp_path / "ref"
    run(load_config(ROOT / "configs/fedavg-digits.yaml", OVERRIDES), ref, progress=False)
    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "edgelearn",
        "run",
        "configs/fedavg-digits.yaml",
        "--quiet",
        "--out",
        str(out),
    ]
    for o in OVERRIDES:
        args += ["--set", o]
    # slow each round down a little so the kill lands mid-run
    env = {**os.environ, "EDGELEARN_TEST_ROUND_SLEEP": "0.3"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= kill_after:
            break
        if proc.poll() is not None:
            pytest.fail(f"run ended before the kill: {proc.stderr.read().decode()}")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(metrics.read_text().splitlines()) < 8
    resumed = subprocess.run([*args, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert _strip(out / "metrics.jsonl") == _strip(ref / "metrics.jsonl")
    assert _summary(out / "summary.json") == _summary(ref / "summary.json")


def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    run(build_config({}, OVERRIDES[:4]), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="config differs") as info:
        run(
            build_config({}, [*OVERRIDES[:4], "algorithm.local.lr=0.2"]),
            tmp_path,
            progress=False,
            resume=True,
        )
    # the message names the key with both values, and the hint the --set that restores it
    assert "algorithm.local.lr: 0.05 then, 0.2 now" in str(info.value)
    assert "--set algorithm.local.lr=0.05" in str(info.value)


def test_resume_names_a_default_that_changed_since_the_run_started(tmp_path: Path) -> None:
    """A run folder written before engine.torch_threads defaulted to auto saved null: resuming with today's
    defaults is refused naming the key, and the --set the hint gives resumes it."""
    run(build_config({}, [*OVERRIDES[:4], "engine.torch_threads=null"]), tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"engine\.torch_threads: None then, 'auto' now") as info:
        run(build_config({}, OVERRIDES[:4]), tmp_path, progress=False, resume=True)
    assert "--set engine.torch_threads=null" in str(info.value)
    run(
        build_config({}, [*OVERRIDES[:4], "engine.torch_threads=null"]), tmp_path, progress=False, resume=True
    )


def test_divergence_names_round_tier_and_node(tmp_path: Path) -> None:
    cfg = build_config(
        {}, ["topology.devices=4", "algorithm.rounds=3", "algorithm.local.lr=1e6", "output.plots=false"]
    )
    with pytest.raises(DivergenceError, match=r"round \d+: tier device, node \d+"):
        run(cfg, tmp_path, progress=False)
    assert checkpoints(tmp_path / "checkpoints") == [] or all(
        p.exists() for _, p in checkpoints(tmp_path / "checkpoints")
    )
