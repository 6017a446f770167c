"""Rich tables of a run's summary, its per-tier breakdown and a side-by-side comparison of runs.

Number conventions: bytes use binary IEC units with one decimal (1536 -> "1.5 KiB"); other physical
quantities use SI prefixes with three significant digits (1234.5 J -> "1.23 kJ"); durations of a second
or more are shown in plain seconds (3600 s -> "3,600.0 s"), never in "ks".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from edgelearn.errors import ConfigError, DataError
from edgelearn.report.io import PathLike, is_number, read_summary

MISSING = "—"
BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
BYTE_STEP = 1024  # IEC 80000-13 binary prefixes
SI_PREFIXES = {-12: "p", -9: "n", -6: "µ", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}
SI_SIGNIFICANT_DIGITS = 3
TIER_ORDER = ("cloud", "edge", "device")


def format_bytes(n: float) -> str:
    """Byte count in binary IEC units: whole bytes below 1 KiB, else one decimal (1536 -> "1.5 KiB")."""
    if not is_number(n) or not math.isfinite(n) or n < 0:
        raise DataError(
            f"a byte count must be a finite number >= 0, got {n!r}", hint="check the run's byte counters"
        )
    if n < BYTE_STEP:
        return f"{round(n)} B"
    value = float(n)
    index = 0
    while index < len(BYTE_UNITS) - 1 and round(value, 1) >= BYTE_STEP:
        value /= BYTE_STEP
        index += 1
    return f"{value:.1f} {BYTE_UNITS[index]}"


def _round_significant(value: float, digits: int) -> float:
    """``value`` (> 0) rounded to ``digits`` significant digits (9.996 -> 10.0 for 3 digits)."""
    return float(f"{value:.{digits - 1}e}")


def format_si(x: float, unit: str, *, digits: int = SI_SIGNIFICANT_DIGITS) -> str:
    """``x`` with an SI prefix and ``digits`` significant digits, keeping trailing zeros ("1.50 kJ")."""
    if not is_number(x):
        raise DataError(
            f"expected a number for a value in {unit!r}, got {x!r}", hint="check the run's summary"
        )
    if not math.isfinite(x):
        return f"{x} {unit}"
    if x == 0:
        return f"0 {unit}"
    exponents = sorted(SI_PREFIXES)
    magnitude = abs(x)
    exp3 = min(max(3 * math.floor(math.log10(magnitude) / 3), exponents[0]), exponents[-1])
    scaled = _round_significant(magnitude / 10.0**exp3, digits)
    if scaled >= 1000 and exp3 < exponents[-1]:  # 999.95 k rounds up to 1.00 M
        exp3 += 3
        scaled = _round_significant(magnitude / 10.0**exp3, digits)
    decimals = max(0, digits - 1 - math.floor(math.log10(scaled)))
    sign = "-" if x < 0 else ""
    return f"{sign}{scaled:.{decimals}f} {SI_PREFIXES[exp3]}{unit}"


def _format_seconds(x: float) -> str:
    """Seconds: SI prefixes below one second (12.3 ms), plain comma-grouped seconds above (3,600.0 s)."""
    if is_number(x) and math.isfinite(x) and abs(x) >= 1:
        return f"{x:,.1f} s"
    return format_si(x, "s")


def _field(summary: Mapping[str, Any], key: str, fmt: Any) -> str:
    """Format ``summary[key]`` with ``fmt``, or the MISSING mark if absent; DataError names a non-number."""
    value = summary.get(key)
    if value is None:
        return MISSING
    if not is_number(value):
        raise DataError(
            f"summary field {key!r} must be a number, got {value!r}", hint="regenerate summary.json"
        )
    return str(fmt(value))


def _percent(fraction: float) -> str:
    """A fraction in [0, 1] as a percentage with two decimals (0.875 -> "87.50 %")."""
    return f"{100.0 * fraction:.2f} %"


def _title(summary: Mapping[str, Any]) -> str:
    """``algorithm on dataset (seed N)`` from whatever of those keys the summary has."""
    algorithm = summary.get("algorithm", "run")
    dataset = summary.get("dataset")
    text = f"{algorithm} on {dataset}" if dataset else str(algorithm)
    if summary.get("seed") is not None:
        text += f" (seed {summary['seed']})"
    return text


def summary_table(summary: Mapping[str, Any]) -> Table:
    """A two-column table of a run's headline numbers: accuracy %, energy, delay, bytes, wall time."""
    title = f"Run summary: {_title(summary)}"
    table = Table(
        title=title, header_style="bold", min_width=len(title)
    )  # a narrow table would wrap the title
    table.add_column("Metric")
    table.add_column("Value", justify="right")
    table.add_row("Rounds", _field(summary, "rounds", int))
    table.add_row("Final accuracy", _field(summary, "final_accuracy", _percent))
    table.add_row("Energy", _field(summary, "energy_j", lambda v: format_si(v, "J")))
    by_kind = summary.get("by_kind")
    if isinstance(by_kind, Mapping):
        table.add_row("  compute", _field(by_kind, "compute_j", lambda v: format_si(v, "J")))
        table.add_row("  transmit", _field(by_kind, "transmit_j", lambda v: format_si(v, "J")))
    table.add_row("Simulated delay", _field(summary, "delay_s", _format_seconds))
    table.add_row("Bytes up", _field(summary, "bytes_up", format_bytes))
    table.add_row("Bytes down", _field(summary, "bytes_down", format_bytes))
    table.add_row("Wall time", _field(summary, "wall_s", _format_seconds))
    return table


