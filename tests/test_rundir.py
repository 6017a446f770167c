"""The run folder's lifecycle and the CLI's exits: Ctrl-C (exit 130, a checkpoint, an exact resume), refusing
to replace a run without --overwrite, one process per run folder (a lock), resuming past corrupt metrics
lines, output paths checked before any work, and leftover temp files cleaned.

The subprocess tests slow each round with EDGELEARN_TEST_ROUND_SLEEP (as tests/test_resume_sigkill.py does)
so the SIGINT lands mid-run; every run is a few rounds on tiny synthetic data.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgelearn import cli, runner
from edgelearn.checkpoint import checkpoints
from edgelearn.commands.sweep.suite import run_suite
from edgelearn.errors import ConfigError, Interrupted, OutputError
from edgelearn.report.io import (
    LOCK_FILE,
    TEMP_NAME,
    ensure_writable_dir,
    ensure_writable_file,
    locked_dir,
    remove_stale_temps,
)
from edgelearn.run_config import load_config
from edgelearn.runner import loop, run

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 5
CONFIG: dict[str, Any] = {
    "name": "rundir",
    "seed": 0,
    "device": "cpu",
    "executor": "serial",
    "engine": {"torch_threads": 1},
    "data": {"dataset": "synthetic", "num_train": 96, "num_test": 40},
    "partition": {"method": "iid"},
    "topology": {"devices": 4},
    "algorithm": {"name": "fedavg", "rounds": ROUNDS},
    "eval": {"every": 1},
    # no periodic checkpoints: after a Ctrl-C, the only one is the checkpoint the interrupt wrote
    "output": {"checkpoint_every": 0, "plots": False, "progress": False},
}
ROUND_SLEEP_S = 0.4
"""Slows each round of the interrupted runs so the SIGINT lands before they end."""
TIMEOUT_S = 120
WALL_KEYS = {"wall_s"}


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_KEYS} for line in lines if line]


def _complete_lines(path: Path) -> int:
    """Complete metrics lines written so far."""
    return sum(1 for line in path.read_text().split("\n")[:-1] if line) if path.exists() else 0


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(config_file: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The metrics of the uninterrupted run, wall-clock aside."""
    out = tmp_path_factory.mktemp("reference")
    run(load_config(config_file), out, progress=False)
    return _metrics(out)


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "OMP_NUM_THREADS": "1",
        "EDGELEARN_TEST_ROUND_SLEEP": str(ROUND_SLEEP_S),
    }


