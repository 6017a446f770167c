"""The benchmark library on a miniature plan: record schema, exact work counts, ratios, isolation, output."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgelearn.commands.bench.jobs import _Job, _run_job, _scaling_job, run_isolated, run_plan
from edgelearn.commands.bench.main import main
from edgelearn.commands.bench.measure import executor_overrides
from edgelearn.commands.bench.plan import (
    BENCH_THREADS,
    SAMPLES_PER_DEVICE,
    THREAD_STEADY_FROM,
    THREADS_PREFIX,
    W_DEVICES,
    BenchPlan,
    FLWorkload,
    ScalingStudy,
    ThreadStudy,
    default_plan,
    fedavg_config,
    too_slow,
)
from edgelearn.commands.bench.records import (
    NAIVE_SPEEDUP_TARGET,
    NUMERIC_KEYS,
    RECORD_KEYS,
    RSS_NOISE_MB,
    STEADY_SPEEDUP_TARGET,
    memory_growth,
    summarize,
)
from edgelearn.commands.bench.tables import print_tables
from edgelearn.commands.bench.threads import busy_neighbour
from edgelearn.errors import ConfigError, OutputError

DEVICES = 5
ROUNDS = 2
TRAIN = SAMPLES_PER_DEVICE * DEVICES  # synthetic: 14 samples per device -> 70
MINI_CONFIG = fedavg_config(dataset="synthetic", devices=DEVICES, rounds=ROUNDS)


def mini_plan(**kw: Any) -> BenchPlan:
    """5 devices, 2 rounds, serial + vmap, centralized (sweep 16 and 32) and the naive loop, in-process."""
    workload = FLWorkload(
        "mini",
        MINI_CONFIG,
        ("serial", "vmap"),
        family="mlp",
        naive=True,
        sweep=(16, 32),
        sweep_samples=64,
        sweep_repeats=1,
    )
    return BenchPlan(workloads=(workload,), isolate=False, **kw)


@pytest.fixture(scope="module")
def mini_records() -> list[dict[str, Any]]:
    return run_plan(mini_plan())


def by(records: list[dict[str, Any]], workload: str, executor: str) -> dict[str, Any]:
    (found,) = [r for r in records if r["workload"] == workload and r["executor"] == executor]
    return found


def test_records_have_the_issue_schema_and_positive_numbers(mini_records: list[dict[str, Any]]) -> None:
    names = {(r["workload"], r["executor"]) for r in mini_records}
    assert names == {
        ("mini", "centralized"),
        ("mini", "naive-loop"),
        ("mini", "serial"),
        ("mini", "vmap"),
        ("centralized-sweep-mini", "centralized-b16"),
        ("centralized-sweep-mini", "centralized-b32"),
    }
    for r in mini_records:
        assert set(RECORD_KEYS) <= set(r), r
        assert r["status"] == "ok"
        for key in ("wall_s", "loop_s", "samples_per_s", "peak_rss_mb"):
            assert r[key] > 0, (r["executor"], key)
        centralized = r["executor"].startswith("centralized")
        assert (r["updates_per_s"] is None) == centralized
        if not centralized:
            assert r["updates_per_s"] > 0
        if r["final_accuracy"] is not None:
            assert 0.0 <= r["final_accuracy"] <= 1.0
        assert r["wall_s"] >= r["loop_s"]


def test_work_counts_are_exact(mini_records: list[dict[str, Any]]) -> None:
    # one local epoch of every device per round = the whole training set per round
    for executor in ("serial", "vmap", "naive-loop", "centralized"):
        assert by(mini_records, "mini", executor)["samples"] == ROUNDS * TRAIN
    for executor in ("serial", "vmap", "naive-loop"):
        r = by(mini_records, "mini", executor)
        assert r["updates"] == ROUNDS * DEVICES
        assert r["samples_per_s"] == pytest.approx(r["samples"] / r["loop_s"])
        assert r["updates_per_s"] == pytest.approx(r["updates"] / r["loop_s"])
    assert by(mini_records, "centralized-sweep-mini", "centralized-b32")["samples"] == 64


def test_serial_and_vmap_train_the_same_model(mini_records: list[dict[str, Any]]) -> None:
    serial, vmap = by(mini_records, "mini", "serial"), by(mini_records, "mini", "vmap")
    assert serial["final_accuracy"] == vmap["final_accuracy"]


def test_ratios_are_derived_from_the_references(mini_records: list[dict[str, Any]]) -> None:
    central = by(mini_records, "mini", "centralized")
    naive = by(mini_records, "mini", "naive-loop")
    best = max(
        by(mini_records, "centralized-sweep-mini", f"centralized-b{b}")["samples_per_s"] for b in (16, 32)
    )
    for executor in ("serial", "vmap"):
        r = by(mini_records, "mini", executor)
        assert r["x_centralized"] == pytest.approx(r["samples_per_s"] / central["samples_per_s"])
        assert r["x_half_best_centralized"] == pytest.approx(r["samples_per_s"] / (0.5 * best))
        assert r["speedup_vs_naive"] == pytest.approx(naive["loop_s"] / r["loop_s"])
    summary = summarize(mini_records)
    fastest = min((by(mini_records, "mini", e) for e in ("serial", "vmap")), key=lambda r: r["loop_s"])
    entry = summary["workloads"]["mini"]
    assert entry["fastest_executor"] == fastest["executor"]
    assert entry["naive_target_met"] == (fastest["speedup_vs_naive"] >= 10)


def test_main_prints_tables_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "bench.json"
    records = main(False, out, plan=mini_plan())
    data = json.loads(out.read_text(encoding="utf-8"))
    assert set(data) == {"environment", "records", "summary"}
    assert data["environment"]["torch_threads"] == BENCH_THREADS
    assert [(r["workload"], r["executor"]) for r in data["records"]] == [
        (r["workload"], r["executor"]) for r in records
    ]
    assert "mini" in data["summary"]["workloads"]
    printed = capsys.readouterr().out
    assert "naive-loop" in printed and "centralized-b32" not in printed  # sweep rows show their batch only
    assert "Centralized samples/s" in printed and "Executors on FedAvg workloads" in printed


def test_paired_run_times_executors_against_the_naive_loop_in_one_process(
    capsys: pytest.CaptureFixture[str],
) -> None:
    workload = FLWorkload(
        "mini", MINI_CONFIG, ("vmap",), family="mlp", centralized=False, naive=True, paired=("vmap", "serial")
    )
    records = run_plan(BenchPlan(workloads=(workload,), isolate=False))
    assert {(r["workload"], r["executor"]) for r in records} == {
        ("mini", "naive-loop"),
        ("mini", "vmap"),
        ("paired-mini", "vmap"),
        ("paired-mini", "serial"),
    }
    naive = by(records, "mini", "naive-loop")
    for executor in ("vmap", "serial"):
        r = by(records, "paired-mini", executor)
        assert r["status"] == "ok" and r["rounds"] == ROUNDS
        assert r["samples"] == ROUNDS * TRAIN and r["updates"] == ROUNDS * DEVICES
        assert r["speedup_vs_naive"] == pytest.approx(r["naive_loop_s"] / r["loop_s"])
        assert r["naive_final_accuracy"] == naive["final_accuracy"]  # the same naive run, just interleaved
        # The lean loop (one worker module, running sum) does the naive loop's arithmetic in the same order
        # with the same batch orders, so it trains the very same model.
        assert r["lean_final_accuracy"] == r["naive_final_accuracy"]
        assert r["speedup_vs_lean"] == pytest.approx(r["lean_loop_s"] / r["loop_s"])
        assert r["speedup_vs_naive_steady"] > 0 and r["speedup_vs_lean_steady"] > 0
        assert "x_centralized" not in r
    # Paired runs train the same model as the stand-alone run of that executor.
    assert (
        by(records, "paired-mini", "vmap")["final_accuracy"] == by(records, "mini", "vmap")["final_accuracy"]
    )
    summary = summarize(records)
    assert set(summary["workloads"]) == {"mini"}
    entry = summary["workloads"]["mini"]
    best = max(
        (by(records, "paired-mini", e) for e in ("vmap", "serial")), key=lambda r: r["speedup_vs_naive"]
    )
    assert entry["paired_executor"] == best["executor"]
    assert entry["speedup_vs_naive_paired"] == best["speedup_vs_naive"]
    assert entry["naive_target_met_paired"] == (best["speedup_vs_naive"] >= NAIVE_SPEEDUP_TARGET)
    assert entry["steady_target_met_paired"] == (best["speedup_vs_naive_steady"] >= STEADY_SPEEDUP_TARGET)
    print_tables(records, summary)
    printed = capsys.readouterr().out
    assert "Paired with the naive and lean loops" in printed and "paired, same process" in printed


def test_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="is a folder, not a file"):
        main(True, tmp_path, plan=mini_plan())
    (tmp_path / "b.json").write_text("")
    with pytest.raises(OutputError, match="is a file, not a folder"):  # checked before measuring anything
        main(True, tmp_path / "b.json" / "c.json", plan=mini_plan())
    with pytest.raises(ConfigError, match="--threads"):
        main(True, None, threads=0)
    with pytest.raises(ConfigError, match="unknown"):
        executor_overrides("gpu-farm")
    with pytest.raises(ConfigError, match="--device is 'tpu'"):
        default_plan(quick=True, device="tpu")


def test_plan_places_every_workload_on_the_device() -> None:
    """``--device`` reaches every workload's config; a GPU plan leaves out the CPU-only sections."""
    plan = default_plan(quick=True, device="auto")
    configs = [w.config for w in plan.workloads] + [s.config for s in plan.scaling]
    assert plan.device == "auto" and {c["device"] for c in configs} == {"auto"}
    assert default_plan(quick=True).workloads[0].config["device"] == "cpu"
    if torch.cuda.is_available():
        gpu = default_plan(quick=True, device="cuda")
        assert gpu.thread_study is None and any(n["section"] == "threads" for n in gpu.notes)
    else:  # the same error (exit 2) a config with device: cuda gives on a machine without a GPU
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            default_plan(quick=True, device="cuda")


