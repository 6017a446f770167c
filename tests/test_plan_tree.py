"""The tree planner (planning/tree): a round's profile read back from the ledger reproduces the round, every
plan is feasible and no worse than each baseline on its objective (hypothesis over random trees, hardware and
budgets), a brute-force search on a small tree agrees within 1 %, and a run at the planned operating point
records exactly the predicted energy and delay."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgelearn.errors import ConfigError
from edgelearn.planning.tree.plan import LEXICOGRAPHIC_RTOL, Budgets, plan_round
from edgelearn.planning.tree.synthetic import hierarchical_round
from edgelearn.run_config import load_config
from edgelearn.runner import build_context, run, tree_plan
from edgelearn.seeding import Seeds
from edgelearn.system import ChannelSpec, HardwareSpec, OperatingPoint, SystemModel, Topology
from edgelearn.system.costs import BITS_PER_BYTE, shannon_rate

ROOT = Path(__file__).resolve().parents[1]
HIERFAVG = ROOT / "configs" / "plan" / "hierfavg-digits.yaml"
FEDAGG = ROOT / "configs" / "plan" / "fedagg-digits.yaml"
TINY_TREE = ["topology.edges=2", "topology.devices_per_edge=4", "output.plots=false"]
OBJECTIVE_RTOL = 2 * LEXICOGRAPHIC_RTOL
"""A plan may give up this much of its objective (relative) in the second, lexicographic pass (plan.py)."""
MATCH_RTOL = 1e-6
"""Executed vs predicted energy and delay: both come from the same cost functions on the same events; the
issue's bound (float sums over the same terms in the same order are in fact bit-identical here)."""


def _system(edges: int, per_edge: int, seed: int, hardware: dict | None = None) -> SystemModel:
    return SystemModel.build(Topology.hierarchical(edges, per_edge), hardware, ChannelSpec(), Seeds(seed))


def _round(system: SystemModel, rng: np.random.Generator):  # noqa: ANN202 - a RoundProfile
    devices = len(system.topology.devices)
    return hierarchical_round(
        system,
        model_bytes=float(rng.uniform(1e4, 1e6)),
        device_flops=rng.uniform(1e7, 1e10, size=devices),
        edge_flops=float(rng.uniform(1e5, 1e8)),
        cloud_flops=float(rng.uniform(1e5, 1e8)),
    )


# ------------------------------------------------------------------------------------------------ profiles
def test_a_recorded_round_replays_to_the_ledger_and_its_graph_to_the_clock() -> None:
    cfg = load_config(HIERFAVG, [*TINY_TREE, "algorithm.rounds=1"])
    ctx = build_context(cfg)
    from edgelearn.algorithms.registry import make_algorithm
    from edgelearn.planning.tree.profile import RoundProfile

    algo = make_algorithm(ctx)
    algo.init()
    algo.run_round(1)
    profile = RoundProfile.from_ledger(ctx.system.ledger, 1, ctx.topology.num_nodes)
    recorded = ctx.system.ledger.round_totals(1)
    again = profile.replay(ctx.system, None)
    assert again["energy_j"] == recorded["energy_j"] and again["delay_s"] == pytest.approx(
        recorded["delay_s"]
    )
    graph = profile.graph()
    finish = graph.finish_times(ctx.system.ledger.events(1)["seconds"])
    assert finish.max() == pytest.approx(again["delay_s"], rel=1e-12)  # float sums of the same terms
    with pytest.raises(ConfigError, match="recorded no work"):
        RoundProfile.from_ledger(ctx.system.ledger, 7, ctx.topology.num_nodes)


