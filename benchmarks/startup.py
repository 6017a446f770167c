"""Start-up benchmark: where a short ``edgelearn run`` spends its process wall, beside a plain PyTorch script.

Workload W: ``configs/fedavg-digits.yaml`` with 20 rounds, one local epoch and lr 0.05 (100 devices, MLP
64-128-10): the 20 rounds compute in a fraction of a second, so the process wall is mostly start-up. Each
pair runs, as separate processes and alternating which goes first, (a) ``edgelearn run`` on W through the
real CLI, instrumented from outside (a wrapper records when torch and edgelearn finished importing, and wraps
``build_context`` and the algorithm's ``run_round``; nothing of the run changes), and (b)
``benchmarks/plain_fedavg.py``: the same work as one plain module with a Python loop over the clients and
``torch.optim.SGD``, with torch's default threads. One untimed warm-up of each runs first (it fills
edgelearn's dataset cache and the OS page cache); then medians over the pairs.

edgelearn phases (seconds, medians): interpreter start (spawn to the first line of the wrapper), torch import,
edgelearn import (CLI, config, runner), config (load, run directory), context build (data, partition, tree,
executor, model FLOPs), first round (algorithm set-up + round 1), steady rounds (rounds 2..R with their
evaluations and checkpoints), writing results (summary, plots when on), exit (return to process end).

Usage::

    python benchmarks/startup.py --pairs 5 --json startup.json           # plots off (same work as plain)
    python benchmarks/startup.py --pairs 5 --plots --json startup.json   # also the default plots-on run

Done-when (the issue): W's process wall at most half the plain script's (medians of alternating pairs).

``--sweep N`` instead times ``edgelearn sweep`` (the real CLI, one process each) of a suite of W with
``rounds=2`` over seeds ``0..N-1`` (plots off), at ``--jobs 1`` and ``--jobs 2``, once with 2 runs and once
with N: the wall per run, and the marginal wall per run beyond the first two
(``(wall_N - wall_2) / (N - 2)``), which is what a sweep's workers pay per run once they are up::

    python benchmarks/startup.py --sweep 20 --json sweep.json

Done-when (item 4 of the issue): at ``--jobs 2``, at most 1.0 s of marginal wall per run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "fedavg-digits.yaml"
PLAIN = ROOT / "benchmarks" / "plain_fedavg.py"
TARGET_RATIO = 0.5
"""Done-when of the issue: edgelearn's W wall at most this fraction of the plain script's."""
SPAWN_ENV = "EDGELEARN_BENCH_SPAWN_TIME"
"""The parent's ``time.time()`` just before starting a child, so the child can report interpreter start."""

EL_PHASES = (
    "interpreter_start",
    "torch_import",
    "edgelearn_import",
    "config",
    "context_build",
    "first_round",
    "steady_rounds",
    "writing_results",
    "exit",
)
PLAIN_PHASES = ("interpreter_start", "torch_import", "data_setup", "first_round", "steady_rounds", "exit")


def w_args(rounds: int, devices: int, plots: bool, out: Path) -> list[str]:
    """``edgelearn run`` arguments of workload W (quiet: no progress bar or tables)."""
    return [
        "run",
        str(CONFIG),
        "--set",
        f"algorithm.rounds={rounds}",
        "--set",
        "algorithm.local.epochs=1",
        "--set",
        "algorithm.local.lr=0.05",
        "--set",
        f"topology.devices={devices}",
        "--set",
        f"output.plots={'true' if plots else 'false'}",
        "--quiet",
        "--overwrite",
        "--out",
        str(out),
    ]


