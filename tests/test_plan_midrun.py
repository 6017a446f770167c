"""A planned edge association executed mid-run (``plan.associate_round``, runner/midrun.py): FedAgg starts
on the config's tree at that tree's plan, its devices migrate at round R through the configured-migration
path (Wu et al., INFOCOM 2024, Theorem 1) and later rounds run at the new tree's plan; each phase's ledger
matches its prediction, round R pays the migration on top, the learning is that of the same configured
migrations, a resume restores it, and algorithms that cannot re-parent mid-run are refused (exit 2)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgelearn.algorithms.registry import algorithm_class
from edgelearn.checkpoint import read_checkpoint
from edgelearn.errors import ConfigError
from edgelearn.run_config import RunConfig, build_config, load_config
from edgelearn.runner import run
from edgelearn.runner.midrun import check_associate_round

ROOT = Path(__file__).resolve().parents[1]
FEDAGG = ROOT / "configs" / "plan" / "fedagg-digits.yaml"
HIERFAVG = ROOT / "configs" / "plan" / "hierfavg-digits.yaml"
MATCH_RTOL = 1e-6
"""Executed vs predicted energy and delay (the same cost functions on the same events)."""
ROUND = 2
"""The association round of the end-to-end run (of ROUNDS)."""
ROUNDS = 4
ASSOCIATE = [
    "topology.edges=2", "topology.devices_per_edge=4", "output.plots=false",
    "channel.edge_distances=per_pair", "channel.distance_m=[10, 1000]",
    "plan.associate=true", "plan.association_evaluations=40", f"plan.associate_round={ROUND}",
]  # fmt: skip
"""A tiny tree whose device-edge distances spread wide (the search moves devices), executed mid-run."""
FEDAGG_SET = [
    *ASSOCIATE, "algorithm.autoencoder.epochs=1", f"algorithm.rounds={ROUNDS}", "plan.round_delay_s=1.0",
    "output.checkpoint_every=1", f"output.checkpoint_keep={ROUNDS}",
]  # fmt: skip


def _metrics(out: Path, drop: tuple[str, ...] = ("wall_s", "wall_s_by_part")) -> list[dict[str, Any]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in drop} for x in lines]


def _parents(out: Path, round_: int) -> list[int]:
    """Each node's parent after round ``round_`` (its checkpoint)."""
    payload = read_checkpoint(out / "checkpoints" / f"ckpt-{round_:06d}.pt")
    return [int(p) for p in payload["algorithm"]["parents"]]


@pytest.fixture(scope="module")
def midrun(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, Path, dict[str, Any]]:
    cfg = load_config(FEDAGG, FEDAGG_SET)
    out = tmp_path_factory.mktemp("midrun") / "run"
    return cfg, out, run(cfg, out)


def test_each_phase_runs_at_its_plan_and_the_association_round_pays_the_migration(
    midrun: tuple[RunConfig, Path, dict[str, Any]],
) -> None:
    _, out, summary = midrun
    plan = summary["plan"]
    moves = {int(d): e for d, e in plan["association"]["moves"].items()}
    assert moves and plan["association_round"] == ROUND
    assert plan["association"]["objective"] <= plan["association"]["configured_objective"]
    before, moving, after = plan["phases"]
    assert [p["phase"] for p in plan["phases"]] == ["config_tree", "association_round", "association"]
    assert before["rounds"] == [1, ROUND - 1] and after["rounds"] == [ROUND + 1, ROUNDS]
    # rounds before R: the config tree's plan (plan.before); rounds after R: the new tree's plan
    assert before["predicted"] == {
        "energy_j": plan["before"]["energy_j"],
        "delay_s": plan["before"]["delay_s"],
    }
    assert after["predicted"] == {"energy_j": plan["energy_j"], "delay_s": plan["delay_s"]}
    for phase in (before, after):
        for key in ("energy_j", "delay_s"):
            assert phase["measured"][key] == pytest.approx(
                [phase["predicted"][key]] * len(phase["measured"][key]), rel=MATCH_RTOL
            )
    # round R: the new tree's plan plus the migration (migrate_embed, migrate_decode), reported apart
    assert set(moving["migration_by_phase_j"]) == {"migrate_embed", "migrate_decode"}
    assert moving["migration_energy_j"] > 0
    assert moving["measured"]["energy_j"][0] == pytest.approx(
        moving["predicted"]["energy_j"] + moving["migration_energy_j"], rel=MATCH_RTOL
    )
    assert moving["measured"]["delay_s"][0] > moving["predicted"]["delay_s"]
    assert summary["by_phase"]["migrate_embed"]["energy_j"] > 0
    assert plan["measured"]["round"] == ROUND + 1
    assert plan["measured"]["energy_j"] == pytest.approx(plan["energy_j"], rel=MATCH_RTOL)
    # the devices move at round R, to the planned edges
    first, last = _parents(out, ROUND - 1), _parents(out, ROUNDS)
    assert all(first[d] != e for d, e in moves.items())
    assert all(last[d] == e for d, e in moves.items())
    assert _parents(out, ROUND) == last


