"""Headless PNG plots of a run (accuracy vs round, energy, simulated time) and of several runs overlaid.

matplotlib is imported lazily inside the functions, never when the package is imported. Figures are built
with ``matplotlib.figure.Figure`` and the Agg canvas directly rather than through pyplot, so they are never
registered in pyplot's global figure list (no leaks, nothing to close) and the user's backend (e.g. a
notebook's) is left untouched; it works without a display.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgelearn.errors import ConfigError, DataError
from edgelearn.report.io import METRICS_FILE, PathLike, is_number, read_metrics, read_summary
from edgelearn.report.tables import TIER_ORDER

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 120
FIGSIZE_IN = (6.4, 4.2)  # matplotlib's default width, slightly shorter for side-by-side viewing
ROUND_PLOT = "accuracy_vs_round.png"
ENERGY_PLOT = "accuracy_vs_energy.png"
TIME_PLOT = "accuracy_vs_time.png"

# x-axis key of a metrics record -> (axis label with unit, phrase for titles)
X_AXES: dict[str, tuple[str, str]] = {
    "round": ("Round", "round"),
    "energy_j": ("Cumulative energy (J)", "energy"),
    "delay_s": ("Simulated time (s)", "simulated time"),
    "wall_s": ("Wall-clock time (s)", "wall-clock time"),
}
ACCURACY_LABEL = "Test accuracy (%)"
PERCENT = 100.0


def _new_figure() -> tuple[Figure, Any]:
    """A fresh Agg-backed Figure and its single Axes, independent of pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _save_png(figure: Figure, path: Path) -> Path:
    """Save ``figure`` as PNG via a temp file and os.replace, so a crash never leaves a torn image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            figure.savefig(handle, format="png", dpi=DPI)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    finally:
        figure.clear()
    return path


def _series(
    records: Sequence[Mapping[str, Any]], x_key: str, y_key: str = "accuracy"
) -> tuple[list[float], list[float]]:
    """(x, y%) of the records that carry a numeric ``x_key``; older runs may lack trailing keys."""
    xs: list[float] = []
    ys: list[float] = []
    for record in records:
        x = record.get(x_key)
        if is_number(x):
            xs.append(x)
            ys.append(PERCENT * record[y_key])
    return xs, ys


def _run_title(run_dir: Path) -> str:
    """``algorithm on dataset`` from summary.json, or the directory name while a run has no summary yet."""
    try:
        summary = read_summary(run_dir)
    except DataError:
        return run_dir.name
    algorithm, dataset = summary.get("algorithm"), summary.get("dataset")
    if algorithm and dataset:
        return f"{algorithm} on {dataset}"
    return str(algorithm or dataset or run_dir.name)


def _run_label(run_dir: Path) -> str:
    """Legend label of a run: its algorithm name from summary.json, else the directory name."""
    try:
        return str(read_summary(run_dir).get("algorithm") or run_dir.name)
    except DataError:
        return run_dir.name


def _tier_names(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Tiers seen in any record's ``accuracy_by_tier``, cloud/edge/device first, then others sorted."""
    seen: set[str] = set()
    for record in records:
        seen.update(k for k, v in (record.get("accuracy_by_tier") or {}).items() if v is not None)
    return [t for t in TIER_ORDER if t in seen] + sorted(seen - set(TIER_ORDER))


def _finish_axes(axes: Any, x_key: str, title: str, legend: bool) -> None:
    """Axis labels with units, title, grid, a 0-100 % accuracy range and an optional legend."""
    axes.set_xlabel(X_AXES[x_key][0])
    if x_key == "round":
        from matplotlib.ticker import MaxNLocator

        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(ACCURACY_LABEL)
    axes.set_title(title)
    axes.set_ylim(0.0, PERCENT)
    axes.grid(True, alpha=0.3)
    if legend:
        axes.legend(loc="lower right")