def _interrupt_when(
    args: list[str], ready: Callable[[], bool], group: bool = False
) -> subprocess.CompletedProcess[str]:
    """Start the CLI with ``args``, send SIGINT once ``ready()`` holds, and return how it ended. With
    ``group``, the CLI gets a session of its own and SIGINT goes to its whole process group, as a terminal's
    Ctrl-C does (a sweep's workers get it directly too)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgelearn", *args],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=group,
    )
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"the command ended before the interrupt: {proc.communicate()[1]}")
            if time.monotonic() > deadline:
                pytest.fail(f"not ready for the interrupt within {TIMEOUT_S} s")
            time.sleep(0.02)
        if group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


# --- 1. Ctrl-C ---------------------------------------------------------------------------------------------
def test_ctrl_c_on_run_exits_130_with_a_checkpoint_and_resume_matches(
    tmp_path: Path, config_file: Path, reference: list[dict[str, Any]]
) -> None:
    out = tmp_path / "run"
    args = ["run", str(config_file), "--quiet", "--out", str(out)]
    ended = _interrupt_when(args, lambda: _complete_lines(out / "metrics.jsonl") >= 1)
    assert ended.returncode == 130, ended.stderr
    assert "Traceback" not in ended.stderr
    done = _complete_lines(out / "metrics.jsonl")
    assert 1 <= done < ROUNDS and not (out / "summary.json").exists()
    assert f"interrupted after round {done} of {ROUNDS}" in ended.stderr
    assert "--resume" in ended.stderr and str(out) in ended.stderr
    assert [r for r, _ in checkpoints(out / "checkpoints")] == [done]  # written by the interrupt
    resumed = subprocess.run(
        [sys.executable, "-m", "edgelearn", *args, "--resume"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert _metrics(out) == reference


def _suite(tmp_path: Path, config_file: Path, seeds: list[int] | None = None) -> Path:
    """A one-experiment sweep suite over ``config_file`` (with ``seeds`` when given), written to tmp_path."""
    experiment: dict[str, Any] = {"name": "e", "base": str(config_file)}
    if seeds is not None:
        experiment["seeds"] = seeds
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"suite": "t", "experiments": [experiment]}), encoding="utf-8")
    return suite


def test_ctrl_c_on_sweep_exits_130_and_rerunning_the_sweep_finishes_it(
    tmp_path: Path, config_file: Path, reference: list[dict[str, Any]]
) -> None:
    suite = _suite(tmp_path, config_file, seeds=[0])
    out = tmp_path / "sweep"
    run_dir = out / "e" / "base-s0"
    ended = _interrupt_when(
        ["sweep", str(suite), "--out", str(out)], lambda: _complete_lines(run_dir / "metrics.jsonl") >= 1
    )
    assert ended.returncode == 130, ended.stderr
    assert "Traceback" not in ended.stderr
    assert f"sweep {suite} interrupted" in ended.stderr and "interrupted after round" in ended.stderr
    assert "run the same sweep command again" in ended.stderr
    assert not (run_dir / "summary.json").exists() and checkpoints(run_dir / "checkpoints")
    run_suite(suite, out, log=lambda msg: None)
    assert _metrics(run_dir) == reference


@pytest.mark.parametrize("group", [False, True], ids=["parent", "process-group"])
def test_ctrl_c_on_a_parallel_sweep_stops_every_worker_after_its_round(
    tmp_path: Path, config_file: Path, reference: list[dict[str, Any]], group: bool
) -> None:
    suite = _suite(tmp_path, config_file, seeds=[0, 1, 2])
    out = tmp_path / "sweep"
    runs = [out / "e" / f"base-s{seed}" for seed in (0, 1)]
    ended = _interrupt_when(
        ["sweep", str(suite), "--out", str(out), "--jobs", "2"],
        lambda: all(_complete_lines(d / "metrics.jsonl") >= 1 for d in runs),
        group=group,
    )
    assert not (out / "e" / "base-s2").exists()  # the pooled workers took no new run
    assert ended.returncode == 130, ended.stderr
    assert "Traceback" not in ended.stderr and "stopped after their current round" in ended.stderr
    for run_dir in runs:  # each worker checkpointed the round it was in
        done = _complete_lines(run_dir / "metrics.jsonl")
        assert [r for r, _ in checkpoints(run_dir / "checkpoints")] == [done]
    run_suite(suite, out, log=lambda msg: None)
    assert _metrics(runs[0]) == reference


def test_a_stop_request_mid_run_checkpoints_that_round_and_resume_is_exact(
    tmp_path: Path, config_file: Path, reference: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process: what the first Ctrl-C does (request_stop) during round 2."""
    make = loop.make_algorithm  # the round loop's own reference (edgelearn/runner/loop.py)

    def make_stopping(ctx: Any) -> Any:
        algo = make(ctx)
        run_round = algo.run_round

        def round_then_stop(r: int) -> Any:
            if r == 2:
                runner.request_stop()
            return run_round(r)

        algo.run_round = round_then_stop
        return algo

    cfg = load_config(config_file)
    monkeypatch.setattr(loop, "make_algorithm", make_stopping)
    with pytest.raises(Interrupted, match=f"after round 2 of {ROUNDS}") as info:
        run(cfg, tmp_path, progress=False)
    assert info.value.hint is not None and "--resume" in info.value.hint
    assert [r for r, _ in checkpoints(tmp_path / "checkpoints")] == [2]
    monkeypatch.setattr(loop, "make_algorithm", make)
    assert not runner._STOP.requested  # the request ended with the run it stopped
    run(cfg, tmp_path, progress=False, resume=True)
    assert _metrics(tmp_path) == reference


def test_the_second_ctrl_c_interrupts_at_once() -> None:
    guard = runner._StopAfterRound()
    try:
        guard._handle(signal.SIGINT, None)
        assert runner._STOP.requested
        with pytest.raises(KeyboardInterrupt):
            guard._handle(signal.SIGINT, None)
    finally:
        runner._STOP.requested = False


# --- 2. an existing run is not replaced without --overwrite -------------------------------------------------
def _main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``edgelearn ARGS`` in this process: (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["edgelearn", *args])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    code = exited.value.code
    return (code if isinstance(code, int) else 0), capsys.readouterr().err