# ---------------------------------------------------------------------------------- plans on random trees
@settings(max_examples=12, deadline=None)
@given(
    edges=st.integers(1, 4),
    per_edge=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    objective=st.sampled_from(["delay", "energy", "weighted"]),
    slack=st.floats(0.05, 0.95),
    edge_kind=st.sampled_from(["dvfs", "accelerator"]),
)
def test_every_plan_is_feasible_and_no_worse_than_each_feasible_baseline(
    edges: int, per_edge: int, seed: int, objective: str, slack: float, edge_kind: str
) -> None:
    rng = np.random.default_rng(seed)
    hardware = {
        "device": HardwareSpec(f_max_hz=(5e8, 2e9), p_max_w=(0.05, 0.2)),
        "edge": HardwareSpec(kind="accelerator", flops_per_s=1e12, power_w=100.0)
        if edge_kind == "accelerator"
        else HardwareSpec(f_max_hz=(2e9, 5e9)),
    }
    system = _system(edges, per_edge, seed, hardware)
    profile = _round(system, rng)
    full = profile.replay(system, None)
    from edgelearn.planning.tree.inner import price

    floor = price(profile.graph(), system, profile.round).min_energy_j()
    budgets = {
        "delay": Budgets("delay", energy_j=floor + slack * (full["energy_j"] - floor)),
        "energy": Budgets("energy", delay_s=full["delay_s"] * (1 + 2 * slack)),
        "weighted": Budgets("weighted", weight_j_per_s=float(rng.uniform(0.1, 100.0))),
    }[objective]
    plan = plan_round(system, profile, budgets)
    planned = plan.schemes["planned"]
    assert plan.feasible and budgets.feasible(plan.predicted["energy_j"], plan.predicted["delay_s"])
    for name, scheme in plan.schemes.items():
        if scheme["feasible"]:
            assert planned["objective"] <= scheme["objective"] * (1 + OBJECTIVE_RTOL), name
    # the operating point respects every limit (set_operating_point checks them) and replays as predicted
    system.set_operating_point(plan.point)
    assert profile.replay(system, plan.point)["energy_j"] == plan.predicted["energy_j"]


def test_infeasible_budgets_name_the_smallest_feasible_ones() -> None:
    system = _system(2, 3, 0)
    profile = _round(system, np.random.default_rng(0))
    full = profile.replay(system, None)
    with pytest.raises(ConfigError, match=r"round_delay_s=.* is below the round's delay at full clock"):
        plan_round(system, profile, Budgets("energy", delay_s=0.5 * full["delay_s"]))
    with pytest.raises(ConfigError, match=r"round_energy_j=1e-09 J is at or below the least energy"):
        plan_round(system, profile, Budgets("delay", energy_j=1e-9))


# --------------------------------------------------------------------------------------- brute force
def test_a_brute_force_search_on_a_small_tree_agrees_within_one_percent() -> None:
    """One edge (an accelerator), two DVFS devices, uplinks only: delay = max over devices of compute +
    upload, then the edge's fixed work. A grid over the bandwidth split and, per device, 60 x 60 (clock,
    power) points, combined through the energy budget, finds the best delay the planner must match."""
    hardware = {"edge": HardwareSpec(kind="accelerator", flops_per_s=1e12, power_w=50.0)}
    system = SystemModel.build(Topology.hierarchical(1, 2), hardware, ChannelSpec(), Seeds(3))
    topo = system.topology
    devices, edge = topo.devices, topo.edges[0]
    flops, nbytes = np.array([3e9, 1e9]), 2e6
    system.begin_round(1)
    system.compute(devices, flops, phase="train")
    system.transmit(devices, [edge, edge], nbytes, phase="upload")
    system.compute(edge, 1e9, phase="aggregate")
    system.end_round()
    from edgelearn.planning.tree.profile import RoundProfile

    profile = RoundProfile.from_ledger(system.ledger, 1, topo.num_nodes)
    full = profile.replay(system, None)
    budget = 0.4 * full["energy_j"]
    plan = plan_round(system, profile, Budgets("delay", energy_j=budget))
    grid = np.geomspace(1e-3, 1.0, 60)
    total_hz, fixed_j, edge_s = system.channel.spec.bandwidth_hz, 50.0 * 1e9 / 1e12, 1e9 / 1e12
    best = {"uniform": np.inf, "split": np.inf}
    for split in np.linspace(0.02, 0.98, 49):
        per_device = []
        for i, (d, share) in enumerate(zip(devices, (split, 1.0 - split))):
            f = grid[:, None] * system.f_max_hz[d]
            p = grid[None, :] * system.p_max_w[d]
            cycles = flops[i] * system.cycles_per_flop[d]
            rate = shannon_rate(
                share * total_hz, p, system.channel.gain(d, 1), system.channel.noise_psd_w_per_hz
            )
            seconds = cycles / f + BITS_PER_BYTE * nbytes / rate
            joules = system.kappa[d] * cycles * f**2 + p * BITS_PER_BYTE * nbytes / rate
            per_device.append((seconds.ravel(), joules.ravel()))
        (t0, e0), (t1, e1) = per_device
        order = np.argsort(e1)
        fastest_within = np.minimum.accumulate(t1[order])  # device 1's best time for each energy cap
        caps = np.searchsorted(e1[order], budget - fixed_j - e0, side="right")
        ok = caps > 0
        times = np.maximum(t0[ok], fastest_within[caps[ok] - 1]) + edge_s if ok.any() else np.array([np.inf])
        best["split"] = min(best["split"], float(times.min()))
        if abs(split - 0.5) < 1e-9:
            best["uniform"] = float(times.min())
    planned, uniform = plan.schemes["planned"]["delay_s"], plan.schemes["uniform_bandwidth"]["delay_s"]
    # the exact optima are at least as good as a grid, and a dense grid comes within 1 % of them
    assert planned <= best["split"] * (1 + 1e-9) and best["split"] <= planned * 1.01
    assert uniform <= best["uniform"] * (1 + 1e-9) and best["uniform"] <= uniform * 1.01
    assert planned <= uniform