def _ordered_tiers(tiers: Mapping[str, Any]) -> list[str]:
    """Tier names cloud, edge, device first (top of the hierarchy down), then any others alphabetically."""
    known = [t for t in TIER_ORDER if t in tiers]
    return known + sorted(t for t in tiers if t not in TIER_ORDER)


def tier_table(summary: Mapping[str, Any]) -> Table | None:
    """Per-tier energy (with share), compute/transmit split, bytes and FLOPs; None if no ``by_tier`` key."""
    by_tier = summary.get("by_tier")
    if by_tier is None:
        return None
    if not isinstance(by_tier, Mapping) or not all(isinstance(v, Mapping) for v in by_tier.values()):
        raise DataError(
            "summary field 'by_tier' must map tier names to objects", hint="regenerate summary.json"
        )
    energies = [v.get("energy_j") for v in by_tier.values()]
    total = sum(e for e in energies if is_number(e))
    table = Table(title=f"Per-tier breakdown: {_title(summary)}", header_style="bold")
    for name in ("Tier", "Energy", "Share", "Compute", "Transmit", "Bytes up", "Bytes down", "FLOPs"):
        table.add_column(name, justify="left" if name == "Tier" else "right")
    for tier in _ordered_tiers(by_tier):
        row = by_tier[tier]
        energy = row.get("energy_j")
        share = _percent(energy / total) if is_number(energy) and total > 0 else MISSING
        table.add_row(
            tier,
            _field(row, "energy_j", lambda v: format_si(v, "J")),
            share,
            _field(row, "compute_j", lambda v: format_si(v, "J")),
            _field(row, "transmit_j", lambda v: format_si(v, "J")),
            _field(row, "bytes_up", format_bytes),
            _field(row, "bytes_down", format_bytes),
            _field(row, "flops", lambda v: format_si(v, "FLOP")),
        )
    return table


def comparison_table(summaries: Sequence[Mapping[str, Any]], labels: Sequence[str] | None = None) -> Table:
    """One row per run (label, algorithm, dataset, rounds, accuracy, energy, delay, bytes, wall time)."""
    if labels is not None and len(labels) != len(summaries):
        raise ConfigError(
            f"got {len(labels)} labels for {len(summaries)} runs",
            hint="give exactly one label per run, or none to use the algorithm names",
        )
    names = (
        list(labels)
        if labels is not None
        else [str(s.get("algorithm", f"run {i + 1}")) for i, s in enumerate(summaries)]
    )
    table = Table(title="Run comparison", header_style="bold")
    columns = (
        "Run",
        "Algorithm",
        "Dataset",
        "Rounds",
        "Final accuracy",
        "Energy",
        "Delay",
        "Bytes up",
        "Bytes down",
        "Wall time",
    )
    for name in columns:
        table.add_column(name, justify="left" if name in ("Run", "Algorithm", "Dataset") else "right")
    for name, summary in zip(names, summaries, strict=True):
        table.add_row(
            name,
            str(summary.get("algorithm", MISSING)),
            str(summary.get("dataset", MISSING)),
            _field(summary, "rounds", int),
            _field(summary, "final_accuracy", _percent),
            _field(summary, "energy_j", lambda v: format_si(v, "J")),
            _field(summary, "delay_s", _format_seconds),
            _field(summary, "bytes_up", format_bytes),
            _field(summary, "bytes_down", format_bytes),
            _field(summary, "wall_s", _format_seconds),
        )
    return table


