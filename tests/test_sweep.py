"""Experiment suites (edgelearn sweep): grids of runs, aggregation over seeds, resumable, plotted."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest
import yaml

from edgelearn.commands.sweep.results import aggregate
from edgelearn.commands.sweep.spec import cell_slug, cells, load_suite
from edgelearn.commands.sweep.suite import run_suite
from edgelearn.errors import ConfigError
from edgelearn.report.io import read_summary
from edgelearn.run_config import load_config
from edgelearn.runner import run

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "topology.devices=4",
    "algorithm.rounds=2",
    "algorithm.local.epochs=1",
    "output.plots=false",
    "engine.torch_threads=1",
]


def write_suite(tmp_path: Path, **experiment: object) -> Path:
    exp = {
        "name": "lr-sweep",
        "base": str(ROOT / "configs/fedavg-digits.yaml"),
        "seeds": [0, 1],
        "set": TINY,
        "axes": {"algorithm.local.lr": [0.05, 0.1]},
        "metrics": ["final_accuracy", "energy_j", "rounds"],
        "plots": [
            {"kind": "curves", "x": "round", "y": "accuracy", "group": "algorithm.local.lr"},
            {"kind": "sweep", "x": "algorithm.local.lr", "y": "final_accuracy"},
            {"kind": "scatter", "x": "energy_j", "y": "final_accuracy"},
        ],
        "quick": {"seeds": [0], "axes": {"algorithm.local.lr": [0.05]}},
        **experiment,
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"suite": "t", "experiments": [exp]}))
    return path


def test_cells_and_slugs() -> None:
    grid = cells({"a.b": [1, 2], "c": ["x"]})
    assert grid == [{"a.b": 1, "c": "x"}, {"a.b": 2, "c": "x"}]
    assert cell_slug(grid[0]) == "b=1_c=x"
    assert cell_slug({}) == "base"
    assert cell_slug({"k": "a/b c"}) == "k=a_b_c"


def test_aggregate_mean_and_sample_sd() -> None:
    rows = [
        {"cell": {"a": 1}, "slug": "a=1", "seed": s, "metrics": {"m": v}} for s, v in [(0, 1.0), (1, 3.0)]
    ] + [{"cell": {"a": 2}, "slug": "a=2", "seed": 0, "metrics": {"m": None}}]
    out = aggregate(rows, ["m"])
    assert out[0]["m"]["mean"] == 2.0 and out[0]["m"]["sd"] == pytest.approx(2**0.5)
    assert out[0]["seeds"] == [0, 1]
    assert out[1]["m"] == {"mean": None, "sd": None, "n": 0, "values": []}


def test_sweep_runs_aggregates_plots_and_resumes(tmp_path: Path) -> None:
    suite = write_suite(tmp_path)
    out = tmp_path / "out"
    results = run_suite(suite, out, log=lambda _: None)["lr-sweep"]
    exp = out / "lr-sweep"
    assert len(results["rows"]) == 4
    for row in results["rows"]:
        summary = read_summary(exp / row["run_dir"])
        assert summary["seed"] == row["seed"]
        assert row["metrics"]["final_accuracy"] == summary["final_accuracy"]
    # the aggregate is the mean over the seeds' summaries
    cell = results["cells"][1]
    values = [read_summary(exp / f"lr=0.1-s{s}")["final_accuracy"] for s in (0, 1)]
    assert cell["cell"] == {"algorithm.local.lr": 0.1}
    assert cell["final_accuracy"]["mean"] == pytest.approx(statistics.fmean(values))
    assert json.loads((exp / "results.json").read_text())["cells"][1]["final_accuracy"]["n"] == 2
    assert "| 0.1 | 0,1 |" in (exp / "results.md").read_text()
    pngs = sorted(p.name for p in exp.glob("*.png"))
    assert pngs == [
        "curves-accuracy-vs-round.png",
        "scatter-final_accuracy-vs-energy_j.png",
        "sweep-final_accuracy-vs-algorithm.local.lr.png",
    ]
    # a second call reuses the finished runs instead of training again
    stamp = (exp / "lr=0.1-s1" / "summary.json").stat().st_mtime_ns
    again = run_suite(suite, out, log=lambda _: None)["lr-sweep"]
    assert (exp / "lr=0.1-s1" / "summary.json").stat().st_mtime_ns == stamp
    assert again["cells"] == results["cells"]


def test_quick_replaces_seeds_and_axes(tmp_path: Path) -> None:
    suite = write_suite(tmp_path, plots=[])
    results = run_suite(suite, tmp_path / "q", quick=True, log=lambda _: None)["lr-sweep"]
    assert [(r["slug"], r["seed"]) for r in results["rows"]] == [("lr=0.05", 0)]


def test_bad_suites_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"experiments\.0\.kind"):
        load_suite(write_suite(tmp_path, kind="nonsense"))
    with pytest.raises(ConfigError, match="does not exist"):
        run_suite(write_suite(tmp_path, base="missing.yaml"), tmp_path / "o", log=lambda _: None)
    with pytest.raises(ConfigError, match="not experiments"):
        run_suite(write_suite(tmp_path), tmp_path / "o", only=["nope"], log=lambda _: None)
    with pytest.raises(ConfigError, match="cannot read"):
        load_suite(tmp_path / "absent.yaml")


@pytest.mark.parametrize("suite", ["configs/two_stage/experiments.yaml", "configs/fedagg/experiments.yaml"])
@pytest.mark.parametrize("quick", [False, True])
def test_shipped_suites_build_valid_configs(suite: str, quick: bool) -> None:
    from edgelearn.commands.sweep.suite import check_suite

    assert check_suite(ROOT / suite, quick=quick) > 0


def test_check_suite_names_the_bad_cell(tmp_path: Path) -> None:
    from edgelearn.commands.sweep.suite import check_suite

    with pytest.raises(ConfigError, match="experiment lr-sweep, cell lr=-1"):
        check_suite(write_suite(tmp_path, axes={"algorithm.local.lr": [-1]}))


def test_cases_bundle_overrides_into_one_axis(tmp_path: Path) -> None:
    from edgelearn.commands.sweep.spec import ExperimentSpec

    exp = ExperimentSpec(
        name="m",
        base="x.yaml",
        set=["seed=1"],
        cases={"a": {"algorithm.name": "fedavg"}, "b": {"algorithm.name": "hierfavg", "model.name": "mlp"}},
        axes={"partition.alpha": [1.0]},
    )
    grid = exp.run_cells()
    assert grid == [{"case": "a", "partition.alpha": 1.0}, {"case": "b", "partition.alpha": 1.0}]
    assert exp.overrides(grid[1]) == [
        "seed=1",
        "algorithm.name=hierfavg",
        "model.name=mlp",
        "partition.alpha=1.0",
    ]
    assert cell_slug(grid[1]) == "case=b_alpha=1.0"


def test_parallel_jobs_match_serial_and_apply_extra_overrides(tmp_path: Path) -> None:
    suite = write_suite(tmp_path, plots=[])
    extra = ["algorithm.rounds=1"]
    serial = run_suite(suite, tmp_path / "serial", log=lambda _: None, extra=extra)["lr-sweep"]
    lines: list[str] = []
    parallel = run_suite(suite, tmp_path / "par", log=lines.append, jobs=2, extra=extra)["lr-sweep"]
    assert parallel["rows"] == serial["rows"]  # same runs, same order, same metrics: seeds decide, not jobs
    assert parallel["set"][-1] == "algorithm.rounds=1"
    assert all(r["metrics"]["rounds"] == 1 for r in parallel["rows"])
    started = [line.split()[1] for line in lines if line.strip().startswith("started")]
    assert started == ["lr=0.05-s0", "lr=0.1-s0", "lr=0.05-s1", "lr=0.1-s1"]  # seed-major
    # finished runs are kept: a second parallel call starts nothing
    lines.clear()
    run_suite(suite, tmp_path / "par", log=lines.append, jobs=2, extra=extra)
    assert not [line for line in lines if "started" in line]


def test_parallel_failure_names_the_run_and_keeps_the_user_error(tmp_path: Path) -> None:
    from edgelearn.errors import EdgelearnError

    missing = tmp_path / "no-mnist-here"
    suite = write_suite(
        tmp_path, plots=[], seeds=[0], set=[*TINY, "data.dataset=mnist", f"data.data_dir={missing}"]
    )
    with pytest.raises(EdgelearnError, match=r"run lr=0\.(05|1)-s0: .*no-mnist-here") as info:
        run_suite(suite, tmp_path / "o", log=lambda _: None, jobs=2)
    assert info.value.hint  # the data error's fix-it hint survives the process boundary
    assert not list((tmp_path / "o").rglob("sweep_error.json"))  # consumed, so a re-run starts clean
    with pytest.raises(ConfigError, match="more than the"):
        run_suite(write_suite(tmp_path, plots=[]), tmp_path / "o2", log=lambda _: None, jobs=10_000)


def test_rounds_to_metric_and_dotted_keys_with_dots(tmp_path: Path) -> None:
    from edgelearn.commands.sweep.results import _dig, run_metric

    records = [
        {"round": 1, "accuracy": 0.4, "delay_s": 1.5, "energy_j": 10.0},
        {"round": 2, "accuracy": 0.8, "delay_s": 3.25, "energy_j": 21.0},
    ]
    assert run_metric("rounds_to:0.5", {}, records) == 2.0
    assert run_metric("rounds_to:0.9", {}, records) is None
    # time and energy to accuracy: the cumulative ledger totals at that first round
    assert (
        run_metric("delay_to:0.5", {}, records) == 3.25 and run_metric("energy_to:0.4", {}, records) == 10.0
    )
    assert run_metric("delay_to:0.9", {}, records) is None
    summary = {"rounds_to_target": {"72.5%": 3, "70%": None}, "a": {"b": {"c": 1}}}
    assert run_metric("rounds_to_target.72.5%", summary, []) == 3.0
    assert run_metric("plan.feasible", {"plan": {"feasible": True}}, []) == 1.0  # a flag's mean is a share
    assert run_metric("plan.feasible", {"plan": {"feasible": False}}, []) == 0.0
    assert _dig(summary, "a.b.c") == 1 and _dig(summary, "a.x") is None and _dig(summary, "a.b.c.d") is None
    with pytest.raises(ConfigError, match="rounds_to:0.7"):
        load_suite(write_suite(tmp_path, metrics=["rounds_to:70"]))
    with pytest.raises(ConfigError, match="delay_to:0.7"):
        load_suite(write_suite(tmp_path, metrics=["delay_to:x"]))
    # a cell where only some seeds reach the target says how many did
    from edgelearn.commands.sweep.results import results_markdown

    rows = [
        {"cell": {"a": 1}, "slug": "a=1", "seed": s, "metrics": {"rounds_to:0.5": v}}
        for s, v in [(0, 2.0), (1, None), (2, 4.0)]
    ]
    metric = ["rounds_to:0.5"]
    table = results_markdown({"experiment": "t", "cells": aggregate(rows, metric)}, metric)
    assert "| 1 | 0,1,2 | 3.0 ± 1.4 (2 of 3) |" in table


def test_a_worker_killed_without_a_report_says_so(tmp_path: Path) -> None:
    from edgelearn.commands.sweep.execute import _run_failure

    error = _run_failure(tmp_path / "case=x-s0", -9)
    assert isinstance(error, RuntimeError)
    assert "case=x-s0" in str(error) and "signal 9" in str(error) and "resumes" in str(error)


def test_a_diverged_run_is_kept_as_a_result_with_missing_metrics(tmp_path: Path) -> None:
    suite = write_suite(tmp_path, plots=[], seeds=[0], axes={"algorithm.local.lr": [0.05, 1.0e9]})
    out = tmp_path / "o"
    lines: list[str] = []
    results = run_suite(suite, out, log=lines.append)["lr-sweep"]  # does not raise
    stable, wild = results["rows"]
    assert "diverged" not in stable and stable["metrics"]["final_accuracy"] is not None
    assert "non-finite" in wild["diverged"] or "diverged" in wild["diverged"]
    assert all(v is None for v in wild["metrics"].values())
    assert results["cells"][1]["final_accuracy"]["n"] == 0
    assert any("diverged" in line for line in lines)
    marker = out / "lr-sweep" / wild["run_dir"] / "diverged.json"
    stamp = marker.stat().st_mtime_ns
    run_suite(suite, out, log=lambda _: None, jobs=2)  # kept as a result: neither path retrains it
    assert marker.stat().st_mtime_ns == stamp


def test_case_and_seed_options_cut_a_sweep_and_name_unknown_cases(tmp_path: Path) -> None:
    from edgelearn.commands.sweep.suite import check_suite

    bundles = {"slow": {"algorithm.local.lr": 0.05}, "fast": {"algorithm.local.lr": 0.1}}
    suite = write_suite(tmp_path, plots=[], axes={}, cases=bundles)
    assert check_suite(suite) == 4
    assert check_suite(suite, cases=["fast"], seeds=[5]) == 1
    results = run_suite(suite, tmp_path / "o", cases=["fast"], seeds=[2, 2], log=lambda _: None)["lr-sweep"]
    assert [(r["slug"], r["seed"]) for r in results["rows"]] == [("case=fast", 2)]
    assert results["seeds"] == [2]
    assert read_summary(tmp_path / "o/lr-sweep/case=fast-s2")["seed"] == 2
    with pytest.raises(ConfigError, match=r"(?s)--case \['nope'\].*choose from \['fast', 'slow'\]"):
        check_suite(suite, cases=["nope"])
    # beside one that has the case, an experiment without it is left out rather than run whole
    cased = yaml.safe_load(suite.read_text())["experiments"][0]
    both = tmp_path / "both.yaml"
    plain_exp = {**cased, "name": "plain", "cases": {}}
    both.write_text(yaml.safe_dump({"suite": "t", "experiments": [cased, plain_exp]}))
    assert check_suite(both) == 4 + 2  # plain: no cases, one cell x 2 seeds
    assert check_suite(both, cases=["fast"]) == 2
    # and naming a case when no chosen experiment has cases says so
    plain = write_suite(tmp_path, plots=[])
    with pytest.raises(ConfigError, match="define no `cases:`"):
        run_suite(plain, tmp_path / "p", cases=["fast"], log=lambda _: None)


def _started(lines: list[str]) -> dict[str, int]:
    """Run name -> worker pid, from a parallel sweep's ``started NAME on cores [...] (worker PID)`` lines."""
    found = [re.match(r"\s*started (\S+) on cores .* \(worker (\d+)\)", line) for line in lines]
    return {m[1]: int(m[2]) for m in found if m}


