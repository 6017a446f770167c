"""The suite file: experiments (a base config, seeds, ``--set`` overrides, ``axes`` and ``cases``), their
plots and ``quick`` replacements as pydantic models; loading and validating a file, choosing experiments
(``--only``, ``--case``, ``--seed``) and the cells (axis combinations) each one runs.

A suite file (YAML) lists experiments; each names a base config, the seeds, common ``--set`` overrides and
``axes`` (config keys -> values; runs cover their Cartesian product). ``kind: landscape`` experiments solve
the two-stage planning problem over an (M, N) grid instead of training (E6). ``quick:`` holds replacements
(base, seeds, set, axes) used with ``--quick``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgelearn.commands.sweep.results import rounds_target, target_prefix
from edgelearn.errors import ConfigError
from edgelearn.yamlsafe import load_yaml

CASE_AXIS = "case"
"""Name of the axis that ``cases`` adds."""
SLUG_MAX = 80
"""Longest run-directory name built from a cell's axis values (longer ones are truncated)."""


def _check_metrics(metrics: list[str] | None) -> list[str] | None:
    """Metric names as given; a ValueError naming a ``rounds_to:`` metric whose target does not parse."""
    for name in metrics or []:
        if target_prefix(name) is not None:
            rounds_target(name)
    return metrics


class PlotSpec(BaseModel):
    """One figure of an experiment.

    ``curves``: metric ``y`` of metrics.jsonl against ``x`` (round, energy_j, delay_s), one colour per
    value of ``group`` (every seed drawn). ``sweep``: a run metric ``y`` (mean ± sd over seeds) against axis
    ``x``, one line per ``group``. ``scatter``: run metric ``y`` against run metric ``x`` over all runs,
    with Spearman's rank correlation in the title. ``landscape``: the bound heat-map (landscape kind).
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["curves", "sweep", "scatter", "landscape"]
    x: str = "round"
    y: str = "accuracy"
    group: str | None = None
    file: str | None = Field(None, description="PNG name (default: <kind>-<y>-vs-<x>.png)")
    title: str | None = None
    logx: bool = False
    logy: bool = False


class GridSpec(BaseModel):
    """Log-spaced points on the M and N axes of a landscape experiment."""

    model_config = ConfigDict(extra="forbid")
    M: int = Field(24, ge=2)
    N: int = Field(20, ge=2)


class QuickSpec(BaseModel):
    """Replacements used with ``--quick`` (a few-minute version of the experiment)."""

    model_config = ConfigDict(extra="forbid")
    base: str | None = None
    seeds: list[int] | None = None
    set: list[str] | None = None
    axes: dict[str, list[Any]] | None = None
    cases: dict[str, dict[str, Any]] | None = None
    metrics: list[str] | None = Field(None, description="e.g. accuracy targets that suit the quick dataset")

    _metrics_parse = field_validator("metrics")(classmethod(lambda cls, v: _check_metrics(v)))


class ExperimentSpec(BaseModel):
    """A grid of runs (or of planning solves, for ``kind: landscape``) and its plots."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    kind: Literal["runs", "landscape"] = "runs"
    base: str = Field(description="config file, relative to the suite file")
    seeds: list[int] = [0]
    set: list[str] = Field([], description="overrides applied to every run (key=value)")
    axes: dict[str, list[Any]] = Field({}, description="config key -> values; runs cover the product")
    cases: dict[str, dict[str, Any]] = Field(
        {},
        description="named bundles of overrides (label -> {key: value}), an extra first axis `case`: for "
        "settings that change together, e.g. a method and the model the paper pairs it with",
    )
    metrics: list[str] = Field(
        ["final_accuracy"],
        description="run metrics aggregated per cell (RUN_METRICS, rounds_to:TARGET, delay_to:TARGET, "
        "energy_to:TARGET, or dotted keys)",
    )
    plots: list[PlotSpec] = []

    _metrics_parse = field_validator("metrics")(classmethod(lambda cls, v: _check_metrics(v)))
    grid: GridSpec = Field(GridSpec(), description="landscape kind: points on the M and N axes")
    quick: QuickSpec = QuickSpec()

    def run_cells(self) -> list[dict[str, Any]]:
        """Every cell: the case label (when ``cases`` is set) and the axes' values."""
        axes = {CASE_AXIS: list(self.cases), **self.axes} if self.cases else self.axes
        return cells(axes)

    def overrides(self, cell: Mapping[str, Any]) -> list[str]:
        """``--set`` strings of a cell: the common ones, the case's bundle, then the axes' values."""
        out = list(self.set)
        for key, value in cell.items():
            if key == CASE_AXIS and self.cases:
                out += [_override(k, v) for k, v in self.cases[value].items()]
            else:
                out.append(_override(key, value))
        return out

    def run_overrides(self, cell: Mapping[str, Any], seed: int, extra: Sequence[str] = ()) -> list[str]:
        """Every ``--set`` of one run: the cell's (:meth:`overrides`), then ``extra``, then its seed."""
        return [*self.overrides(cell), *extra, f"seed={seed}"]

    def base_path(self, suite_dir: Path) -> Path:
        """The base config, resolved against the suite file's folder; a ConfigError if it is missing."""
        base = (suite_dir / self.base).resolve()
        if not base.is_file():
            raise ConfigError(
                f"experiment {self.name}: base config {base} does not exist", hint="fix `base:`"
            )
        return base

    def resolved(self, quick: bool) -> ExperimentSpec:
        """This experiment, with the ``quick`` replacements applied when asked."""
        if not quick:
            return self
        changes = {k: v for k, v in self.quick.model_dump().items() if v is not None}
        return self.model_copy(update=changes)

    def narrowed(self, cases: Sequence[str] = (), seeds: Sequence[int] = ()) -> ExperimentSpec | None:
        """This experiment cut to the named ``cases`` (None when it has none of them) and run with ``seeds``
        instead of its own: re-running or extending part of a sweep without editing the suite file."""
        changes: dict[str, Any] = {}
        if cases:
            kept = {k: v for k, v in self.cases.items() if k in cases}
            if not kept:
                return None
            changes["cases"] = kept
        if seeds:
            changes["seeds"] = list(dict.fromkeys(seeds))
        return self.model_copy(update=changes) if changes else self