def render_report(run_dir: PathLike, console: Console | None = None) -> list[Path]:
    """Print a run's summary and per-tier tables and list its plots; returns the plot paths found.

    ``console`` defaults to a stdout Console (a report is the command's output, unlike progress on stderr).
    """
    console = console if console is not None else Console()
    summary = read_summary(run_dir)
    console.print(summary_table(summary))
    tiers = tier_table(summary)
    if tiers is not None:
        console.print(tiers)
    plots = sorted(Path(run_dir).glob("*.png"))
    if plots:
        console.print("Plots:")
        for plot in plots:
            console.print(f"  {plot}", markup=False, highlight=False)
    else:
        console.print(f"No plots in {run_dir}; create them with edgelearn.report.plot_run.", markup=False)
    return plots


def plans_table(report: dict[str, Any], title: str = "Two-stage plans on the same budgets") -> Table:
    """One row per scheme of an ``edgelearn plan`` report: rounds, predicted cost, bound, feasibility."""
    table = Table(title=title)
    for col in ("scheme", "M", "N", "energy J", "delay s", "bound", "feasible"):
        table.add_column(col, justify="left" if col == "scheme" else "right")

    def fmt(value: float | None) -> str:
        return "—" if value is None else f"{value:.4g}"

    for name, p in {"optimized": report, **report["schemes"]}.items():
        table.add_row(
            name,
            str(p["M"]),
            str(p["N"]),
            fmt(p["energy_j"]),
            fmt(p["delay_s"]),
            fmt(p["bound"]),
            "yes" if p["feasible"] else "no",
        )
    caps = report.get("round_caps") or []
    if caps:  # every scheme was held to these caps: say so beside the numbers they shaped
        table.caption = "\n".join(f"[yellow]warning:[/] {cap['message']}" for cap in caps)
    return table


def tree_plans_table(report: dict[str, Any]) -> Table:
    """One row per scheme of a tree plan (``edgelearn plan`` on a config with ``plan:``): the objective,
    the round's predicted energy and delay, and feasibility; the planned clocks and powers per tier below."""
    b = report["budgets"]
    limits = ", ".join(
        f"{k} {v:.4g}" for k, v in (("energy J", b["round_energy_j"]), ("delay s", b["round_delay_s"])) if v
    )
    table = Table(
        title=f"{report['algorithm']}: one round planned for {report['objective']} ({limits or 'no budget'})"
    )
    for col in ("scheme", "objective", "energy J", "delay s", "feasible"):
        table.add_column(col, justify="left" if col == "scheme" else "right")
    for name, s in report["schemes"].items():
        table.add_row(
            name, f"{s['objective']:.5g}", f"{s['energy_j']:.5g}", f"{s['delay_s']:.5g}",
            "yes" if s["feasible"] else "no",
        )  # fmt: skip
    lines = []
    for tier, entry in report["settings"].items():
        parts = [
            f"{k} {v['min']:.3g}-{v['max']:.3g} (mean {v['mean']:.3g}, {v['nodes']} nodes)"
            for k, v in entry.items()
        ]
        lines.append(f"{tier}: " + "; ".join(parts))
    if "before" in report:  # plan.associate_round: the rows are the new tree's plan, from that round on
        before = report["before"]
        lines.append(
            f"from round {report['association_round']}, after {len(report['association']['moves'])} devices "
            f"migrate; before it the config's tree: {before['energy_j']:.5g} J, {before['delay_s']:.5g} s"
        )
    table.caption = "\n".join(lines)
    return table
