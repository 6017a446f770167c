"""The demo behind ``edgelearn demo``: FedAvg vs HierFAVG on digits, with their energy/delay/bytes ledgers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgelearn.config import RunConfig, build_config

# The demo's two runs, identical to configs/fedavg-digits.yaml and configs/hierfavg-digits.yaml (a test
# keeps them in sync).
_MLP = {"name": "mlp", "options": {"hidden": [128]}}
FEDAVG_DIGITS: dict[str, Any] = {
    "name": "fedavg-digits",
    "model": _MLP,
    "algorithm": {"name": "fedavg", "local": {"epochs": 3, "batch_size": 16, "lr": 0.1}},
}
HIERFAVG_DIGITS: dict[str, Any] = {
    "name": "hierfavg-digits",
    "model": _MLP,
    "topology": {"edges": 4, "devices_per_edge": 25},
    "algorithm": {"name": "hierfavg", "kappa1": 10, "kappa2": 2, "local": {"batch_size": 16, "lr": 0.1}},
}


def demo_configs() -> dict[str, RunConfig]:
    """The configs the demo runs, by label."""
    return {
        "FedAvg": build_config(FEDAVG_DIGITS, source="demo fedavg"),
        "HierFAVG": build_config(HIERFAVG_DIGITS, source="demo hierfavg"),
    }


def run_demo(out: Path, *, progress: bool | None = None) -> dict[str, dict[str, Any]]:
    """Run every demo config, print a comparison table and write comparison plots under ``out``."""
    from edgelearn.report.plots import plot_comparison
    from edgelearn.report.progress import get_console
    from edgelearn.report.tables import comparison_table
    from edgelearn.runner import run

    console = get_console()
    out.mkdir(parents=True, exist_ok=True)
    summaries: dict[str, dict[str, Any]] = {}
    for label, cfg in demo_configs().items():
        console.print(
            f"[bold]{label}[/bold]: {cfg.topology.model_dump(exclude_defaults=True)} on {cfg.data.dataset}"
        )
        summaries[label] = run(cfg, out / cfg.name, progress=progress)
    labels = list(summaries)
    console.print(comparison_table([summaries[k] for k in labels], labels))
    dirs = [Path(summaries[k]["run_dir"]) for k in labels]
    for x in ("round", "energy_j", "delay_s"):
        plot_comparison(dirs, out / f"compare_accuracy_vs_{x}.png", x=x, labels=labels)
    console.print(f"run directories and plots under {out}")
    return summaries
