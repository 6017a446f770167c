"""Figures of an experiment suite (``edgelearn.commands.sweep``): curves, sweeps with error bars, scatters
(titled with :func:`spearman`, defined here, their only user), heat-maps.

Built on the same Agg-only figures as report/plots.py (no pyplot state, atomic PNG writes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgelearn.errors import ConfigError
from edgelearn.report.io import is_number, read_metrics
from edgelearn.report.plots import PERCENT, X_AXES, _new_figure, _save_png

FRACTION_METRICS = {"accuracy", "final_accuracy", "best_accuracy", "pretrain_share"}
"""Metrics that are fractions and are drawn in percent."""


def is_fraction(name: str) -> bool:
    """Whether metric ``name`` is a fraction in [0, 1] (shown in percent)."""
    return name.rsplit(".", 1)[-1] in FRACTION_METRICS or name.startswith("accuracy_by_tier")


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); nan with fewer than 3 points or no spread."""
    from scipy.stats import spearmanr

    if len(xs) < 3:
        return math.nan
    return float(spearmanr(xs, ys).statistic)


def _scale(name: str) -> float:
    return PERCENT if is_fraction(name) else 1.0


def _label(name: str) -> str:
    if name in X_AXES:
        return X_AXES[name][0]
    return f"{name} (%)" if _scale(name) == PERCENT else name


def _group_value(cell: Mapping[str, Any], group: str | None) -> str:
    return "all" if group is None else f"{group.rsplit('.', 1)[-1]}={cell.get(group)}"


def _axes_finish(axes: Any, spec: Any, title: str, legend: bool) -> None:
    axes.set_xlabel(_label(spec.x))
    axes.set_ylabel(_label(spec.y))
    axes.set_title(spec.title or title, fontsize=10)
    axes.grid(True, alpha=0.3)
    if spec.logx:
        axes.set_xscale("log")
    if spec.logy:
        axes.set_yscale("log")
    if legend:
        axes.legend(fontsize=7)