def child_edgelearn(timings_path: str, cli_args: Sequence[str]) -> None:
    """Run the edgelearn CLI on ``cli_args`` in this process, writing phase timestamps to ``timings_path``."""
    marks: dict[str, Any] = {"start": time.time()}
    import torch

    marks["torch_imported"] = time.time()
    import edgelearn.cli
    import edgelearn.runner as runner
    from edgelearn.runner import loop  # the round loop's own references (edgelearn/runner/loop.py)

    marks["edgelearn_imported"] = time.time()
    build_context, make_algorithm, run = loop.build_context, loop.make_algorithm, runner.run
    round_ends: list[float] = []

    def timed_build_context(cfg: Any) -> Any:
        marks["context_start"] = time.time()
        ctx = build_context(cfg)
        marks["context_end"] = time.time()
        return ctx

    def timed_make_algorithm(ctx: Any) -> Any:
        algo = make_algorithm(ctx)
        run_round = algo.run_round

        def timed_round(r: int) -> Any:
            stats = run_round(r)
            round_ends.append(time.time())
            return stats

        algo.run_round = timed_round
        return algo

    def timed_run(*args: Any, **kwargs: Any) -> Any:
        summary = run(*args, **kwargs)
        marks["run_end"] = time.time()
        return summary

    loop.build_context = timed_build_context  # type: ignore[assignment]
    loop.make_algorithm = timed_make_algorithm  # type: ignore[assignment]
    runner.run = timed_run  # type: ignore[assignment]
    try:
        sys.argv = ["edgelearn", *cli_args]
        edgelearn.cli.entry()  # what the edgelearn script runs, its exit (gc.freeze) included
    finally:
        marks["round_ends"] = round_ends
        marks["threads"] = torch.get_num_threads()
        Path(timings_path).write_text(json.dumps(marks), encoding="utf-8")


def _spawn(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``cmd``; (spawn time.time(), process wall in seconds). Raises with its output if it fails."""
    env = {**env, SPAWN_ENV: repr(time.time())}
    spawned = time.time()
    began = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return spawned, wall


def run_edgelearn(rounds: int, devices: int, plots: bool, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """One timed ``edgelearn run`` of W: process wall, phases and torch threads."""
    timings = work / "el.json"
    out = work / "run"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-edgelearn", str(timings), "--"]
    spawned, wall = _spawn([*cmd, *w_args(rounds, devices, plots, out)], env)
    m = json.loads(timings.read_text(encoding="utf-8"))
    ends = m["round_ends"]
    end_of_process = spawned + wall
    phases = {
        "interpreter_start": m["start"] - spawned,
        "torch_import": m["torch_imported"] - m["start"],
        "edgelearn_import": m["edgelearn_imported"] - m["torch_imported"],
        "config": m["context_start"] - m["edgelearn_imported"],
        "context_build": m["context_end"] - m["context_start"],
        "first_round": ends[0] - m["context_end"],
        "steady_rounds": ends[-1] - ends[0],
        "writing_results": m["run_end"] - ends[-1],
        "exit": end_of_process - m["run_end"],
    }
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return {
        "wall_s": wall,
        "phases_s": phases,
        "threads": m["threads"],
        "rounds": len(ends),
        "final_accuracy": summary.get("final_accuracy"),
        "executor": summary.get("executor"),
    }


def run_plain(rounds: int, devices: int, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """One timed run of the plain script: process wall, phases and torch threads."""
    timings = work / "plain.json"
    cmd = [
        sys.executable,
        str(PLAIN),
        "--rounds",
        str(rounds),
        "--devices",
        str(devices),
        "--timings",
        str(timings),
    ]
    spawned, wall = _spawn(cmd, env)
    m = json.loads(timings.read_text(encoding="utf-8"))
    ends = m["round_ends"]
    phases = {
        "interpreter_start": m["start"] - spawned,
        "torch_import": m["torch_imported"] - m["start"],
        "data_setup": m["ready"] - m["torch_imported"],
        "first_round": ends[0] - m["ready"],
        "steady_rounds": ends[-1] - ends[0],
        "exit": spawned + wall - ends[-1],
    }
    return {"wall_s": wall, "phases_s": phases, "threads": m["threads"], "final_accuracy": m["accuracy"]}


def _medians(runs: list[dict[str, Any]], phases: Sequence[str]) -> dict[str, Any]:
    return {
        "wall_s": statistics.median(r["wall_s"] for r in runs),
        "phases_s": {p: statistics.median(r["phases_s"][p] for r in runs) for p in phases},
        "threads": sorted({r["threads"] for r in runs}),
    }


def environment() -> dict[str, Any]:
    """Machine facts the numbers depend on: CPU count and capability, torch's default threads, load."""
    import torch

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_default_threads": torch.get_num_threads(),
        "loadavg": list(os.getloadavg()),
    }