# -------------------------------------------------------------------------------- executing the plan
def test_a_planned_run_records_the_predicted_energy_and_delay(tmp_path: Path) -> None:
    cfg = load_config(HIERFAVG, [*TINY_TREE, "algorithm.rounds=2"])
    summary = run(cfg, tmp_path / "run")
    plan = summary["plan"]
    assert plan["feasible"] and plan["objective"] == cfg.plan.objective
    measured = plan["measured"]
    assert measured["energy_j"] == pytest.approx(plan["energy_j"], rel=MATCH_RTOL)
    assert measured["delay_s"] == pytest.approx(plan["delay_s"], rel=MATCH_RTOL)
    # HierFAVG's rounds do the same work (no sampling, no faults): every round at the predicted cost
    assert measured["mean_energy_j"] == pytest.approx(plan["energy_j"], rel=MATCH_RTOL)
    assert plan["energy_j"] <= cfg.plan.round_energy_j * (1 + 1e-9)
    unplanned = plan["schemes"]["max_speed"]
    assert plan["energy_j"] < unplanned["energy_j"]


def test_fedagg_and_a_plugin_algorithm_are_planned_without_planner_changes() -> None:
    cfg = load_config(FEDAGG, [*TINY_TREE, "algorithm.autoencoder.epochs=1", "plan.round_delay_s=1.0"])
    plan = tree_plan(cfg)
    assert plan.feasible and plan.profile["events"] > 0
    example = ROOT / "examples" / "custom_algorithm" / "fedprox.yaml"
    cfg = load_config(
        example,
        ["topology.devices=8", "algorithm.rounds=1", "plan.objective=weighted", "plan.weight_j_per_s=5"],
    )
    plan = tree_plan(cfg)
    assert plan.schemes["planned"]["objective"] <= plan.schemes["max_speed"]["objective"]


