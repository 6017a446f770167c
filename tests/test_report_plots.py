"""Tests for edgelearn.report.plots: headless PNGs of one run and of several runs overlaid."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgelearn.errors import ConfigError, DataError
from edgelearn.report.plots import DPI, FIGSIZE_IN, plot_comparison, plot_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_PNG_BYTES = 5_000  # an empty 768x504 canvas compresses to ~2 kB; axes, text and lines add far more
SRC_DIR = Path(__file__).resolve().parents[1] / "src"
# matplotlib's default colour cycle: C0 draws the delivered model's line, C1 the first tier line.
C0_RGB = (0x1F, 0x77, 0xB4)
C1_RGB = (0xFF, 0x7F, 0x0E)


def make_run(
    run_dir: Path, *, algorithm: str = "fedavg", tiers: bool = False, costs: bool = True, shift: float = 0.0
) -> Path:
    """A tiny fake run directory: four metrics lines (accuracy raised by ``shift``) and a summary."""
    run_dir.mkdir(parents=True)
    lines = []
    for rnd, base in enumerate((0.2, 0.45, 0.6, 0.7), start=1):
        acc = base + shift
        record: dict[str, object] = {"round": rnd, "accuracy": acc, "loss": 2.0 - acc}
        if costs:
            record |= {
                "energy_j": 1.5 * rnd,
                "delay_s": 10.0 * rnd,
                "bytes_up": 1000 * rnd,
                "wall_s": 0.1 * rnd,
            }
        if tiers:
            record["accuracy_by_tier"] = {"device": acc - 0.1, "edge": acc, "cloud": acc + 0.05}
        lines.append(json.dumps(record))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = {"algorithm": algorithm, "dataset": "digits", "seed": 0, "rounds": 4, "final_accuracy": 0.7}
    (run_dir / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return run_dir


def assert_png(path: Path) -> None:
    """``path`` is a non-trivial PNG of the configured size (width/height read from the IHDR chunk)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > MIN_PNG_BYTES
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (round(FIGSIZE_IN[0] * DPI), round(FIGSIZE_IN[1] * DPI))


def has_colour(path: Path, rgb: tuple[int, int, int]) -> bool:
    """Whether any pixel of the PNG is (within 2 levels) the given RGB colour."""
    from matplotlib.image import imread

    pixels = np.round(imread(path)[..., :3] * 255).astype(int)
    return bool(np.any(np.all(np.abs(pixels - np.array(rgb)) <= 2, axis=-1)))


def test_plot_run_writes_three_valid_pngs_and_no_temp_files(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    paths = plot_run(run_dir)
    assert [p.name for p in paths] == [
        "accuracy_vs_round.png",
        "accuracy_vs_energy.png",
        "accuracy_vs_time.png",
    ]
    for path in paths:
        assert path.parent == run_dir
        assert_png(path)
        assert has_colour(path, C0_RGB)
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        ["metrics.jsonl", "summary.json", *(p.name for p in paths)]
    )


def test_plot_run_draws_one_extra_line_per_tier(tmp_path: Path) -> None:
    plain = plot_run(make_run(tmp_path / "plain"))[0]
    tiered = plot_run(make_run(tmp_path / "tiered", tiers=True))[0]
    assert not has_colour(plain, C1_RGB)
    assert has_colour(tiered, C1_RGB)


def test_plot_run_skips_cost_plots_for_runs_without_costs(tmp_path: Path) -> None:
    paths = plot_run(make_run(tmp_path / "run", costs=False))
    assert [p.name for p in paths] == ["accuracy_vs_round.png"]


def test_plot_run_works_without_summary_and_rejects_empty_metrics(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    (run_dir / "summary.json").unlink()  # a run still in progress
    assert len(plot_run(run_dir)) == 3
    (run_dir / "metrics.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="has no records"):
        plot_run(run_dir)


@pytest.mark.parametrize("x", ["round", "energy_j", "delay_s"])
def test_plot_comparison_overlays_runs(tmp_path: Path, x: str) -> None:
    runs = [
        make_run(tmp_path / "a", algorithm="fedavg"),
        make_run(tmp_path / "b", algorithm="hierfavg", shift=0.2),
    ]
    out = plot_comparison(runs, tmp_path / "cmp" / f"by_{x}.png", x=x, labels=["FedAvg", "HierFAVG"])
    assert out == tmp_path / "cmp" / f"by_{x}.png"
    assert_png(out)
    assert has_colour(out, C0_RGB) and has_colour(out, C1_RGB)
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_plot_comparison_rejects_bad_arguments(tmp_path: Path) -> None:
    with_costs = make_run(tmp_path / "a")
    without_costs = make_run(tmp_path / "b", costs=False)
    out = tmp_path / "cmp.png"
    with pytest.raises(ConfigError, match="unknown x axis 'flops'"):
        plot_comparison([with_costs], out, x="flops")
    with pytest.raises(ConfigError, match="got 1 labels for 2 runs"):
        plot_comparison([with_costs, without_costs], out, labels=["only one"])
    with pytest.raises(ConfigError, match="no run directories"):
        plot_comparison([], out)
    with pytest.raises(DataError, match=r"b[/\\]metrics.jsonl has no records with 'energy_j'"):
        plot_comparison([with_costs, without_costs], out, x="energy_j")
    assert not out.exists()


def test_importing_report_does_not_import_matplotlib_and_plotting_skips_pyplot(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    code = (
        "import sys, edgelearn.report as r\n"
        "assert 'matplotlib' not in sys.modules, 'imported at package import'\n"
        f"r.plot_run({str(run_dir)!r})\n"
        "assert 'matplotlib' in sys.modules\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot keeps figures alive'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"} | {"PYTHONPATH": str(SRC_DIR)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
