"""Tests for edgelearn.report.tables: number formatting and the rich tables of one run and of several."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from edgelearn.errors import ConfigError, DataError
from edgelearn.report.tables import (
    comparison_table,
    format_bytes,
    format_si,
    render_report,
    summary_table,
    tier_table,
)

WIDTH = 120
MIB = 2**20


def make_summary(**overrides: Any) -> dict[str, Any]:
    """A summary.json payload with round numbers whose formatted forms are worked out by hand below."""
    summary: dict[str, Any] = {
        "algorithm": "hierfavg",
        "dataset": "digits",
        "seed": 7,
        "rounds": 20,
        "final_accuracy": 0.8125,  # -> 81.25 %
        "energy_j": 1250.0,  # -> 1.25 kJ
        "delay_s": 3725.5,  # -> 3,725.5 s
        "bytes_up": 1536,  # -> 1.5 KiB
        "bytes_down": 5 * MIB + MIB // 2,  # -> 5.5 MiB
        "wall_s": 0.0425,  # -> 42.5 ms
        "by_kind": {"compute_j": 1000.0, "transmit_j": 250.0},  # -> 1.00 kJ, 250 J
        "by_tier": {
            "device": {
                "energy_j": 1000.0,  # share 80.00 %
                "compute_j": 900.0,
                "transmit_j": 100.0,
                "bytes_up": 3 * 2**30,  # -> 3.0 GiB
                "bytes_down": 2048,  # -> 2.0 KiB
                "flops": 2.5e9,  # -> 2.50 GFLOP
            },
            "edge": {
                "energy_j": 200.0,  # 16.00 %
                "compute_j": 150.0,
                "transmit_j": 50.0,
                "bytes_up": 512,
                "bytes_down": 0,
                "flops": 1.0e6,
            },
            "cloud": {
                "energy_j": 50.0,  # 4.00 %
                "compute_j": 50.0,
                "transmit_j": 0.0,
                "bytes_up": 0,
                "bytes_down": 0,
                "flops": 3.2e12,
            },
        },
    }
    summary.update(overrides)
    return summary


def render(renderable: object) -> str:
    """Plain text of a rich renderable at a fixed width."""
    console = Console(record=True, width=WIDTH)
    console.print(renderable)
    return console.export_text()


def row_of(text: str, first_cell: str) -> list[str]:
    """The non-empty cells of the table line whose first cell is ``first_cell``."""
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row starting with {first_cell!r} in:\n{text}")


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (MIB - 1, "1.0 MiB"),  # 1023.999 KiB rounds to 1024.0 KiB, so it is promoted
        (5 * MIB + MIB // 2, "5.5 MiB"),
        (3 * 2**30, "3.0 GiB"),
        (1.25 * 2**40, "1.2 TiB"),  # 1.25 rounds half-to-even
        (2**60, "1.0 EiB"),
        (2**70, "1024.0 EiB"),  # no unit above EiB
    ],
)
def test_format_bytes_uses_binary_iec_units(n: float, expected: str) -> None:
    assert format_bytes(n) == expected


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf, "12", None, True])
def test_format_bytes_rejects_non_byte_counts(bad: Any) -> None:
    with pytest.raises(DataError, match="byte count"):
        format_bytes(bad)


@pytest.mark.parametrize(
    ("x", "unit", "expected"),
    [
        (0, "J", "0 J"),
        (1234.5, "J", "1.23 kJ"),
        (1500, "J", "1.50 kJ"),
        (0.00123, "s", "1.23 ms"),
        (4.2e-6, "s", "4.20 µs"),
        (250.0, "J", "250 J"),
        (9.996, "J", "10.0 J"),  # rounding up adds a digit before the point, not after
        (999_950.0, "J", "1.00 MJ"),  # rounding up crosses the prefix boundary
        (-2.5e6, "J", "-2.50 MJ"),
        (2.5e9, "FLOP", "2.50 GFLOP"),
        (1e21, "J", "1000 EJ"),  # above the largest prefix
        (math.inf, "J", "inf J"),
    ],
)
def test_format_si_hand_checked(x: float, unit: str, expected: str) -> None:
    assert format_si(x, unit) == expected


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=2**62))
def test_format_bytes_round_trips_within_display_precision(n: int) -> None:
    text = format_bytes(n)
    value, unit = text.split(" ")
    scale = 1024 ** ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"].index(unit)
    assert float(value) < 1024
    assert abs(float(value) * scale - n) <= 0.05 * scale + 0.5  # one decimal, or whole bytes


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=1e-11, max_value=1e17) | st.floats(min_value=-1e17, max_value=-1e-11))
def test_format_si_has_three_significant_digits_and_round_trips(x: float) -> None:
    prefixes = {
        "p": 1e-12,
        "n": 1e-9,
        "µ": 1e-6,
        "m": 1e-3,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "P": 1e15,
    }
    value, unit = format_si(x, "J").split(" ")
    scale = prefixes.get(unit[:-1], 1.0)
    mantissa = abs(float(value))
    assert 1 <= mantissa < 1000
    assert len(value.lstrip("-").replace(".", "")) == 3
    assert math.isclose(float(value) * scale, x, rel_tol=5e-3)


def test_summary_table_shows_formatted_headline_numbers() -> None:
    text = render(summary_table(make_summary()))
    assert "Run summary: hierfavg on digits (seed 7)" in text
    assert row_of(text, "Rounds") == ["Rounds", "20"]
    assert row_of(text, "Final accuracy") == ["Final accuracy", "81.25 %"]
    assert row_of(text, "Energy") == ["Energy", "1.25 kJ"]
    assert row_of(text, "compute") == ["compute", "1.00 kJ"]
    assert row_of(text, "transmit") == ["transmit", "250 J"]
    assert row_of(text, "Simulated delay") == ["Simulated delay", "3,725.5 s"]
    assert row_of(text, "Bytes up") == ["Bytes up", "1.5 KiB"]
    assert row_of(text, "Bytes down") == ["Bytes down", "5.5 MiB"]
    assert row_of(text, "Wall time") == ["Wall time", "42.5 ms"]


def test_summary_table_marks_missing_fields_and_rejects_non_numbers() -> None:
    summary = make_summary()
    del summary["delay_s"], summary["by_kind"]
    text = render(summary_table(summary))
    assert row_of(text, "Simulated delay") == ["Simulated delay", "—"]
    assert "compute" not in text
    with pytest.raises(DataError, match="summary field 'energy_j' must be a number, got 'lots'"):
        summary_table(make_summary(energy_j="lots"))


def test_tier_table_orders_tiers_top_down_with_energy_shares() -> None:
    table = tier_table(make_summary())
    assert table is not None
    text = render(table)
    assert row_of(text, "cloud") == ["cloud", "50.0 J", "4.00 %", "50.0 J", "0 J", "0 B", "0 B", "3.20 TFLOP"]
    assert row_of(text, "edge") == [
        "edge",
        "200 J",
        "16.00 %",
        "150 J",
        "50.0 J",
        "512 B",
        "0 B",
        "1.00 MFLOP",
    ]
    assert row_of(text, "device") == [
        "device", "1.00 kJ", "80.00 %", "900 J", "100 J", "3.0 GiB", "2.0 KiB", "2.50 GFLOP",
    ]  # fmt: skip
    lines = text.splitlines()
    positions = [
        next(i for i, line in enumerate(lines) if f" {t} " in line) for t in ("cloud", "edge", "device")
    ]
    assert positions == sorted(positions)


def test_tier_table_absent_or_malformed() -> None:
    summary = make_summary()
    del summary["by_tier"]
    assert tier_table(summary) is None
    with pytest.raises(DataError, match="'by_tier' must map tier names to objects"):
        tier_table(make_summary(by_tier={"edge": 3.0}))


def test_comparison_table_has_one_row_per_run() -> None:
    runs = [make_summary(), make_summary(algorithm="fedavg", final_accuracy=0.5, energy_j=2.0e6, rounds=40)]
    text = render(comparison_table(runs, labels=["HFL", "FL"]))
    assert row_of(text, "HFL") == [
        "HFL", "hierfavg", "digits", "20", "81.25 %", "1.25 kJ", "3,725.5 s", "1.5 KiB", "5.5 MiB", "42.5 ms",
    ]  # fmt: skip
    assert row_of(text, "FL")[:6] == ["FL", "fedavg", "digits", "40", "50.00 %", "2.00 MJ"]
    default_labels = render(comparison_table(runs))
    assert row_of(default_labels, "fedavg")[:2] == ["fedavg", "fedavg"]
    with pytest.raises(ConfigError, match="got 1 labels for 2 runs"):
        comparison_table(runs, labels=["one"])


def test_render_report_prints_tables_and_lists_plots(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps(make_summary()), encoding="utf-8")
    console = Console(record=True, width=WIDTH)
    assert render_report(tmp_path, console) == []
    assert "No plots in" in console.export_text()

    for name in ("accuracy_vs_round.png", "accuracy_vs_energy.png"):
        (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    console = Console(record=True, width=WIDTH)
    plots = render_report(tmp_path, console)
    text = console.export_text()
    assert [p.name for p in plots] == ["accuracy_vs_energy.png", "accuracy_vs_round.png"]
    assert "Run summary: hierfavg on digits (seed 7)" in text
    assert "Per-tier breakdown" in text
    assert row_of(text, "Final accuracy") == ["Final accuracy", "81.25 %"]
    assert "Plots:" in text and "accuracy_vs_round.png" in text and "accuracy_vs_energy.png" in text


def test_render_report_on_missing_run_dir_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        render_report(tmp_path / "missing", Console(record=True, width=WIDTH))