def _plot_round(records: Sequence[Mapping[str, Any]], title: str, path: Path) -> Path:
    """Accuracy vs round, plus one line per tier when records carry ``accuracy_by_tier``."""
    figure, axes = _new_figure()
    xs, ys = _series(records, "round")
    # drawn above the tier lines (one tier's model is often the delivered one and would hide it)
    axes.plot(xs, ys, marker="o", markersize=3, linewidth=2, zorder=3, label="delivered model")
    tiers = _tier_names(records)
    for tier in tiers:
        points = [
            (r["round"], PERCENT * r["accuracy_by_tier"][tier])
            for r in records
            if (r.get("accuracy_by_tier") or {}).get(tier) is not None
        ]
        axes.plot([p[0] for p in points], [p[1] for p in points], linestyle="--", label=tier)
    _finish_axes(axes, "round", f"Accuracy vs round: {title}", legend=bool(tiers))
    return _save_png(figure, path)


def _plot_against(records: Sequence[Mapping[str, Any]], x_key: str, title: str, path: Path) -> Path | None:
    """Accuracy against a cumulative cost ``x_key``; None (no file) when no record carries that key."""
    xs, ys = _series(records, x_key)
    if not xs:
        return None
    figure, axes = _new_figure()
    axes.plot(xs, ys, marker="o", markersize=3)
    _finish_axes(axes, x_key, f"Accuracy vs {X_AXES[x_key][1]}: {title}", legend=False)
    return _save_png(figure, path)


def plot_run(run_dir: PathLike) -> list[Path]:
    """Write accuracy vs round / energy / simulated time PNGs into ``run_dir``; returns the paths written.

    The energy and time plots are skipped when no metrics record has ``energy_j`` / ``delay_s``.
    """
    directory = Path(run_dir)
    records = read_metrics(directory)
    if not records:
        raise DataError(
            f"{directory / METRICS_FILE} has no records, so there is nothing to plot",
            hint="plot after at least one evaluated round (see eval_every in the config)",
        )
    title = _run_title(directory)
    written = [_plot_round(records, title, directory / ROUND_PLOT)]
    for x_key, name in (("energy_j", ENERGY_PLOT), ("delay_s", TIME_PLOT)):
        path = _plot_against(records, x_key, title, directory / name)
        if path is not None:
            written.append(path)
    return written


def plot_comparison(
    run_dirs: Sequence[PathLike],
    out_path: PathLike,
    x: str = "round",
    labels: Sequence[str] | None = None,
) -> Path:
    """Overlay several runs' accuracy curves against ``x`` (round, energy_j, delay_s or wall_s) in one PNG.

    Labels default to each run's algorithm name; returns ``out_path``.
    """
    if x not in X_AXES:
        raise ConfigError(f"unknown x axis {x!r} for a comparison plot", hint=f"use one of {sorted(X_AXES)}")
    if not run_dirs:
        raise ConfigError("no run directories given to compare", hint="pass at least one run directory")
    directories = [Path(d) for d in run_dirs]
    if labels is not None and len(labels) != len(directories):
        raise ConfigError(
            f"got {len(labels)} labels for {len(directories)} runs",
            hint="give exactly one label per run, or none to use the algorithm names",
        )
    names = list(labels) if labels is not None else [_run_label(d) for d in directories]
    datasets: set[str] = set()
    figure, axes = _new_figure()
    try:
        for directory, name in zip(directories, names, strict=True):
            xs, ys = _series(read_metrics(directory), x)
            if not xs:
                raise DataError(
                    f"{directory / METRICS_FILE} has no records with {x!r}, so it cannot go on that axis",
                    hint="compare on x='round', or use runs that log this quantity",
                )
            axes.plot(xs, ys, marker="o", markersize=3, label=name)
            try:
                datasets.add(str(read_summary(directory).get("dataset", "")))
            except DataError:
                datasets.add("")
    except BaseException:
        figure.clear()
        raise
    title = f"Accuracy vs {X_AXES[x][1]}"
    if len(datasets) == 1 and "" not in datasets:
        title += f": {datasets.pop()}"
    _finish_axes(axes, x, title, legend=True)
    return _save_png(figure, Path(out_path))
