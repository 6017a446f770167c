"""engine.torch_threads: the automatic thread count is deterministic and hand-checkable, explicit values win,
bad values are config errors, and the run records its choice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import synthetic_config, synthetic_context

from edgelearn.config import EngineConfig
from edgelearn.engine.threads import Workload, auto_thread_count, choose_threads, lockstep_clients
from edgelearn.errors import ConfigError
from edgelearn.runner import run

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
FEW = ["topology.devices=4"]
"""Four devices: the synthetic set's 96 samples cannot serve the default 100."""
GFLOP = 1e9  # engine.auto_threads_step_flops' default: one thread per 1 GFLOP of a training step


def _pin_cores(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Pretend this process may run on ``n`` cores (its affinity mask), whatever the machine has."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(n)), raising=False)


def test_auto_thread_count_by_hand() -> None:
    assert auto_thread_count(0.0, GFLOP, 8) == 1  # no work: still one thread
    assert auto_thread_count(0.99 * GFLOP, GFLOP, 8) == 1
    assert auto_thread_count(2.5 * GFLOP, GFLOP, 8) == 2  # floor: each thread has >= 1 GFLOP
    assert auto_thread_count(30 * GFLOP, GFLOP, 8) == 8  # capped by the cores
    assert auto_thread_count(30 * GFLOP, GFLOP, 1) == 1


def test_lockstep_clients_per_executor() -> None:
    engine = EngineConfig()
    assert lockstep_clients("serial", 100, 10_000, CPU, engine, 2) == 1
    assert lockstep_clients("vmap", 100, 10_000, CPU, engine, 2) == 100
    assert lockstep_clients("vmap", 100, 10_000, CPU, EngineConfig(vmap_chunk=25), 2) == 25
    assert lockstep_clients("auto", 100, 10_000, CPU, engine, 2) == 100  # auto's rule: vmap for small models
    assert lockstep_clients("auto", 100, 10**6, CPU, engine, 2) == 1  # ... serial for big ones on a CPU
    assert lockstep_clients("auto", 8, 10_000, CPU, engine, 2) == 1  # ... and for small cohorts
    assert lockstep_clients("ray", 100, 10_000, CPU, engine, 2) == 1  # inner serial
    assert lockstep_clients("ray", 100, 10_000, CPU, EngineConfig(ray_inner="vmap", ray_workers=4), 2) == 25


def test_tiny_mlp_cohort_gets_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    _pin_cores(monkeypatch, 8)
    ctx = synthetic_context(FEW, executor="vmap")
    choice = ctx.torch_threads
    # MLP 64-32-10 (default mlp): ~1.3e4 training FLOPs per sample x batch 16 x 4 clients ~ 1e6 << 1 GFLOP
    assert choice["mode"] == "auto" and choice["chosen"] == 1 and choice["cores"] == 8
    assert choice["step_flops"] == pytest.approx(ctx.info.flops_train * 16 * 4)
    assert torch.get_num_threads() == 1
    assert "engine.auto_threads_step_flops" in choice["reason"]


def test_big_conv_with_big_batch_gets_more_threads_up_to_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    big = [*FEW, "data.input_shape=[1,28,28]", "model.name=resnet8", "algorithm.local.batch_size=512"]
    _pin_cores(monkeypatch, 3)
    ctx = synthetic_context(big)
    step = ctx.info.flops_train * 512  # serial: one client per step; resnet8 on 28x28 ~ 5.6e7 FLOPs/sample
    assert step > 3 * GFLOP
    assert ctx.torch_threads["chosen"] == 3 and torch.get_num_threads() == 3  # the affinity mask's 3 cores
    _pin_cores(monkeypatch, 1)
    assert synthetic_context(big).torch_threads["chosen"] == 1  # a sweep worker pinned to one core
    # the same workload by hand: 512 x 5.6e7 ~ 2.9e10 FLOPs -> 28 threads' worth, capped at the cores
    wl = [Workload("resnet", ctx.info.flops_train, 512, 1, ctx.info.params)]
    picks = [
        choose_threads("auto", wl, executor="serial", device=CPU, engine=EngineConfig(), cores=n).chosen
        for n in (1, 2, 16)
    ]
    assert picks == [1, 2, 16]


def test_choice_is_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    _pin_cores(monkeypatch, 4)
    wl = [Workload("a", 3e6, 32, 100, 10_000), Workload("b", 5e8, 8, 1, 10**6)]
    picks = [choose_threads("auto", wl, executor="auto", device=CPU, engine=EngineConfig()) for _ in range(3)]
    assert picks[0] == picks[1] == picks[2]
    # a: 3e6 x 32 x 100 clients in lockstep = 9.6e9 FLOPs (b: 4e9) -> 9 threads' worth, 4 cores
    assert picks[0].chosen == 4 and picks[0].step_flops == pytest.approx(9.6e9)


def test_threshold_is_configurable() -> None:
    cfg = synthetic_config(["engine.auto_threads_step_flops=1000"])
    assert cfg.engine.auto_threads_step_flops == 1000
    wl = [Workload("mlp", 1e4, 16, 1, 1000)]  # 1.6e5 FLOPs per step
    pick = choose_threads("auto", wl, executor="serial", device=CPU, engine=cfg.engine, cores=2)
    assert pick.chosen == 2


def test_explicit_value_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    _pin_cores(monkeypatch, 1)
    ctx = synthetic_context([*FEW, "engine.torch_threads=2"])
    assert ctx.torch_threads["mode"] == "explicit" and ctx.torch_threads["chosen"] == 2
    assert torch.get_num_threads() == 2  # even beyond the affinity mask: the user asked for it


def test_null_keeps_torch_default() -> None:
    torch.set_num_threads(1)
    ctx = synthetic_context([*FEW, "engine.torch_threads=null"])
    assert ctx.torch_threads["mode"] == "torch" and ctx.torch_threads["chosen"] == torch.get_num_threads()


def test_auto_is_the_default() -> None:
    assert EngineConfig().torch_threads == "auto"
    assert synthetic_config(["engine.torch_threads=auto"]).engine.torch_threads == "auto"


@pytest.mark.parametrize("bad", ["0", "-1", "fast", "true", "1.5"])
def test_invalid_values_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"engine\.torch_threads"):
        synthetic_config([f"engine.torch_threads={bad}"])


def test_invalid_threshold_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"engine\.auto_threads_step_flops"):
        synthetic_config(["engine.auto_threads_step_flops=0"])


def test_cli_exits_2_on_a_bad_thread_count() -> None:
    BAD = "engine.torch_threads=fast"  # noqa: N806
    proc = subprocess.run(
        [sys.executable, "-m", "edgelearn", "run", "configs/fedavg-digits.yaml", "--set", BAD],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "engine.torch_threads" in proc.stderr + proc.stdout


def test_summary_records_the_choice(tmp_path: Path) -> None:
    cfg = synthetic_config([*FEW, "algorithm.rounds=1", "output.plots=false"])
    run(cfg, tmp_path, progress=False)
    record = json.loads((tmp_path / "summary.json").read_text())["torch_threads"]
    assert record["mode"] == "auto" and record["chosen"] == 1 and "FLOPs" in record["reason"]


def test_ray_workers_capped_by_the_choice() -> None:
    pytest.importorskip("ray")
    from edgelearn.engine import make_executor

    capped = make_executor("ray", CPU, EngineConfig().model_copy(update={"torch_threads": 1}))
    assert capped.max_threads == 1  # type: ignore[attr-defined]
    assert make_executor("ray", CPU, EngineConfig()).max_threads is None  # type: ignore[attr-defined]
