"""Run reports: read/write a run directory, headless plots, rich tables and a terminal progress bar.

Importing this package never imports matplotlib; the plotting functions import it when called.
"""

from __future__ import annotations

from edgelearn.report.io import append_jsonl, read_metrics, read_summary, write_json_atomic
from edgelearn.report.plots import plot_comparison, plot_run
from edgelearn.report.progress import get_console, progress_bar
from edgelearn.report.tables import (
    comparison_table,
    format_bytes,
    format_si,
    render_report,
    summary_table,
    tier_table,
)

__all__ = [
    "append_jsonl",
    "comparison_table",
    "format_bytes",
    "format_si",
    "get_console",
    "plot_comparison",
    "plot_run",
    "progress_bar",
    "read_metrics",
    "read_summary",
    "render_report",
    "summary_table",
    "tier_table",
    "write_json_atomic",
]