def benchmark(
    pairs: int = 5, rounds: int = 20, devices: int = 100, plots: bool = False, warmup: bool = True
) -> dict[str, Any]:
    """Alternating pairs of (edgelearn W, plain script) processes; medians, ratio and the environment."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    before = environment()
    el_runs: list[dict[str, Any]] = []
    plain_runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgelearn-startup-") as tmp:
        work = Path(tmp)
        if warmup:
            run_edgelearn(rounds, devices, plots, work, env)
            run_plain(rounds, devices, work, env)
        for i in range(pairs):
            if i % 2 == 0:
                el_runs.append(run_edgelearn(rounds, devices, plots, work, env))
                plain_runs.append(run_plain(rounds, devices, work, env))
            else:
                plain_runs.append(run_plain(rounds, devices, work, env))
                el_runs.append(run_edgelearn(rounds, devices, plots, work, env))
    el, plain = _medians(el_runs, EL_PHASES), _medians(plain_runs, PLAIN_PHASES)
    ratio = el["wall_s"] / plain["wall_s"]
    return {
        "workload": {
            "config": str(CONFIG.relative_to(ROOT)),
            "rounds": rounds,
            "devices": devices,
            "local_epochs": 1,
            "lr": 0.05,
            "plots": plots,
        },
        "pairs": pairs,
        "environment": before,
        "loadavg_after": list(os.getloadavg()),
        "edgelearn": {**el, "executor": el_runs[0]["executor"], "runs": el_runs},
        "plain": {**plain, "runs": plain_runs},
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
    }


SWEEP_SET = [
    "algorithm.rounds=2",
    "algorithm.local.epochs=1",
    "algorithm.local.lr=0.05",
    "output.plots=false",
]
"""Overrides of every run of the ``--sweep`` suite: W cut to two rounds, plots off."""
SWEEP_TARGET_S = 1.0
"""Done-when of item 4: marginal wall per run of the ``--jobs 2`` sweep, in seconds."""


def time_sweep(runs: int, jobs: int, work: Path, env: dict[str, str]) -> tuple[float, int]:
    """Wall of one ``edgelearn sweep --jobs JOBS`` process over a fresh suite of ``runs`` seeds of W, and the
    torch threads its first run chose."""
    tag = f"j{jobs}-n{runs}"
    suite = work / f"suite-{tag}.yaml"
    exp = {"name": "w", "base": str(CONFIG), "seeds": list(range(runs)), "set": SWEEP_SET, "plots": []}
    suite.write_text(json.dumps({"suite": "startup", "experiments": [exp]}), encoding="utf-8")  # JSON is YAML
    cmd = [sys.executable, "-m", "edgelearn", "sweep", str(suite), "--out", str(work / tag)]
    cmd += ["--jobs", str(jobs)]
    wall = _spawn(cmd, env)[1]
    summary = json.loads((work / tag / "w" / "base-s0" / "summary.json").read_text(encoding="utf-8"))
    return wall, summary["torch_threads"]["chosen"]


def sweep_benchmark(runs: int = 20, jobs: Sequence[int] = (1, 2)) -> dict[str, Any]:
    """Wall per run of sweeps of ``runs`` and of 2 two-round W runs at each ``jobs`` (after a warm-up)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    before = environment()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgelearn-sweep-") as tmp:
        work = Path(tmp)
        (work / "warm").mkdir()
        time_sweep(1, 1, work / "warm", env)  # untimed: fills the dataset and OS page caches
        for j in jobs:
            two, (many, threads) = time_sweep(2, j, work, env)[0], time_sweep(runs, j, work, env)
            out[str(j)] = {
                "torch_threads": threads,
                "wall_2_s": two,
                f"wall_{runs}_s": many,
                "wall_per_run_s": many / runs,
                "marginal_per_run_s": (many - two) / (runs - 2),
            }
    return {
        "runs": runs,
        "set": SWEEP_SET,
        "environment": before,
        "loadavg_after": list(os.getloadavg()),
        "jobs": out,
        "target_marginal_s": SWEEP_TARGET_S,
    }