def test_the_learning_is_fedaggs_with_the_same_configured_migrations(
    midrun: tuple[RunConfig, Path, dict[str, Any]], tmp_path: Path
) -> None:
    cfg, out, summary = midrun
    data = cfg.model_dump(mode="json")
    data["plan"] = None  # the operating point changes clocks and powers, never what is learned
    data["algorithm"]["migrations"] = [
        {"round": ROUND, "node": int(d), "new_parent": e}
        for d, e in summary["plan"]["association"]["moves"].items()
    ]
    configured = run(build_config(data, source="configured migrations"), tmp_path / "configured")
    energy = ("wall_s", "wall_s_by_part", "energy_j", "delay_s")  # the plan changes these, nothing else
    assert _metrics(tmp_path / "configured", energy) == _metrics(out, energy)
    for key in ("final_accuracy", "final_loss", "accuracy_by_tier", "bytes_up", "bytes_down", "flops"):
        assert configured[key] == summary[key]
    assert (
        configured["by_phase"]["migrate_embed"]["bytes_up"]
        == summary["by_phase"]["migrate_embed"]["bytes_up"]
    )
    data["algorithm"]["migrations"] = []  # the control: the moves change what is learned from round R on
    run(build_config(data, source="no migrations"), tmp_path / "unmoved")
    unmoved = _metrics(tmp_path / "unmoved", energy)
    assert unmoved[: ROUND - 1] == _metrics(out, energy)[: ROUND - 1]
    assert [m["loss"] for m in unmoved[ROUND - 1 :]] != [m["loss"] for m in _metrics(out)[ROUND - 1 :]]


@pytest.mark.parametrize("after", [ROUND - 1, ROUND])
def test_a_resumed_run_migrates_at_its_round_and_keeps_each_phases_point(
    midrun: tuple[RunConfig, Path, dict[str, Any]], tmp_path: Path, after: int
) -> None:
    """Resumed before R the devices still migrate at R; after R the restored tree keeps the new plan's
    point (bandwidth shares included, which restoring a tree resets)."""
    cfg, out, summary = midrun
    crashed = tmp_path / "crashed"
    shutil.copytree(out, crashed)
    for r in range(after + 1, ROUNDS + 1):  # as if killed after round `after`'s checkpoint
        for suffix in (".pt", ".pt.sha256"):
            (crashed / "checkpoints" / f"ckpt-{r:06d}{suffix}").unlink()
    (crashed / "summary.json").unlink()
    resumed = run(cfg, crashed, resume=True)
    assert _metrics(crashed) == _metrics(out)
    drop = {"wall_s", "run_dir"}
    assert {k: v for k, v in resumed.items() if k not in drop} == {
        k: v for k, v in summary.items() if k not in drop and k != "plan"
    } | {"plan": resumed["plan"]}
    assert resumed["plan"]["phases"] == summary["plan"]["phases"]


# ------------------------------------------------------------------------------------- who may re-parent
def test_hierfavg_with_associate_round_exits_2_naming_why_and_the_fix(tmp_path: Path) -> None:
    sets = [x for s in [*ASSOCIATE, "algorithm.rounds=2"] for x in ("--set", s)]
    for command in (["plan", str(HIERFAVG)], ["run", str(HIERFAVG), "--quiet", "--out", str(tmp_path / "r")]):
        done = subprocess.run(
            [sys.executable, "-m", "edgelearn", *command, *sets], capture_output=True, text=True, cwd=ROOT
        )
        assert done.returncode == 2, done.stderr
        assert "hierfavg cannot move devices to another edge server mid-run" in done.stderr
        assert "remove plan.associate_round" in done.stderr and "Traceback" not in done.stderr


def test_a_plugin_opts_in_by_its_class_attribute_and_bad_rounds_are_config_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    example = ROOT / "examples" / "custom_algorithm" / "fedprox.yaml"
    cfg = load_config(example, ["topology.devices=8", "algorithm.rounds=3", "plan.objective=weighted",
                                "plan.associate=true", "plan.associate_round=2"])  # fmt: skip
    with pytest.raises(ConfigError, match="fedprox cannot move devices"):
        check_associate_round(cfg)
    monkeypatch.setattr(algorithm_class("fedprox"), "reparents_mid_run", True)
    check_associate_round(cfg)  # a plugin that can re-parent mid-run sets the attribute (and the method)
    late = ["algorithm.rounds=1", "plan.objective=weighted", "plan.associate=true", "plan.associate_round=2"]
    with pytest.raises(ConfigError, match="after the run's last round"):
        check_associate_round(load_config(example, late))
    with pytest.raises(ConfigError, match="`associate_round` needs `associate: true`"):
        load_config(example, ["plan.objective=weighted", "plan.associate_round=2"])
    assert algorithm_class("fedagg").reparents_mid_run and not algorithm_class("hierfavg").reparents_mid_run