def _colors(keys: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {k: cmap(i % 10) for i, k in enumerate(keys)}


def _curves(spec: Any, out: Path, results: Mapping[str, Any]) -> Any:
    figure, axes = _new_figure()
    rows = results["rows"]
    keys = list(dict.fromkeys(_group_value(r["cell"], spec.group) for r in rows))
    colors = _colors(keys)
    labelled: set[str] = set()
    for row in rows:
        key = _group_value(row["cell"], spec.group)
        records = read_metrics(out / row["run_dir"])
        points = [
            (r[spec.x], r[spec.y]) for r in records if is_number(r.get(spec.x)) and is_number(r.get(spec.y))
        ]
        if not points:
            continue
        axes.plot(
            [p[0] for p in points],
            [_scale(spec.y) * p[1] for p in points],
            color=colors[key],
            alpha=0.8,
            linewidth=1.2,
            marker="o",
            markersize=2.5,  # a run evaluated once (e.g. pre-training only) still shows
            label=None if key in labelled else key,
        )
        labelled.add(key)
    _axes_finish(axes, spec, f"{results['experiment']}: {spec.y} vs {spec.x} (every seed)", legend=True)
    return figure


def _sweep(spec: Any, out: Path, results: Mapping[str, Any]) -> Any:
    figure, axes = _new_figure()
    lines: dict[str, list[tuple[float, float, float]]] = {}
    for entry in results["cells"]:
        stat = entry.get(spec.y)
        x = entry["cell"].get(spec.x)
        if not stat or stat.get("mean") is None or not is_number(x):
            continue
        lines.setdefault(_group_value(entry["cell"], spec.group), []).append((x, stat["mean"], stat["sd"]))
    colors = _colors(list(lines))
    for key, points in lines.items():
        points.sort()
        scale = _scale(spec.y)
        axes.errorbar(
            [p[0] for p in points],
            [scale * p[1] for p in points],
            yerr=[scale * p[2] for p in points],
            marker="o",
            markersize=3,
            capsize=3,
            color=colors[key],
            label=key,
        )
    _axes_finish(axes, spec, f"{results['experiment']}: {spec.y} (mean ± sd over seeds)", legend=True)
    return figure


def _scatter(spec: Any, out: Path, results: Mapping[str, Any]) -> Any:
    figure, axes = _new_figure()
    rows = [
        r
        for r in results["rows"]
        if is_number(r["metrics"].get(spec.x)) and is_number(r["metrics"].get(spec.y))
    ]
    keys = list(dict.fromkeys(_group_value(r["cell"], spec.group) for r in rows))
    colors = _colors(keys)
    for key in keys:
        pts = [r for r in rows if _group_value(r["cell"], spec.group) == key]
        axes.scatter(
            [_scale(spec.x) * r["metrics"][spec.x] for r in pts],
            [_scale(spec.y) * r["metrics"][spec.y] for r in pts],
            s=14,
            color=colors[key],
            label=key,
        )
    rho = spearman([r["metrics"][spec.x] for r in rows], [r["metrics"][spec.y] for r in rows])
    title = f"{results['experiment']}: Spearman rho = {rho:.2f} over {len(rows)} runs"
    _axes_finish(axes, spec, title, legend=True)
    return figure


def _landscape(spec: Any, out: Path, results: Mapping[str, Any]) -> list[Path]:
    import numpy as np

    written = []
    for entry in results["cells"]:
        figure, axes = _new_figure()
        values = np.array(entry["bound"], dtype=float)
        values[~np.isfinite(values)] = np.nan
        Ms, Ns = entry["M"], entry["N"]
        image = axes.pcolormesh(
            np.arange(len(Ns) + 1), np.arange(len(Ms) + 1), np.log10(values), shading="flat", cmap="viridis"
        )
        figure.colorbar(image, ax=axes, label="log10 bound (blank: infeasible)")
        tick = max(1, len(Ns) // 6)
        axes.set_xticks(np.arange(0, len(Ns), tick) + 0.5, [str(n) for n in Ns[::tick]], fontsize=7)
        tick = max(1, len(Ms) // 6)
        axes.set_yticks(np.arange(0, len(Ms), tick) + 0.5, [str(m) for m in Ms[::tick]], fontsize=7)
        axes.set_xlabel("fine-tuning rounds N")
        axes.set_ylabel("pre-training rounds M")
        best = entry.get("grid_best")
        if best:
            axes.plot(Ns.index(best["N"]) + 0.5, Ms.index(best["M"]) + 0.5, "r*", markersize=12)
        plan = entry.get("plan") or {}
        axes.set_title(
            f"{results['experiment']} {entry['slug']}: grid min *; plan M={plan.get('M')}, N={plan.get('N')}",
            fontsize=9,
        )
        name = spec.file or "landscape.png"
        path = out / name.replace(".png", f"-{entry['slug']}.png")
        written.append(_save_png(figure, path))
    return written


def draw(spec: Any, out: Path, results: Mapping[str, Any]) -> list[Path]:
    """Draw one :class:`edgelearn.commands.sweep.spec.PlotSpec` of an experiment's results into ``out``."""
    if spec.kind == "landscape":
        return _landscape(spec, out, results)
    makers = {"curves": _curves, "sweep": _sweep, "scatter": _scatter}
    if spec.kind not in makers:
        raise ConfigError(
            f"unknown plot kind {spec.kind!r}", hint=f"use one of {sorted(makers)} or landscape"
        )
    if spec.kind == "curves" and spec.x not in X_AXES:
        raise ConfigError(
            f"curves plot: x={spec.x!r} is not a metrics key", hint=f"use one of {sorted(X_AXES)}"
        )
    figure = makers[spec.kind](spec, out, results)
    name = spec.file or f"{spec.kind}-{spec.y}-vs-{spec.x}.png".replace("/", "_")
    return [_save_png(figure, out / name)]