def render_sweep(result: dict[str, Any]) -> str:
    """A plain-text report of :func:`sweep_benchmark`'s result."""
    env, n = result["environment"], result["runs"]
    lines = [
        f"sweep of {n} runs of W ({' '.join(result['set'])}); python {env['python']}, torch {env['torch']}, "
        f"{env['cpu_count']} CPUs, load average {env['loadavg'][0]:.2f} "
        f"(after: {result['loadavg_after'][0]:.2f})"
    ]
    for jobs, r in result["jobs"].items():
        lines.append(
            f"  --jobs {jobs} ({r['torch_threads']} torch thread(s) per run): 2 runs {r['wall_2_s']:6.2f} s, "
            f"{n} runs {r[f'wall_{n}_s']:6.2f} s, "
            f"{r['wall_per_run_s']:.2f} s/run, beyond the first two {r['marginal_per_run_s']:.2f} s/run"
        )
    return "\n".join(lines)


def render(result: dict[str, Any]) -> str:
    """A plain-text report of :func:`benchmark`'s result."""
    env, el, plain = result["environment"], result["edgelearn"], result["plain"]
    w = result["workload"]
    lines = [
        f"workload W: {w['config']} rounds={w['rounds']} devices={w['devices']} epochs=1 lr=0.05 "
        f"plots={'on' if w['plots'] else 'off'}; {result['pairs']} alternating pairs, medians",
        f"python {env['python']}, torch {env['torch']}, {env['cpu_count']} CPUs, capability "
        f"{env['cpu_capability']}, load average {env['loadavg'][0]:.2f} "
        f"(after: {result['loadavg_after'][0]:.2f})",
        f"edgelearn run ({el['executor']} executor, torch threads {el['threads']}):",
    ]
    lines += [f"  {p:<18} {s:7.3f} s" for p, s in el["phases_s"].items()]
    lines += [
        f"  {'process wall':<18} {el['wall_s']:7.3f} s",
        f"plain script (torch threads {plain['threads']}):",
    ]
    lines += [f"  {p:<18} {s:7.3f} s" for p, s in plain["phases_s"].items()]
    lines += [
        f"  {'process wall':<18} {plain['wall_s']:7.3f} s",
        f"edgelearn / plain = {result['ratio']:.2f} (target <= {result['target_ratio']}: "
        f"{'met' if result['meets_target'] else 'NOT met'})",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, run the pairs, print the report and write JSON."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--child-edgelearn"]:
        child_edgelearn(args_list[1], args_list[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5, help="alternating (edgelearn, plain) pairs")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--plots", action="store_true", help="edgelearn writes its plots (the run's default)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up pair")
    parser.add_argument("--json", type=Path, default=None, help="write the full result here")
    parser.add_argument("--sweep", type=int, default=0, metavar="N", help="time sweeps of N runs instead")
    args = parser.parse_args(args_list)
    if args.sweep:
        if args.sweep < 3:
            parser.error("--sweep needs at least 3 runs (it subtracts a 2-run sweep)")
        result = sweep_benchmark(args.sweep)
        print(render_sweep(result))
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        return
    if args.pairs < 1 or args.rounds < 2 or args.devices < 2:
        parser.error("--pairs must be >= 1, --rounds >= 2 (first vs steady rounds) and --devices >= 2")
    result = benchmark(args.pairs, args.rounds, args.devices, args.plots, warmup=not args.no_warmup)
    print(render(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