def test_isolated_scaling_run_and_failures() -> None:
    job = _scaling_job(
        ScalingStudy("scaling-mini", MINI_CONFIG, (DEVICES,), ("vmap",)),
        "vmap",
        [DEVICES],
        BenchPlan(workloads=()),
    )
    records, failure = run_isolated(job.spec, timeout_s=120)
    assert failure is None
    (r,) = records
    assert (r["workload"], r["executor"], r["devices"], r["status"]) == (
        "scaling-mini",
        "vmap",
        DEVICES,
        "ok",
    )
    assert r["updates"] == DEVICES and r["samples"] == TRAIN  # one round
    assert r["peak_rss_mb"] > 0 and r["round_rss_growth_mb"] >= 0
    _, failure = run_isolated({**job.spec, "kind": "nonsense"}, timeout_s=120)
    assert failure is not None and "ConfigError" in failure
    records, failure = run_isolated(job.spec, timeout_s=0.01)
    assert records == [] and failure is not None and failure.startswith("timeout")


def test_missing_results_become_failure_records() -> None:
    job = _Job({"kind": "nonsense", "threads": 1}, (("w", "serial", None), ("w", "vmap", 10)), 120.0)
    recs = _run_job(job, BenchPlan(workloads=()))
    assert [(r["workload"], r["executor"], r["status"], r.get("devices")) for r in recs] == [
        ("w", "serial", "error", None),
        ("w", "vmap", "error", 10),
    ]
    assert all(r[k] is None for r in recs for k in NUMERIC_KEYS)
    assert "nonsense" in recs[0]["note"]