def _metric_lines(run_dir: Path) -> list[dict[str, object]]:
    """metrics.jsonl records without their wall-clock fields."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if "wall" not in k} for r in records]


def test_a_worker_restores_the_process_state_before_each_run() -> None:
    import logging
    import os
    import random

    import numpy as np
    import torch

    from edgelearn import runner
    from edgelearn.commands.sweep.execute import _fresh_state
    from edgelearn.engine.precision import current_precision, set_precision

    threads, cores = torch.get_num_threads(), sorted(os.sched_getaffinity(0))[:1]
    draws = (torch.rand(3), np.random.rand(3), random.random())
    restore = _fresh_state(cores)
    try:
        torch.rand(5), np.random.rand(5), random.random()  # an earlier run's draws, threads, policy, flag
        torch.set_num_threads(2)
        set_precision("bfloat16")
        runner.request_stop()
        leaked = logging.NullHandler()
        logging.root.addHandler(leaked)
        restore()
        assert torch.get_num_threads() == 1 and current_precision() == "float32"
        assert not runner._STOP.requested
        assert leaked not in logging.root.handlers
        again = (torch.rand(3), np.random.rand(3), random.random())
        restore()
        assert torch.equal(torch.rand(3), again[0]) and np.array_equal(np.random.rand(3), again[1])
        assert random.random() == again[2] and not torch.equal(again[0], draws[0])
    finally:
        torch.set_num_threads(threads)
        set_precision("float32")
        runner._STOP.requested = False


def test_pooled_workers_take_run_after_run_with_the_results_of_one_process_each(tmp_path: Path) -> None:
    """Two workers, six runs: a diverging run and a bfloat16 run are followed on the same worker by others,
    whose metrics.jsonl equal the --jobs 1 sweep's line by line (wall fields aside)."""
    cases = {
        "wild": {"algorithm.local.lr": 1.0e9},
        "bf16": {"engine.precision": "bfloat16", "engine.torch_threads": 2},
        "plain": {},
    }
    suite = write_suite(tmp_path, plots=[], axes={}, cases=cases)
    serial = run_suite(suite, tmp_path / "serial", log=lambda _: None)["lr-sweep"]
    lines: list[str] = []
    pooled = run_suite(suite, tmp_path / "par", log=lines.append, jobs=2)["lr-sweep"]
    assert pooled["rows"] == serial["rows"]
    started = _started(lines)
    order = list(started)
    assert order == [f"case={c}-s{s}" for s in (0, 1) for c in sorted(cases)]  # seed-major
    assert len(set(started.values())) == 2  # two workers did all six runs
    # which later run a worker takes is scheduling: test_one_worker_runs_on_after_... pins that down
    for row in pooled["rows"]:
        if "diverged" not in row:
            name = row["run_dir"]
            assert _metric_lines(tmp_path / "par/lr-sweep" / name) == _metric_lines(
                tmp_path / "serial/lr-sweep" / name
            )