class SuiteSpec(BaseModel):
    """A suite file: named experiments sharing an output folder."""

    model_config = ConfigDict(extra="forbid")
    suite: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    experiments: list[ExperimentSpec]


def load_suite(path: str | Path) -> SuiteSpec:
    """Parse and validate a suite file; errors name the file and the offending key."""
    file = Path(path)
    try:
        data = load_yaml(file.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read suite file {file}: {exc}", hint="check the path") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file} is not valid YAML: {exc}") from None
    try:
        suite = SuiteSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"{file}: {where}: {first['msg']}",
            hint="see src/edgelearn/commands/sweep/spec.py for the suite format",
        ) from None
    names = [e.name for e in suite.experiments]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{file}: experiment names {dupes} appear more than once")
    return suite


def selected_experiments(
    file: Path,
    *,
    only: Sequence[str] = (),
    quick: bool = False,
    cases: Sequence[str] = (),
    seeds: Sequence[int] = (),
) -> list[ExperimentSpec]:
    """The experiments of a suite file that ``only`` names (all when empty), quick-resolved, cut to ``cases``
    and run with ``seeds`` (:meth:`ExperimentSpec.narrowed`); a ConfigError names an unknown experiment or
    case and an experiment left without seeds."""
    suite = load_suite(file)
    names = [e.name for e in suite.experiments]
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise ConfigError(f"--only {unknown}: not experiments of {file}", hint=f"choose from {names}")
    chosen = [exp.resolved(quick) for exp in suite.experiments if not only or exp.name in only]
    known = {case for exp in chosen for case in exp.cases}
    unknown = sorted(set(cases) - known)
    if unknown:
        raise ConfigError(
            f"--case {unknown}: no chosen experiment of {file} has such a case",
            hint=f"choose from {sorted(known)}" if known else "these experiments define no `cases:`",
        )
    out = []
    for exp in chosen:
        narrowed = exp.narrowed(cases, seeds)
        if narrowed is None:
            continue
        if not narrowed.seeds:
            raise ConfigError(f"experiment {exp.name}: `seeds` is empty", hint="list at least one seed")
        out.append(narrowed)
    return out


def cells(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, in the order the file lists them."""
    keys = list(axes)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(axes[k] for k in keys))]


def cell_slug(cell: Mapping[str, Any]) -> str:
    """A file-name-safe name of a cell: the last part of each key and its value, joined."""
    if not cell:
        return "base"
    parts = [f"{key.rsplit('.', 1)[-1]}={value}" for key, value in cell.items()]
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", "_".join(parts))
    return slug[:SLUG_MAX]


def _override(key: str, value: Any) -> str:
    return f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
