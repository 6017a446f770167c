"""What a sweep reports: each run's metrics (derived ones, ``rounds_to:TARGET``, or dotted keys of
summary.json), their mean / sd / n over seeds per cell, and the ``results.md`` table.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edgelearn.report.io import rounds_to

RESULTS_FILE = "results.json"
RESULTS_TABLE = "results.md"


def _dig(obj: Any, dotted: str) -> Any:
    """The value at dotted path ``dotted``; a key may itself hold dots ("rounds_to_target.72.5%"): the
    longest matching key wins at each level."""
    parts = dotted.split(".")
    while parts:
        if not isinstance(obj, Mapping):
            return None
        for i in range(len(parts), 0, -1):
            key = ".".join(parts[:i])
            if key in obj:
                obj, parts = obj[key], parts[i:]
                break
        else:
            return None
    return obj


def _mean_metric(key: str) -> Callable[[dict[str, Any], list[dict[str, Any]]], float | None]:
    def value(summary: dict[str, Any], records: list[dict[str, Any]]) -> float | None:
        values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
        return float(statistics.fmean(values)) if values else None

    return value


def _pretrain_share(summary: dict[str, Any], records: list[dict[str, Any]]) -> float | None:
    M, N = _dig(summary, "plan.M"), _dig(summary, "plan.N")
    return M / (M + N) if isinstance(M, int) and isinstance(N, int) and M + N else None


RUN_METRICS: dict[str, Callable[[dict[str, Any], list[dict[str, Any]]], float | None]] = {
    "mean_grad_norm_sq": _mean_metric("grad_norm_sq"),
    "pretrain_share": _pretrain_share,
}
"""Derived run metrics; any other name is a dotted key into summary.json (e.g. ``plan.M``)."""
ROUNDS_TO = "rounds_to:"
"""Metric prefix: ``rounds_to:0.7`` is the first round whose test accuracy reaches 0.7 (None if none does)."""
TO_TARGET = {ROUNDS_TO: "round", "delay_to:": "delay_s", "energy_to:": "energy_j"}
"""Metric prefixes -> the metrics record key read at the first round reaching the target: ``delay_to:0.7``
is the virtual time (s) and ``energy_to:0.7`` the energy (J) the run had spent by then (both cumulative in
metrics.jsonl), time and energy to accuracy."""


def target_prefix(name: str) -> str | None:
    """The :data:`TO_TARGET` prefix ``name`` starts with, if any."""
    return next((p for p in TO_TARGET if name.startswith(p)), None)


def rounds_target(name: str) -> float:
    """The target of a ``rounds_to:`` / ``delay_to:`` / ``energy_to:TARGET`` metric name; ValueError
    unless TARGET is in (0, 1]."""
    prefix = target_prefix(name) or ROUNDS_TO
    text = name.removeprefix(prefix)
    try:
        target = float(text)
    except ValueError:
        target = math.nan
    if not 0 < target <= 1:
        raise ValueError(f"metric {name!r}: the target must be an accuracy in (0, 1], e.g. {prefix}0.7")
    return target


def run_metric(name: str, summary: dict[str, Any], records: list[dict[str, Any]]) -> float | None:
    """A derived metric from :data:`RUN_METRICS`, ``rounds_to:TARGET`` from the records, or the number at
    dotted key ``name`` of the summary (a boolean counts as 1 or 0)."""
    if name in RUN_METRICS:
        return RUN_METRICS[name](summary, records)
    prefix = target_prefix(name)
    if prefix is not None:
        reached = rounds_to(records, rounds_target(name))
        if reached is None:
            return None
        value = next(r.get(TO_TARGET[prefix]) for r in records if r.get("round") == reached)
        return float(value) if isinstance(value, (int, float)) else None
    value = _dig(summary, name)
    if isinstance(value, bool):  # a flag (e.g. plan.feasible): 1 or 0, so its mean over seeds is a share
        return float(value)
    return float(value) if isinstance(value, (int, float)) else None


def aggregate(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Mean, sample sd and count over seeds of every metric, per cell (in first-seen order)."""
    by_cell: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_cell.setdefault(row["slug"], []).append(row)
    out = []
    for group in by_cell.values():
        entry: dict[str, Any] = {
            "cell": group[0]["cell"],
            "slug": group[0]["slug"],
            "seeds": [r["seed"] for r in group],
        }
        for metric in metrics:
            values = [r["metrics"][metric] for r in group if r["metrics"].get(metric) is not None]
            entry[metric] = {
                "mean": statistics.fmean(values) if values else None,
                "sd": statistics.stdev(values) if len(values) > 1 else 0.0 if values else None,
                "n": len(values),
                "values": values,
            }
        out.append(entry)
    return out


def _fmt(metric: str, stat: Mapping[str, Any] | None) -> str:
    """mean ± sd: fractions (accuracy, shares) in percent, integers plain, others to 4 significant digits."""
    from edgelearn.report.sweep_plots import is_fraction

    if not stat or stat.get("mean") is None:
        return "-"
    mean, sd = stat["mean"], stat["sd"]
    if is_fraction(metric):
        return f"{100 * mean:.2f} ± {100 * sd:.2f} %" if sd else f"{100 * mean:.2f} %"
    if all(float(v).is_integer() for v in stat["values"]):
        return f"{mean:.1f} ± {sd:.1f}" if sd else f"{mean:.0f}"
    return f"{mean:.4g} ± {sd:.2g}" if sd else f"{mean:.4g}"


def results_markdown(results: Mapping[str, Any], metrics: Sequence[str]) -> str:
    """A Markdown table: one line per cell, mean ± sd over seeds (fractions in [0, 1] shown as %)."""
    cells_ = results["cells"]
    axes = list(cells_[0]["cell"]) if cells_ else []
    head = [*axes, "seeds", *metrics]
    lines = [
        f"### {results['experiment']}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for entry in cells_:
        seeds = ",".join(str(s) for s in entry["seeds"])
        values = [str(entry["cell"][a]) for a in axes] + [seeds]
        for m in metrics:
            stat = entry.get(m)
            text = _fmt(m, stat)
            if stat and 0 < stat["n"] < len(entry["seeds"]):  # e.g. a target only some seeds reached
                text += f" ({stat['n']} of {len(entry['seeds'])})"
            values.append(text)
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"
