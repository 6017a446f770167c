"""The body of ``edgelearn sweep``: run (or continue) a suite's experiments cell by cell and seed by seed,
then write each one's results and plots; or only check every run's config (``--check``).

Runs go to ``OUT/<experiment>/<cell>-s<seed>/``; ``jobs > 1`` runs go seed-major (every cell of the first
seed before the second seed), so an interrupted sweep leaves whole seeds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgelearn.commands.sweep.execute import DIVERGED_FILE, run_finished, run_one, run_parallel
from edgelearn.commands.sweep.results import (
    RESULTS_FILE,
    RESULTS_TABLE,
    aggregate,
    results_markdown,
    run_metric,
)
from edgelearn.commands.sweep.spec import ExperimentSpec, cell_slug, selected_experiments
from edgelearn.errors import ConfigError, EdgelearnError, Interrupted
from edgelearn.memory import check_memory
from edgelearn.report.io import ensure_writable_dir, read_metrics, read_summary, write_json_atomic


def run_suite(
    path: str | Path,
    out: str | Path,
    *,
    only: Sequence[str] = (),
    quick: bool = False,
    progress: bool = False,
    log: Callable[[str], None] = print,
    jobs: int = 1,
    extra: Sequence[str] = (),
    cases: Sequence[str] = (),
    seeds: Sequence[int] = (),
) -> dict[str, dict[str, Any]]:
    """Run the experiments of a suite file (all, or those named in ``only``; cut to ``cases`` and ``seeds``
    when given) into ``out``, ``jobs`` runs at a time, with ``extra`` ``--set`` overrides on every run."""
    file = Path(path)
    results = {}
    chosen = selected_experiments(file, only=only, quick=quick, cases=cases, seeds=seeds)
    ensure_writable_dir(out, "sweep folder (--out)")
    try:
        for exp in chosen:
            results[exp.name] = run_experiment(
                exp, file.parent, Path(out) / exp.name, progress=progress, log=log, jobs=jobs, extra=extra
            )
    except KeyboardInterrupt as exc:
        where = f": {exc.message}" if isinstance(exc, Interrupted) else ""
        raise Interrupted(
            f"sweep {file} interrupted{where}",
            hint="run the same sweep command again to continue: finished runs are kept and interrupted ones "
            "resume from their checkpoints",
        ) from None
    return results


def check_suite(
    path: str | Path,
    *,
    quick: bool = False,
    extra: Sequence[str] = (),
    only: Sequence[str] = (),
    cases: Sequence[str] = (),
    seeds: Sequence[int] = (),
) -> int:
    """Validate every run config a suite would build (no training); returns how many runs it holds.

    Catches a typo in an axis key or value before hours of sweeping: each error names the experiment.
    """
    file = Path(path)
    total = 0
    for exp in selected_experiments(file, only=only, quick=quick, cases=cases, seeds=seeds):
        base = exp.base_path(file.parent)
        for cell in exp.run_cells():
            for seed in exp.seeds:  # the seed is part of a run's config too (e.g. --seed -1 is refused)
                where = f"{file}: experiment {exp.name}, cell {cell_slug(cell)}, seed {seed}"
                cfg = _load_checked(base, exp.run_overrides(cell, seed, extra), where)
                try:
                    check_memory(cfg)
                except ConfigError as exc:
                    raise ConfigError(f"{where}: {exc.message}", hint=exc.hint) from None
                total += 1
    return total


def run_experiment(
    exp: ExperimentSpec,
    suite_dir: Path,
    out: Path,
    *,
    progress: bool = False,
    log: Callable[[str], None],
    jobs: int = 1,
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    """Run (or continue) every cell x seed of ``exp`` into ``out``, ``jobs`` at a time, with ``extra``
    ``--set`` overrides after each cell's own; then write its results and plots."""
    base = exp.base_path(suite_dir)
    out.mkdir(parents=True, exist_ok=True)
    if exp.kind == "landscape":
        from edgelearn.commands.plan import landscape_report

        results: dict[str, Any] = {"experiment": exp.name, "kind": exp.kind, "cells": []}
        for cell in exp.run_cells():
            overrides = exp.run_overrides(cell, exp.seeds[0], extra)
            log(f"{exp.name}: landscape {cell_slug(cell)}")
            land = landscape_report(base, overrides, exp.grid.M, exp.grid.N)
            results["cells"].append({"cell": cell, "slug": cell_slug(cell), **land})
        write_json_atomic(out / RESULTS_FILE, results)
        _plots(exp, out, results)
        return results
    grid = exp.run_cells()
    plan = [
        (cell, seed, out / f"{cell_slug(cell)}-s{seed}", exp.run_overrides(cell, seed, extra))
        for cell in grid
        for seed in exp.seeds
    ]
    if jobs > 1:
        todo = [p for p in plan if not run_finished(p[2])]
        todo.sort(key=lambda p: exp.seeds.index(p[1]))  # seed-major; sort is stable within a seed
        for _, _, run_dir, overrides in todo:  # a bad config fails here, before any worker starts
            _load_checked(base, overrides, f"experiment {exp.name}, run {run_dir.name}")
        log(f"{exp.name}: {len(todo)} of {len(plan)} runs to do, {jobs} at a time")
        run_parallel([(base, o, d) for _, _, d, o in todo], jobs, log)
    rows: list[dict[str, Any]] = []
    for done, (cell, seed, run_dir, overrides) in enumerate(plan, start=1):
        if jobs == 1:
            log(f"{exp.name} [{done}/{len(plan)}] {run_dir.name}")
            run_one(base, overrides, run_dir, progress)
        row: dict[str, Any] = {"cell": cell, "slug": cell_slug(cell), "seed": seed, "run_dir": run_dir.name}
        diverged = run_dir / DIVERGED_FILE
        if diverged.is_file():
            row["diverged"] = json.loads(diverged.read_text())["message"]
            row["metrics"] = dict.fromkeys(exp.metrics)
            log(f"{exp.name}: {run_dir.name} diverged ({row['diverged']}); its metrics count as missing")
        else:
            summary, records = read_summary(run_dir), read_metrics(run_dir)
            row["metrics"] = {m: run_metric(m, summary, records) for m in exp.metrics}
        rows.append(row)
    results = {
        "experiment": exp.name,
        "description": exp.description,
        "kind": exp.kind,
        "base": str(exp.base),
        "set": [*exp.set, *extra],
        "seeds": exp.seeds,
        "rows": rows,
        "cells": aggregate(rows, exp.metrics),
    }
    write_json_atomic(out / RESULTS_FILE, results)
    (out / RESULTS_TABLE).write_text(results_markdown(results, exp.metrics))
    _plots(exp, out, results)
    return results


def _load_checked(base: Path, overrides: Sequence[str], where: str) -> Any:
    """The run config of ``base`` with ``overrides``; a ConfigError that names ``where`` in the suite."""
    from edgelearn.data.partition import partition_method
    from edgelearn.data.registry import dataset_name
    from edgelearn.run_config import load_config

    try:
        cfg = load_config(base, list(overrides))
        dataset_name(cfg.data.dataset)  # registered names: a typo fails the check, not the run
        partition_method(cfg.partition.method)
    except EdgelearnError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return cfg


def _plots(exp: ExperimentSpec, out: Path, results: dict[str, Any]) -> None:
    from edgelearn.report.sweep_plots import draw

    for spec in exp.plots:
        draw(spec, out, results)
