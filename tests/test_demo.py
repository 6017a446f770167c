"""The demo's FedAgg part: per-tier table and plots beside a HierFAVG run (one short round, digits)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from edgelearn.commands import demo
from edgelearn.run_config import build_config
from edgelearn.runner import run


def test_fedagg_part_prints_tiers_and_writes_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "DEMO_FEDAGG_ROUNDS", 1)
    monkeypatch.setitem(demo.FEDAGG_DIGITS, "topology", {"edges": 2, "devices_per_edge": 3})
    hier = run(
        build_config(demo.HIERFAVG_DIGITS, ["algorithm.rounds=1", "topology.devices_per_edge=3"]),
        tmp_path / "hier",
        progress=False,
    )
    console = Console(file=io.StringIO(), width=200)
    summary = demo._fedagg_part(tmp_path, console, False, hier)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert summary["rounds"] == 1 and set(summary["accuracy_by_tier"]) == {"cloud", "edge", "device"}
    for needle in (
        "cloud",
        "edge",
        "device",
        "resnet14",
        "resnet8",
        "cnn_small",
        f"{hier['final_accuracy']:.2%}",
    ):
        assert needle in text
    for target in (0.8, 0.9):  # the config's targets, each reached in round 1 or not yet
        reached = summary["rounds_to_target"][f"{100 * target:g}%"]
        assert f"reaches {100 * target:g}%: FedAgg {'round 1' if reached else 'not yet'}" in text
    assert (tmp_path / "fedagg_vs_hierfavg_accuracy_vs_round.png").stat().st_size > 0
    assert (Path(summary["run_dir"]) / "accuracy_vs_round.png").stat().st_size > 0