def test_a_folder_holding_a_run_is_refused_unless_overwrite(
    tmp_path: Path,
    config_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    longer = load_config(config_file, ["output.checkpoint_every=1", "output.checkpoint_keep=10"])
    first = run(longer, tmp_path, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    (tmp_path / "accuracy_vs_round.png").write_bytes(b"old plot")
    (tmp_path / "notes.txt").write_text("mine")

    shorter = load_config(config_file, ["algorithm.rounds=2"])
    with pytest.raises(OutputError, match="already holds a run") as info:
        run(shorter, tmp_path, progress=False)
    assert str(tmp_path) in info.value.message and "--overwrite" in (info.value.hint or "")
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.name in before}
    assert after == before  # nothing written: config.yaml still the first run's beside its summary

    code, err = _main(monkeypatch, capsys, "run", str(config_file), "--quiet", "--out", str(tmp_path))
    assert code == 2 and "already holds a run" in err and "--overwrite" in err and str(tmp_path) in err
    code, err = _main(
        monkeypatch, capsys, "run", str(config_file), "--out", str(tmp_path), "--resume", "--overwrite"
    )
    assert code == 2 and "--resume and --overwrite" in err
    with pytest.raises(ConfigError, match="both"):
        run(shorter, tmp_path, resume=True, overwrite=True)

    second = run(shorter, tmp_path, progress=False, overwrite=True)
    assert second["rounds"] == 2 and first["rounds"] == ROUNDS
    assert [r for r, _ in checkpoints(tmp_path / "checkpoints")] == [2]  # the old run's 1..5 are gone
    assert [m["round"] for m in _metrics(tmp_path)] == [1, 2]
    assert "rounds: 2" in (tmp_path / "config.yaml").read_text()
    assert not (tmp_path / "accuracy_vs_round.png").exists()  # the old run's plot (plots=false now)
    assert (tmp_path / "notes.txt").read_text() == "mine"  # not a run file: kept


def test_a_sweep_restarts_its_own_run_killed_before_a_checkpoint(
    tmp_path: Path, config_file: Path, reference: list[dict[str, Any]]
) -> None:
    suite = _suite(tmp_path, config_file, seeds=[0])
    run_dir = tmp_path / "sweep" / "e" / "base-s0"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text(json.dumps(reference[0]) + "\n")  # a start killed in round 2
    run_suite(suite, tmp_path / "sweep", log=lambda msg: None)
    assert _metrics(run_dir) == reference


def test_the_demo_replaces_its_own_run_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from edgelearn.commands import demo

    calls: list[dict[str, Any]] = []

    class Stop(Exception):
        pass

    def record(cfg: Any, out: Path, **kwargs: Any) -> None:
        calls.append(kwargs)
        raise Stop

    monkeypatch.setattr(runner, "run", record)
    with pytest.raises(Stop):
        demo.run_demo(tmp_path, progress=False)
    with pytest.raises(Stop):
        demo._fedagg_part(tmp_path, Console(file=io.StringIO()), False, {})
    assert [c.get("overwrite") for c in calls] == [True, True]


# --- 3. one process per run folder -------------------------------------------------------------------------
_HOLDER = """
import sys, time
from edgelearn.report.io import locked_dir
with locked_dir(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_run_folder_held_by_another_process_is_refused_and_a_kill_frees_it(
    tmp_path: Path, config_file: Path
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        stale = tmp_path / ".metrics.jsonl.abcd1234.tmp"
        stale.write_text("the holder may be writing this")
        with pytest.raises(OutputError, match="in use") as info:
            run(load_config(config_file), tmp_path, progress=False)
        assert str(tmp_path) in info.value.message and f"pid {holder.pid}" in info.value.message
        assert not (tmp_path / "config.yaml").exists()  # refused before writing anything
        assert stale.exists()  # a live writer's temp file is never touched
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    summary = run(load_config(config_file), tmp_path, progress=False)  # the kernel dropped the lock
    assert summary["rounds"] == ROUNDS and (tmp_path / LOCK_FILE).exists()
    assert not stale.exists()


def test_the_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    with locked_dir(tmp_path):
        with pytest.raises(OutputError, match=f"pid {os.getpid()}"), locked_dir(tmp_path):
            pass
    with locked_dir(tmp_path):  # released at the end of the block
        pass


# --- 4. resume past corrupt metrics lines ------------------------------------------------------------------
def test_resume_keeps_every_valid_record_around_corrupt_lines(
    tmp_path: Path, config_file: Path, reference: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_config(config_file, ["output.checkpoint_every=1", "output.checkpoint_keep=10"])
    run(cfg, tmp_path, progress=False)
    for r in (4, 5):  # as if killed during round 4, after round 3's checkpoint
        (tmp_path / "checkpoints" / f"ckpt-{r:06d}.pt").unlink()
    (tmp_path / "summary.json").unlink()
    metrics = tmp_path / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    lines[1] = '{"round": 2, "accur'  # corrupt, with valid rounds after it
    metrics.write_text("\n".join([*lines[:4], "not json", "[1, 2]", ""]) + lines[4][:15])  # + partial line
    with caplog.at_level(logging.WARNING, logger="edgelearn.runner"):
        run(cfg, tmp_path, progress=False, resume=True)
    assert "skipped 4 corrupt or partial line(s) (line 2, 5, 6, 7)" in caplog.text
    got = _metrics(tmp_path)
    assert [m["round"] for m in got] == [1, 3, 4, 5]  # round 3 kept though it follows a corrupt line
    assert got == [reference[i] for i in (0, 2, 3, 4)]


# --- 5. output paths are checked before any work ---------------------------------------------------------
def test_unwritable_output_paths_are_refused_with_exit_2(
    tmp_path: Path, config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    under = a_file / "sub"  # works as root too, unlike a folder without write permission
    suite = _suite(tmp_path, config_file)
    commands = {
        "run": ["run", str(config_file), "--quiet", "--out"],
        "sweep": ["sweep", str(suite), "--out"],
        "demo": ["demo", "--quiet", "--out"],
        "bench": ["bench", "--quick", "--json"],
        "pretrain-autoencoder": ["pretrain-autoencoder", str(config_file), "--out"],
    }
    for name, args in commands.items():
        for bad in (a_file, under) if name not in ("bench", "pretrain-autoencoder") else (under, tmp_path):
            started = time.perf_counter()
            code, err = _main(monkeypatch, capsys, *args, str(bad))
            assert code == 2, (name, bad, err)
            assert str(bad) in err and "internal error" not in err and "How to fix" in err, (name, err)
            assert time.perf_counter() - started < 10, f"{name} worked before checking {bad}"
    assert not (tmp_path / "sweep").exists()
    if os.path.isdir("/proc/self"):
        code, err = _main(monkeypatch, capsys, *commands["run"], "/proc/x")
        assert code == 2 and "cannot write run directory (--out) /proc/x" in err


def test_output_path_helpers(tmp_path: Path) -> None:
    a_file = tmp_path / "f"
    a_file.write_text("")
    assert ensure_writable_dir(tmp_path / "new" / "deep", "x") == tmp_path / "new" / "deep"
    assert (tmp_path / "new" / "deep").is_dir() and not list((tmp_path / "new" / "deep").iterdir())
    with pytest.raises(OutputError, match=r"x .*/f is a file, not a folder"):
        ensure_writable_dir(a_file, "x")
    with pytest.raises(OutputError, match=r"is under .*/f, which is a file"):
        ensure_writable_dir(a_file / "a" / "b", "x")
    with pytest.raises(OutputError, match="is a folder, not a file"):
        ensure_writable_file(tmp_path, "y")
    assert ensure_writable_file(tmp_path / "sub" / "out.json", "y") == tmp_path / "sub" / "out.json"
    assert (tmp_path / "sub").is_dir()


# --- 6. temp files a kill left behind -------------------------------------------------------------------
def test_stale_temp_files_are_removed_when_a_run_starts_or_resumes(tmp_path: Path, config_file: Path) -> None:
    cfg = load_config(config_file, ["output.checkpoint_every=2"])
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    leftovers = [tmp_path / ".summary.json.k2j_9x0a.tmp", ckpt / ".ckpt-000002.pt.abcdefgh.tmp"]
    others = [tmp_path / ".notes.tmp", tmp_path / "data.tmp", ckpt / "ckpt-000002.pt.abcdefgh.tmp"]
    for path in [*leftovers, *others]:
        path.write_text("x")
    assert all(TEMP_NAME.match(p.name) for p in leftovers)
    assert not any(TEMP_NAME.match(p.name) for p in others)
    run(cfg, tmp_path, progress=False)
    assert not any(p.exists() for p in leftovers) and all(p.exists() for p in others)
    again = ckpt / ".ckpt-000004.pt.zzzzzzzz.tmp"
    again.write_text("x")
    run(cfg, tmp_path, progress=False, resume=True)
    assert not again.exists()
    assert remove_stale_temps(tmp_path / "missing") == []
