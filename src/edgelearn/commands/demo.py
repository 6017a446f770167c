"""The demo behind ``edgelearn demo``: FedAvg vs HierFAVG on digits, with their energy/delay/bytes ledgers;
FedAgg beside HierFAVG per tier; and a two-stage plan executed against its prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgelearn.run_config import RunConfig, build_config

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


# Identical to configs/two_stage/digits.yaml (a test keeps them in sync).
TWO_STAGE_DIGITS: dict[str, Any] = {
    "name": "two-stage-digits",
    "seed": 0,
    "data": {"dataset": "digits"},
    "partition": {"method": "iid"},
    "topology": {"devices": 10},
    "hardware": {"cloud": {"profile": "paper_edge"}},
    "channel": {"distance_m": [50, 250], "device_to_cloud_distance_m": [50, 250], "include_downlink": False},
    "model": _MLP,
    "algorithm": {
        "name": "two_stage",
        "scheme": "optimized",
        "shift": {"kind": "rotation", "level": 0.3},
        "budget": {"energy_j": 20.0, "delay_s": 60.0},
        "eta_pre": 0.05,
        "local": {"lr": 0.05},
    },
    "eval": {"every": 5},
}


# Identical to configs/fedagg/digits.yaml (a test keeps them in sync); the demo runs DEMO_FEDAGG_ROUNDS of it.
FEDAGG_DIGITS: dict[str, Any] = {
    "name": "fedagg-digits",
    "seed": 0,
    "data": {"dataset": "digits", "holdout": 360},  # the bridge autoencoder's training hold-out
    "partition": {"method": "dirichlet", "alpha": 1.0, "min_size": 2},
    "topology": {"edges": 4, "devices_per_edge": 25},
    "hardware": {"edge": {"profile": "xeon_gold_6248"}},
    "model": {"name": "resnet14", "options": {"width": 2}},
    "algorithm": {
        "name": "fedagg",
        "rounds": 20,
        "beta": 10.0,
        "gamma": 1.0,
        "T": 3.0,
        "local": {"lr": 0.001, "batch_size": 8},
    },
    "eval": {"every": 1, "targets": [0.8, 0.9]},
}

DEMO_FEDAGG_ROUNDS = 5
"""FedAgg rounds in the demo: ~13 s on one thread of a 2-core AMD EPYC (engine.torch_threads=auto picks one
thread for its batch-8 steps; at torch's default two threads they took 115 CPU-seconds on a busy machine, the
585 s demo of an earlier report); the config's 20 rounds run with
``edgelearn run configs/fedagg/digits.yaml``."""


def demo_configs() -> dict[str, RunConfig]:
    """The configs the demo runs, by label."""
    return {
        "FedAvg": build_config(FEDAVG_DIGITS, source="demo fedavg"),
        "HierFAVG": build_config(HIERFAVG_DIGITS, source="demo hierfavg"),
    }


def run_demo(out: Path, *, progress: bool | None = None) -> dict[str, dict[str, Any]]:
    """Run every demo config, print a comparison table and write comparison plots under ``out``.

    Each run replaces the demo's own run directory of the same name (``overwrite``), so the demo re-runs.
    """
    from edgelearn.report.io import ensure_writable_dir
    from edgelearn.report.plots import plot_comparison
    from edgelearn.report.progress import get_console
    from edgelearn.report.tables import comparison_table
    from edgelearn.runner import run

    console = get_console()
    out = ensure_writable_dir(out, "demo folder (--out)")
    summaries: dict[str, dict[str, Any]] = {}
    for label, cfg in demo_configs().items():
        console.print(
            f"[bold]{label}[/bold]: {cfg.topology.model_dump(exclude_defaults=True)} on {cfg.data.dataset}"
        )
        summaries[label] = run(cfg, out / cfg.name, progress=progress, overwrite=True)
    labels = list(summaries)
    console.print(comparison_table([summaries[k] for k in labels], labels))
    dirs = [Path(summaries[k]["run_dir"]) for k in labels]
    for x in ("round", "energy_j", "delay_s"):
        plot_comparison(dirs, out / f"compare_accuracy_vs_{x}.png", x=x, labels=labels)
    summaries["FedAgg"] = _fedagg_part(out, console, progress, summaries["HierFAVG"])
    summaries["Two-stage"] = _two_stage_part(out, console, progress)
    console.print(f"run directories and plots under {out}")
    return summaries


def _fedagg_part(out: Path, console: Any, progress: bool | None, hierfavg: dict[str, Any]) -> dict[str, Any]:
    """FedAgg on digits beside the HierFAVG run: per-tier accuracy and bytes, and an accuracy plot."""
    from rich.table import Table

    from edgelearn.report.io import read_metrics, rounds_to, target_key
    from edgelearn.report.plots import plot_comparison
    from edgelearn.report.tables import format_bytes
    from edgelearn.runner import run

    cfg = build_config(FEDAGG_DIGITS, [f"algorithm.rounds={DEMO_FEDAGG_ROUNDS}"], source="demo fedagg")
    console.print(
        f"[bold]FedAgg[/bold]: {cfg.topology.model_dump(exclude_defaults=True)} on {cfg.data.dataset}, "
        f"{DEMO_FEDAGG_ROUNDS} rounds, models growing toward the cloud, logits on bridge samples"
    )
    summary = run(cfg, out / cfg.name, progress=progress, overwrite=True)
    table = Table(
        title=f"FedAgg ({summary['rounds']} rounds) beside HierFAVG ({hierfavg['rounds']} rounds), per tier"
    )
    for col in (
        "tier",
        "FedAgg model",
        "FedAgg acc.",
        "HierFAVG acc.",
        "FedAgg bytes up / down",
        "HierFAVG bytes up / down",
    ):
        table.add_column(col, justify="left" if col in ("tier", "FedAgg model") else "right")
    acc = summary.get("accuracy_by_tier") or {}
    for tier in ("cloud", "edge", "device"):
        mine, theirs = summary["by_tier"].get(tier, {}), hierfavg["by_tier"].get(tier, {})
        model = ", ".join(sorted((summary.get("models_by_tier") or {}).get(tier, {})))
        table.add_row(
            tier,
            model,
            f"{acc[tier]:.2%}" if acc.get(tier) is not None else "—",
            # HierFAVG's edges and devices start every round from the cloud's average: one model to score
            f"{hierfavg['final_accuracy']:.2%}" if tier == "cloud" else "(same model)",
            f"{format_bytes(mine.get('bytes_up', 0.0))} / {format_bytes(mine.get('bytes_down', 0.0))}",
            f"{format_bytes(theirs.get('bytes_up', 0.0))} / {format_bytes(theirs.get('bytes_down', 0.0))}",
        )
    console.print(table)
    ours, hier = read_metrics(summary["run_dir"]), read_metrics(hierfavg["run_dir"])
    for target in cfg.eval.targets:
        mine, theirs = rounds_to(ours, target), rounds_to(hier, target)
        console.print(
            f"cloud model reaches {target_key(target)}: FedAgg "
            f"{f'round {mine}' if mine else 'not yet'}, HierFAVG {f'round {theirs}' if theirs else 'not yet'}"
        )
    plot = plot_comparison(
        [Path(summary["run_dir"]), Path(hierfavg["run_dir"])],
        out / "fedagg_vs_hierfavg_accuracy_vs_round.png",
        labels=["FedAgg (cloud)", "HierFAVG"],
    )
    console.print(f"per-tier accuracy curves: {Path(summary['run_dir']) / 'accuracy_vs_round.png'}; {plot}")
    return summary


def _two_stage_part(out: Path, console: Any, progress: bool | None) -> dict[str, Any]:
    """Plan two-stage learning on digits, show the plan beside the baseline schemes, execute it."""
    from rich.table import Table

    from edgelearn.commands.plan import plan_report
    from edgelearn.report.tables import plans_table
    from edgelearn.runner import run

    cfg = build_config(TWO_STAGE_DIGITS, source="demo two-stage")
    budget = cfg.algorithm.budget
    console.print(
        f"[bold]Two-stage[/bold]: {cfg.topology.devices} devices, {cfg.algorithm.shift.kind} shift "
        f"{cfg.algorithm.shift.level}, budgets {budget.energy_j} J / {budget.delay_s} s"
    )
    report = plan_report(cfg)
    table = plans_table(report)
    console.print(table)
    summary = run(cfg, out / cfg.name, progress=progress, overwrite=True)
    check = Table(title="Executed plan: predicted vs measured (ledger)")
    for col in ("", "predicted", "measured"):
        check.add_column(col, justify="right")
    for key, unit in (("energy_j", "J"), ("delay_s", "s")):
        check.add_row(
            f"{key[:-2]} ({unit})", f"{summary['predicted'][key]:.6g}", f"{summary['measured'][key]:.6g}"
        )
    check.add_row("task accuracy", "", f"{summary['final_accuracy']:.2%}")
    console.print(check)
    return summary