def test_plan_cli_prints_json_and_refuses_bad_budgets_with_exit_2(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "edgelearn", "plan", str(HIERFAVG), "--set", "topology.edges=2",
            "--set", "topology.devices_per_edge=3"]  # fmt: skip
    out = subprocess.run([*base, "--json"], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert report["planner"] == "tree" and set(report["schemes"]) >= {"planned", "max_speed"}
    assert {"feasible", "objective", "energy_j", "delay_s", "settings"} <= set(report)
    bad = subprocess.run([*base, "--set", "plan.round_energy_j=1e-9"], capture_output=True, text=True)
    assert bad.returncode == 2 and "least energy any clocks and powers can reach" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_the_operating_point_is_checked_against_each_nodes_limits() -> None:
    system = _system(1, 2, 0)
    n = system.topology.num_nodes
    point = OperatingPoint.full_speed(n)
    point.freq_hz[system.topology.devices[0]] = 2 * system.f_max_hz[system.topology.devices[0]]
    with pytest.raises(ConfigError, match="freq_hz"):
        system.set_operating_point(point)
    point = OperatingPoint.full_speed(n)
    point.uplink_power_w[system.topology.devices[1]] = 10.0
    with pytest.raises(ConfigError, match="uplink_power_w"):
        system.set_operating_point(point)


def test_bandwidth_shares_are_checked_against_each_servers_total_and_reset_by_none() -> None:
    system = _system(2, 2, 0)
    channel, topo = system.channel, system.topology
    total = channel.spec.bandwidth_hz
    a, b = topo.children(topo.edges[0])
    shares = np.full(topo.num_nodes, np.nan)
    shares[[a, b]] = [0.75 * total, 0.25 * total]
    channel.set_bandwidth(shares)
    assert channel.bandwidth([a, b]).tolist() == [0.75 * total, 0.25 * total]
    other = topo.children(topo.edges[1])[0]
    assert channel.bandwidth(other) == total / 2  # the other server keeps equal shares
    shares[a] = 0.8 * total
    with pytest.raises(ValueError, match="more than the"):
        channel.set_bandwidth(shares)
    shares[topo.edges[0]] = 1.0
    with pytest.raises(ValueError, match="only wireless"):
        channel.set_bandwidth(shares)
    channel.set_bandwidth(None)
    assert channel.bandwidth(a) == total / 2
    twin = channel.clone()
    fresh = np.full(topo.num_nodes, np.nan)
    fresh[[a, b]] = [0.1 * total, 0.9 * total]
    twin.set_bandwidth(fresh)
    assert channel.bandwidth(a) == total / 2 and twin.bandwidth(a) == 0.1 * total


# ------------------------------------------------------------------------------ rounds and settings (outer)
OUTER = [
    *TINY_TREE,
    "algorithm.rounds=6",
    "plan.round_energy_j=null",
    "plan.total_energy_j=60",
    "plan.target_accuracy=0.6",
    "plan.choices={algorithm.kappa1: [2, 10], algorithm.kappa2: [1, 2]}",
]


def test_the_plan_chooses_rounds_and_settings_from_pilots_and_the_run_executes_them(tmp_path: Path) -> None:
    from edgelearn.runner.planned import choose_rounds

    cfg = load_config(HIERFAVG, OUTER)
    resolved, record = choose_rounds(cfg)
    assert record is not None and len(record["candidates"]) == 4
    for c in record["candidates"]:  # each needs the first pilot round that reaches the target
        hits = [r for r, a in enumerate(c["accuracy"], 1) if a >= 0.6]
        assert c["rounds"] == (hits[0] if hits else None)
    feasible = [c for c in record["candidates"] if c.get("feasible")]
    best = min(feasible, key=lambda c: c["total_delay_s"])
    assert record["chosen"] == {"rounds": best["rounds"], "settings": best["settings"]}
    assert resolved.algorithm.rounds == best["rounds"]
    assert resolved.algorithm.kappa1 == best["settings"]["algorithm.kappa1"]
    assert resolved.plan.round_energy_j == pytest.approx(60 / best["rounds"])
    summary = run(cfg, tmp_path / "run")
    assert summary["rounds"] == best["rounds"] and summary["plan"]["outer"]["chosen"] == record["chosen"]
    assert summary["final_accuracy"] >= 0.6  # the pilot's accuracy, reproduced by the same seeds
    assert summary["plan"]["measured"]["total_energy_j"] <= 60 * (1 + 1e-9)
    assert summary["plan"]["measured"]["total_delay_s"] == pytest.approx(
        best["total_delay_s"], rel=MATCH_RTOL
    )


def test_an_unreachable_target_and_bad_plan_keys_are_config_errors() -> None:
    from edgelearn.runner.planned import choose_rounds

    cfg = load_config(
        HIERFAVG, [*OUTER, "plan.target_accuracy=1.0", "plan.pilot_rounds=1", "plan.choices={}"]
    )
    with pytest.raises(ConfigError, match="no candidate reaches accuracy 1.0"):
        choose_rounds(cfg)
    with pytest.raises(ConfigError, match="`choices` needs `target_accuracy`"):
        load_config(HIERFAVG, ["plan.choices={algorithm.kappa1: [1]}"])
    with pytest.raises(ConfigError, match="at most one of `round_energy_j` and `total_energy_j`"):
        load_config(HIERFAVG, ["plan.total_energy_j=5"])
    with pytest.raises(ConfigError, match="algorithm.kapa1"):
        choose_rounds(load_config(HIERFAVG, [*OUTER, "plan.choices={algorithm.kapa1: [1]}"]))


def test_a_run_can_execute_a_baselines_point_on_the_same_budgets(tmp_path: Path) -> None:
    cfg = load_config(HIERFAVG, [*TINY_TREE, "algorithm.rounds=1", "plan.scheme=powers_only"])
    plan = run(cfg, tmp_path / "run")["plan"]
    assert plan["executed"] == "powers_only"
    row = plan["schemes"]["powers_only"]
    assert (plan["energy_j"], plan["delay_s"]) == (row["energy_j"], row["delay_s"])
    assert plan["measured"]["energy_j"] == pytest.approx(row["energy_j"], rel=MATCH_RTOL)
    assert plan["measured"]["delay_s"] == pytest.approx(row["delay_s"], rel=MATCH_RTOL)
    assert plan["schemes"]["planned"]["objective"] <= row["objective"] * (1 + OBJECTIVE_RTOL)


def test_one_pilot_planned_for_many_budgets_equals_each_plan_alone(tmp_path: Path) -> None:
    """``benchmarks/plan_budgets.py`` records the round once and plans each budget: every row is the plan
    ``tree_plan`` makes for that budget alone (same pilot, same solver), and a budget below the floor is a
    row that says so."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("plan_budgets", ROOT / "benchmarks" / "plan_budgets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "b.json"
    result = module.main(
        [str(HIERFAVG), "--values", "1e-6", "40", *(f"--set={s}" for s in TINY_TREE), "--json", str(out)]
    )
    assert json.loads(out.read_text())["rows"][1]["schemes"] == result["rows"][1]["schemes"]
    assert "error" in result["rows"][0] and "round_energy_j" in result["rows"][0]["error"]
    alone = tree_plan(load_config(HIERFAVG, [*TINY_TREE, "plan.round_energy_j=40"]))
    assert result["rows"][1]["schemes"]["planned"] == alone.schemes["planned"]


CLOSED_FORM_RTOL = 1e-4
"""The convex program against a closed form: cvxpy's solvers stop at ~1e-8 relative gaps and the planner
shrinks budgets by 1e-7 (allocation.BUDGET_MARGIN), so 1e-4 is loose for every kernel and solver."""


def test_closed_forms_cross_check_the_convex_program() -> None:
    """One device under one edge. Compute only (DVFS: energy kappa C f^2, time C / f): the least energy within
    T is E_full (t_full / T)^2, and the shortest round within E_full / 9 is 3 t_full. Transmit only (the
    downlink then the uplink, each p = a (2^(1/tau) - 1) over time c tau): the KKT conditions give each
    link's tau from one multiplier, a_i (1 - 2^(1/tau)(1 - ln 2 / tau)) = lambda, found by root finding so
    the times fill the budget; its energy is what the program must reach."""
    from scipy.optimize import brentq

    from edgelearn.planning.tree.inner import price

    system = SystemModel.build(Topology.hierarchical(1, 1), None, ChannelSpec(), Seeds(0))
    compute = hierarchical_round(system, model_bytes=0.0, device_flops=1e9, edge_flops=0.0, cloud_flops=0.0)
    full = compute.replay(system, None)
    energy = plan_round(system, compute, Budgets("energy", delay_s=2 * full["delay_s"]))
    assert energy.predicted["energy_j"] == pytest.approx(full["energy_j"] / 4, rel=CLOSED_FORM_RTOL)
    delay = plan_round(system, compute, Budgets("delay", energy_j=full["energy_j"] / 9))
    assert delay.predicted["delay_s"] == pytest.approx(3 * full["delay_s"], rel=CLOSED_FORM_RTOL)

    system = SystemModel.build(Topology.hierarchical(1, 1), None, ChannelSpec(), Seeds(0))
    radio = hierarchical_round(system, model_bytes=2e5, device_flops=0.0, edge_flops=0.0, cloud_flops=0.0)
    budget = 1.5 * radio.replay(system, None)["delay_s"]
    terms = price(radio.graph(), system, radio.round)
    a, c = terms.link_a, terms.link_c
    spare = budget - float(terms.fixed_s.sum())  # the wired edge-cloud hops take their fixed time

    def tau(lam: float, a_i: float) -> float:
        ln2 = np.log(2.0)
        return brentq(lambda t: a_i * (1 - 2 ** (1 / t) * (1 - ln2 / t)) - lam, 1e-3, 1e6)

    lam = brentq(lambda m: sum(ci * tau(m, ai) for ai, ci in zip(a, c)) - spare, 1e-12, 1e3)
    taus = np.array([tau(lam, ai) for ai in a])
    assert np.all(taus > terms.link_tau_min)  # no radio at p_max: the closed form is the optimum
    radios = float(np.sum(a * c * taus * (2 ** (1 / taus) - 1)))
    planned = plan_round(system, radio, Budgets("energy", delay_s=budget))
    # the radios' share alone (the wired hops' fixed energy would dilute a relative comparison)
    assert planned.predicted["energy_j"] - terms.fixed_j == pytest.approx(radios, rel=CLOSED_FORM_RTOL)