def test_one_worker_runs_on_after_diverged_failed_and_bfloat16_runs(tmp_path: Path) -> None:
    """A pool of one worker takes every run in order, so the runs after a diverged run, a failed run and a
    bfloat16 two-thread run certainly share its process; their metrics equal runs made in this process."""
    from edgelearn.commands.sweep.execute import run_parallel
    from edgelearn.errors import EdgelearnError

    base = ROOT / "configs/fedavg-digits.yaml"
    runs = {
        "wild": ["algorithm.local.lr=1e9"],
        "after-wild": [],
        "bad": ["data.dataset=mnist", f"data.data_dir={tmp_path / 'no-mnist-here'}"],
        "bf16": ["engine.precision=bfloat16", "engine.torch_threads=2"],
        "after-bf16": ["algorithm.local.lr=0.1"],
    }
    lines: list[str] = []
    with pytest.raises(EdgelearnError, match="no-mnist-here"):
        run_parallel([(base, [*TINY, *o], tmp_path / "pool" / n) for n, o in runs.items()], 1, lines.append)
    assert len(set(_started(lines).values())) == 1  # one worker process did all five runs
    assert (tmp_path / "pool/wild/diverged.json").is_file()
    for name in ("after-wild", "after-bf16"):
        run(load_config(base, [*TINY, *runs[name]]), tmp_path / "here" / name)
        assert _metric_lines(tmp_path / "pool" / name) == _metric_lines(tmp_path / "here" / name)