def test_quick_plan_shape() -> None:
    plan = default_plan(quick=True)
    names = [w.name for w in plan.workloads]
    assert names[:2] == ["W-digits-mlp", "W1000-synthetic-mlp"]
    w = plan.workloads[0]
    assert w.config["algorithm"]["rounds"] == 20 and w.config["topology"]["devices"] == 100
    assert w.config["algorithm"]["local"] == {"lr": 0.05, "batch_size": 16, "epochs": 1}
    assert plan.workloads[1].naive and plan.workloads[1].config["data"]["num_train"] == 14_000
    assert w.naive and w.paired == ("vmap",)  # issue 17: W's steady round against the loops, in one run
    (scaling,) = plan.scaling
    assert scaling.devices == (10, 100, 1000, 10_000) and scaling.max_devices == {"serial": 1000}
    assert not any(e.startswith("ray") for w in plan.workloads for e in w.executors)


def test_too_slow_projection() -> None:
    assert too_slow(None, 10_000, 30.0) is None
    assert too_slow((1000, 2.0), 10_000, 30.0) is None  # 20 s <= 30 s
    assert too_slow((1000, 4.0), 10_000, 30.0) == "projected round 40 s exceeds the 30 s cap"


def _rows(peaks: list[float], devices: tuple[int, ...] = (10, 100, 1000, 10_000)) -> list[dict[str, Any]]:
    return [{"devices": n, "loop_s": 0.1, "peak_rss_mb": p} for n, p in zip(devices, peaks)]


def test_memory_growth_by_hand() -> None:
    # growth over the 10-device run: 99 MB at 1,000 devices, 999 MB at 10,000 -> 0.1 MB per device each
    out = memory_growth(_rows([300.0, 309.0, 399.0, 1299.0]))
    assert out["kb_per_device"] == {
        "1000": pytest.approx(1024 * 99 / 990),
        "10000": pytest.approx(1024 * 999 / 9990),
    }
    assert out["growth_exponent"] == pytest.approx(math.log(999 / 99) / math.log(10))
    assert out["linear_or_better"] is True
    # small growth at 1,000 devices is within RSS noise: 103 <= 9990/990 * (8 + 8) = 161
    assert memory_growth(_rows([289.0, 290.0, 297.0, 392.0]))["linear_or_better"] is True
    # quadratic growth is flagged: 1000 > 9990/990 * (10 + 8) = 182
    assert memory_growth(_rows([300.0, 300.1, 310.0, 1300.0]))["linear_or_better"] is False