def test_a_failed_run_does_not_stop_its_worker(tmp_path: Path) -> None:
    from edgelearn.errors import EdgelearnError

    missing = tmp_path / "no-mnist-here"
    cases = {"bad": {"data.dataset": "mnist", "data.data_dir": str(missing)}, "good": {}}
    suite = write_suite(tmp_path, plots=[], axes={}, cases=cases)
    lines: list[str] = []
    with pytest.raises(EdgelearnError, match=r"run case=bad-s[01]: .*no-mnist-here") as info:
        run_suite(suite, tmp_path / "o", log=lines.append, jobs=2)
    assert info.value.hint
    for seed in (0, 1):  # the good runs all ran (that a worker runs on after a failure: the one-worker test)
        assert (tmp_path / f"o/lr-sweep/case=good-s{seed}/summary.json").is_file()
    assert sum("FAILED case=bad" in line for line in lines) == 2
    assert not list((tmp_path / "o").rglob("sweep_error.json"))


def test_a_killed_worker_is_replaced_on_its_cores_and_its_run_reported(tmp_path: Path) -> None:
    import os
    import signal

    suite = write_suite(tmp_path, plots=[], axes={}, seeds=[0, 1, 2])
    lines: list[str] = []

    def log(line: str) -> None:  # kill -9 (as the OOM killer does) the worker that gets the first run
        lines.append(line)
        if line.strip().startswith("started base-s0"):
            os.kill(_started([line])["base-s0"], signal.SIGKILL)

    with pytest.raises(RuntimeError, match=r"run base-s0: .*signal 9.*out-of-memory"):
        run_suite(suite, tmp_path / "o", log=log, jobs=2)
    died = [line for line in lines if "died" in line]
    assert (
        len(died) == 1
        and "(signal 9) while running base-s0; starting a fresh one on the same cores" in died[0]
    )
    killed_cores = re.search(r"started base-s0 on cores (\[.*?\])", "\n".join(lines))[1]  # type: ignore[index]
    assert f"on cores {killed_cores} died" in died[0]
    started = _started(lines)
    assert len(set(started.values())) == 3  # the two workers and the fresh one
    for seed in (1, 2):
        assert (tmp_path / f"o/lr-sweep/base-s{seed}/summary.json").is_file()
    run_suite(suite, tmp_path / "o", log=lambda _: None, jobs=2)  # a re-run does the killed run
    assert (tmp_path / "o/lr-sweep/base-s0/summary.json").is_file()