DEVICES_4 = (10, 100, 1000, 10_000)


@settings(max_examples=50, deadline=None)
@given(
    base=st.floats(100, 1000),
    per_device=st.floats(0, 1.0),
    noise=st.lists(st.floats(-1, 1), min_size=4, max_size=4),
)
def test_linear_growth_with_rss_noise_passes(base: float, per_device: float, noise: list[float]) -> None:
    # readings off by up to a quarter of the noise allowance either way
    jitter = [RSS_NOISE_MB / 4 * e for e in noise]
    peaks = [base + per_device * (n - 10) + j for n, j in zip(DEVICES_4, jitter)]
    assert memory_growth(_rows(peaks, DEVICES_4))["linear_or_better"] is True


@settings(max_examples=50, deadline=None)
@given(base=st.floats(100, 1000), scale=st.floats(1.0, 1000.0))
def test_quadratic_growth_fails(base: float, scale: float) -> None:
    # growth at 1,000 devices is at least the noise allowance, then grows with the square of the devices
    coef = scale * RSS_NOISE_MB / 990**2
    peaks = [base + coef * (n - 10) ** 2 for n in DEVICES_4]
    assert memory_growth(_rows(peaks, DEVICES_4))["linear_or_better"] is False


def test_tier_cohort_benchmark_times_both_executors(tmp_path: Path) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "tier_cohort.py"
    spec = importlib.util.spec_from_file_location("tier_cohort", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "tier.json"
    records = module.main(["--model", "cnn_small", "--clients", "2", "--samples", "12", "--json", str(out)])
    assert [r["executor"] for r in records] == ["serial", "vmap"]
    for r in records:
        assert r["wall_s"] > 0 and r["gflops_per_s"] > 0
        assert r["ms_per_client_step"] == pytest.approx(1000 * r["wall_s"] / (2 * 2))  # 12 samples at batch 8
    assert json.loads(out.read_text())["records"] == records


def test_thread_study_records_each_setting_idle_and_busy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = ThreadStudy(
        name=f"{THREADS_PREFIX}mini",
        config=fedavg_config(dataset="synthetic", devices=DEVICES, rounds=THREAD_STEADY_FROM),
        settings=("auto", 1, 2),
    )
    plan = BenchPlan(workloads=(), isolate=False, thread_study=study)
    out = tmp_path / "bench.json"
    records = main(False, out, plan=plan)
    rows = {(r["workload"], r["executor"]): r for r in records}
    assert set(rows) == {
        (f"{study.name}-{cond}", f"vmap threads={s}") for cond in ("idle", "busy") for s in ("auto", 1, 2)
    }
    for (workload, _executor), r in rows.items():
        assert r["status"] == "ok" and r["executor_name"] == "vmap"
        assert r["busy"] == workload.endswith("-busy")
        assert r["round_s_median"] > 0 and r["steady_rounds"] == "3..3"
        assert r["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
        assert r["x_one_thread"] == pytest.approx(
            r["round_s_median"] / rows[(workload, "vmap threads=1")]["round_s_median"]
        )
    for cond in ("idle", "busy"):
        w = f"{study.name}-{cond}"
        assert rows[(w, "vmap threads=auto")]["threads_chosen"] == 1  # 5 tiny MLPs: far below 1 GFLOP a step
        assert rows[(w, "vmap threads=2")]["threads_chosen"] == 2
        assert rows[(w, "vmap threads=1")]["x_one_thread"] == 1.0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert set(data["summary"]["threads"]) == {f"{study.name}-idle", f"{study.name}-busy"}
    assert set(data["summary"]["threads"][f"{study.name}-busy"]) == {"auto", "1", "2"}
    printed = capsys.readouterr().out
    assert "Threads: W's steady round" in printed and "busy" in printed


def test_quick_plan_has_the_thread_study() -> None:
    study = default_plan(quick=True).thread_study
    assert study is not None and study.executor == "vmap"
    assert study.settings == ("auto", 1, 2) and study.busy == (False, True)
    assert study.config["topology"]["devices"] == W_DEVICES
    assert study.config["algorithm"]["local"] == {"lr": 0.05, "batch_size": 16, "epochs": 1}


def test_busy_neighbour_is_bounded_in_time() -> None:
    neighbour = busy_neighbour(0.5)  # its own deadline ends it even if nobody kills it
    assert neighbour.wait(timeout=30) == 0
