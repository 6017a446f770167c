"""The example plugins (examples/custom_algorithm/: FedProx, FedAdam/FedYogi, SCAFFOLD), loaded the way a user
loads them, through a config's ``plugins:`` key: each update rule against numbers worked out by hand, equal
results on the serial, vmap and Ray executors, learning above chance, exact resume, the ledger's payloads,
and ``edgelearn run examples/custom_algorithm/config.yaml`` from the repository root."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from tiny import local_ray

from edgelearn.algorithms.registry import algorithm_class, make_algorithm
from edgelearn.run_config import RunConfig, load_config
from edgelearn.runner import build_context, run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom_algorithm"
ALGORITHMS = ("fedprox", "fedadam", "fedyogi", "scaffold")

TINY = [
    "topology.devices=10",
    "algorithm.rounds=3",
    "output.plots=false",
    "output.progress=false",
    "engine.torch_threads=1",
]
"""Each example config (digits, Dirichlet(0.5), its algorithm's settings) cut to 10 devices and 3 rounds."""


def _config(name: str, *overrides: str) -> RunConfig:
    """``examples/custom_algorithm/<name>.yaml`` with :data:`TINY`: its ``plugins:`` key loads the plugin."""
    return load_config(EXAMPLE / f"{name}.yaml", [*TINY, *overrides])


def _plugin(name: str) -> ModuleType:
    """The plugin module that registered algorithm ``name`` (loaded through its config)."""
    _config(name)
    return sys.modules[algorithm_class(name).__module__]


PUBLIC = {
    "edgelearn.plugins",
    "edgelearn.config",
    "edgelearn.algorithms.base",
    "edgelearn.algorithms.fedavg.algorithm",
    "edgelearn.algorithms.fedavg.config",
    "edgelearn.algorithms.kit.comm",
    "edgelearn.engine",
    "edgelearn.system",
}
"""The modules a plugin may import (docs/extending.md, "What a plugin may use")."""


def test_the_plugins_import_only_the_public_api() -> None:
    for path in sorted(EXAMPLE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                if name.split(".")[0] == "edgelearn":
                    assert name in PUBLIC, f"{path.name} imports {name}, which is not public API"


# ------------------------------------------------------------------------------------ update rules by hand


def test_the_configs_load_the_plugins_from_files_next_to_them() -> None:
    for name in ALGORITHMS:
        cfg = _config(name)
        assert cfg.algorithm.name == name
        assert [Path(p).parent for p in cfg.plugins] == [EXAMPLE]  # recorded as absolute paths
        assert sys.modules[algorithm_class(name).__module__].__name__.startswith("edgelearn_plugin_")
    switched = load_config(EXAMPLE / "config.yaml", [*TINY, "algorithm.name=scaffold"])
    assert switched.algorithm.name == "scaffold" and switched.algorithm.global_lr == 1.0  # mu dropped


def test_fedprox_hands_mu_to_the_local_objective() -> None:
    algo = make_algorithm(build_context(_config("fedprox", "algorithm.mu=0.25", "executor=serial")))
    spec = algo.local_training(1)
    assert spec.prox_mu == 0.25 and spec.lr == 0.1 and spec.epochs == 3 and spec.batch_size == 16


def test_fedprox_with_mu_zero_is_fedavg_bit_for_bit() -> None:
    states = []
    for override in ("algorithm.mu=0", "algorithm.name=fedavg"):  # the same config, FedAvg switched in
        algo = make_algorithm(build_context(_config("fedprox", "executor=serial", override)))
        algo.init()
        algo.run_round(1)
        states.append(algo.global_state)
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[1])


def test_fedadam_and_fedyogi_server_steps_by_hand() -> None:
    step = _plugin("fedadam").fedopt_step
    # Two rounds on a 2-parameter model, eta 0.1, b1 0.9, b2 0.99, tau 0.01: x0 = (0, 1); the devices'
    # average is (0.5, 0) in round 1 and (0.5, 1) in round 2. m_-1 = 0, v_-1 = tau^2 = 1e-4.
    # Round 1: Delta = (0.5, -1), Delta^2 = (0.25, 1), m = 0.1 Delta = (0.05, -0.1)
    #   Adam: v = 0.99e-4 + 0.01 Delta^2 = (0.002599, 0.010099), sqrt(v) + tau = (0.0609804, 0.1104938)
    #   Yogi: v = 1e-4 - 0.01 Delta^2 sign(1e-4 - Delta^2) = 1e-4 + 0.01 Delta^2 = (0.0026, 0.0101),
    #         sqrt(v) + tau = (0.0609902, 0.1104988)
    #   x1 = x0 + 0.1 m / (sqrt(v) + tau): Adam (0.0819936, 0.9094972), Yogi (0.0819804, 0.9095012)
    # Round 2: Delta = (0.5, 1) - x1
    #   Adam: Delta = (0.4180064, 0.0905028), Delta^2 = (0.1747294, 0.0081908)
    #         m = 0.9 m + 0.1 Delta = (0.0868006, -0.0809497)
    #         v = 0.99 v + 0.01 Delta^2 = (0.0043203, 0.0100799)
    #         x2 = x1 + 0.1 m / (sqrt(v) + tau) = (0.1966136, 0.8361723)
    #   Yogi: Delta = (0.4180196, 0.0904988), Delta^2 = (0.1747404, 0.0081900), m = (0.0868020, -0.0809501)
    #         v < Delta^2 in coordinate 1 (v grows by 0.01 Delta^2), v > Delta^2 in coordinate 2 (v shrinks by
    #         0.01 Delta^2, where Adam's would shrink by 0.01 (v - Delta^2)): v = (0.0043474, 0.0100181)
    #         x2 = (0.1962915, 0.8359707)
    x0 = {"w": torch.tensor([0.0, 1.0], dtype=torch.float64)}
    mean1 = {"w": torch.tensor([0.5, 0.0], dtype=torch.float64)}
    mean2 = {"w": torch.tensor([0.5, 1.0], dtype=torch.float64)}
    hyper = {"lr": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 0.01}
    want = {
        "adam": (
            [0.0819936, 0.9094972],
            [0.0868006, -0.0809497],
            [0.0043203, 0.0100799],
            [0.1966136, 0.8361723],
        ),
        "yogi": (
            [0.0819804, 0.9095012],
            [0.0868020, -0.0809501],
            [0.0043474, 0.0100181],
            [0.1962915, 0.8359707],
        ),
    }
    for rule, (x1_want, m2_want, v2_want, x2_want) in want.items():
        m, v = {"w": torch.zeros(2, dtype=torch.float64)}, {"w": torch.full((2,), 1e-4, dtype=torch.float64)}
        x1, m, v = step(x0, mean1, m, v, rule=rule, **hyper)
        assert x1["w"].tolist() == pytest.approx(x1_want, abs=1e-7), rule
        x2, m, v = step(x1, mean2, m, v, rule=rule, **hyper)
        assert m["w"].tolist() == pytest.approx(m2_want, abs=1e-7), rule
        assert v["w"].tolist() == pytest.approx(v2_want, abs=1e-7), rule
        assert x2["w"].tolist() == pytest.approx(x2_want, abs=1e-7), rule
    assert x0["w"].tolist() == [0.0, 1.0]  # inputs untouched


def test_fedopt_leaves_integer_buffers_to_the_average() -> None:
    step = _plugin("fedadam").fedopt_step
    prev = {"w": torch.zeros(1), "n": torch.tensor(3)}
    avg = {"w": torch.ones(1), "n": torch.tensor(7)}
    x, m, v = step(prev, avg, {"w": torch.zeros(1)}, {"w": torch.zeros(1)}, rule="adam", lr=1.0, beta1=0.0,
                   beta2=0.0, tau=1.0)  # fmt: skip
    assert int(x["n"]) == 7 and set(m) == set(v) == {"w"}
    assert float(x["w"]) == pytest.approx(0.5)  # m = 1, v = 1: x = 0 + 1 * 1 / (1 + 1)


def test_scaffold_control_update_by_hand() -> None:
    control_update = _plugin("scaffold").control_update
    # One scalar parameter, eta_l 0.5, x = 1, c = 0.2. Client A: y = 0.4 after K = 3 steps, c_A = 0.1;
    # client B: y = 1.3 after K = 2 steps, c_B = -0.3 (option II: c_i+ = c_i - c + (x - y) / (K eta_l)):
    #   c_A+ = 0.1 - 0.2 + 0.6 / 1.5 = 0.3;   c_B+ = -0.3 - 0.2 + (-0.3) / 1.0 = -0.8
    # With N = 4 devices (weights 1/4): c+ = 0.2 + (0.3 - 0.1 + (-0.8 + 0.3)) / 4 = 0.2 - 0.075 = 0.125.
    x = {"w": torch.tensor([1.0])}
    c = {"w": torch.tensor([0.2])}
    clients = [
        ({"w": torch.tensor([0.4])}, {"w": torch.tensor([0.1])}, 3, 0.25),
        ({"w": torch.tensor([1.3])}, {"w": torch.tensor([-0.3])}, 2, 0.25),
    ]
    new_clients, new_c = control_update(x, c, clients, 0.5)
    assert [float(n["w"]) for n in new_clients] == pytest.approx([0.3, -0.8])
    assert float(new_c["w"]) == pytest.approx(0.125)
    assert float(c["w"]) == pytest.approx(0.2)  # inputs untouched


def test_scaffold_round_one_is_fedavg_and_its_payloads_double() -> None:
    """Controls start at zero, so round 1's shift is zero and its model FedAvg's; each device then sends (and
    receives) a model and a control variate: twice FedAvg's bytes, with the same 9,610 float32 parameters."""
    fedavg = make_algorithm(build_context(_config("scaffold", "executor=serial", "algorithm.name=fedavg")))
    scaffold = make_algorithm(build_context(_config("scaffold", "executor=serial")))
    for algo in (fedavg, scaffold):
        algo.init()
        algo.run_round(1)
    for k, v in fedavg.global_state.items():
        torch.testing.assert_close(scaffold.global_state[k], v, atol=1e-7, rtol=0)  # x + 1 * (avg - x)
    assert scaffold.upload_bytes() == 2 * fedavg.upload_bytes() == 2 * 4 * 9610
    a, b = fedavg.ctx.system.ledger.totals(), scaffold.ctx.system.ledger.totals()
    assert b["bytes_up"] == 2 * a["bytes_up"] and b["bytes_down"] == 2 * a["bytes_down"]
    assert b["by_phase"]["aggregate"]["flops"] == 2 * a["by_phase"]["aggregate"]["flops"]
    assert len(scaffold.client_controls) == 10 and float(scaffold.control["net.1.weight"].abs().sum()) > 0
    # Round 2: every device now has c_i, and the shift c - c_i steers training away from FedAvg's.
    shift = scaffold.cohort_options(scaffold.eligible, 2)["grad_shift"]
    assert len(shift) == 10 and all(float(s["net.3.bias"].abs().sum()) > 0 for s in shift)


def test_scaffold_uniform_weighting_gives_every_device_the_same_share() -> None:
    algo = make_algorithm(
        build_context(_config("scaffold", "executor=serial", "algorithm.weighting=uniform"))
    )
    algo.init()
    assert set(algo.share.values()) == {0.1}
    assert algo.cohort_options(algo.eligible, 1)["weights"].tolist() == [1.0] * 10
    sized = make_algorithm(build_context(_config("scaffold", "executor=serial")))
    sized.init()
    sizes = sized.ctx.data_sizes(sized.eligible)
    assert list(sized.share.values()) == pytest.approx((sizes / sizes.sum()).tolist())


# ------------------------------------------------------------------------------------ executors

RAY_REL = 1e-6
"""Ray's workers run the serial executor on the same cohorts and sum in float64 per chunk: metrics agree to
float32 rounding (test_engine_ray.py's runner comparison uses the same bound)."""
VMAP_REL = 1e-5
"""vmap trains the same batches with batched float32 matmuls, whose sums are ordered differently. Largest
relative drift of any loss over these 3 rounds, measured (2-core AVX-512 EPYC, one thread): FedProx 3.3e-8,
FedAdam 2.2e-7, FedYogi 3.6e-8, SCAFFOLD 1.3e-7 (FedAvg 6.6e-8); under ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2 at most 9.8e-8 (FedProx). The bound is test_engine_vmap.py's end-to-end one, 45x the
largest; FedAdam/FedYogi's step m / (sqrt(v) + tau) and SCAFFOLD's control variates
(x - y) / (K eta_l) are smooth in the models, so they carry the drift over without amplifying it."""
ACC_ABS = 2 / 359
"""Accuracy: a drift of 1e-7 in the logits can flip a test image whose two best classes nearly tie; two of the
359 digits test images are allowed (none flipped in the measurements above)."""
ABOVE_CHANCE = 0.6
"""Accuracy after 3 rounds on 10 devices (chance 0.1). Measured over seeds 0-4 (serial): FedProx 0.936, 0.886,
0.928, 0.936, 0.889; FedAdam 0.936, 0.813, 0.916, 0.936, 0.852; FedYogi the same to 3 digits (their second
moments part only once v exceeds Delta^2); SCAFFOLD 0.947, 0.925, 0.936, 0.950, 0.911. Far below the
worst."""
CLUSTER_CPUS = 2


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """One local Ray cluster for the module: the runs' executors join it instead of starting their own."""
    with local_ray(CLUSTER_CPUS):
        yield


def _metrics(out: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("wall_s", "wall_s_by_part")} for r in rows]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every algorithm's metrics under the serial and vmap executors (Ray runs in its own test)."""
    base = tmp_path_factory.mktemp("runs")
    out = {}
    for name in ALGORITHMS:
        for executor in ("serial", "vmap"):
            summary = run(_config(name, f"executor={executor}"), base / f"{name}-{executor}")
            assert summary["executor"] == executor
            out[name, executor] = _metrics(base / f"{name}-{executor}")
    return out


def _assert_close(got: list[dict[str, Any]], want: list[dict[str, Any]], rel: float) -> None:
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for k, v in w.items():
            if isinstance(v, float) and k == "accuracy":
                assert g[k] == pytest.approx(v, abs=ACC_ABS, rel=0), k
            elif isinstance(v, float):
                assert g[k] == pytest.approx(v, rel=rel, abs=1e-9), k
            else:
                assert g[k] == v, k


@pytest.mark.parametrize("name", ALGORITHMS)
def test_vmap_reproduces_serial(runs: dict[tuple[str, str], list[dict[str, Any]]], name: str) -> None:
    _assert_close(runs[name, "vmap"], runs[name, "serial"], VMAP_REL)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_ray_reproduces_serial(
    runs: dict[tuple[str, str], list[dict[str, Any]]], ray_cluster: None, tmp_path: Path, name: str
) -> None:
    summary = run(_config(name, "executor=ray", f"engine.ray_workers={CLUSTER_CPUS}"), tmp_path)
    assert summary["executor"] == "ray"
    _assert_close(_metrics(tmp_path), runs[name, "serial"], RAY_REL)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_learns_above_chance(runs: dict[tuple[str, str], list[dict[str, Any]]], name: str) -> None:
    assert runs[name, "serial"][-1]["accuracy"] >= ABOVE_CHANCE


def test_the_algorithms_differ_from_each_other(runs: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
    """Each plugin changes training (no hook silently ignored): round-1 test losses all differ."""
    losses = [runs[name, "serial"][0]["loss"] for name in ALGORITHMS]
    assert len(set(losses)) == len(losses)


# ------------------------------------------------------------------------------------ resume and the CLI


@pytest.mark.parametrize("name", ["fedadam", "scaffold"])
def test_resume_restores_optimizer_moments_and_control_variates(tmp_path: Path, name: str) -> None:
    """Round 3 re-run from round 2's checkpoint equals the uninterrupted run: FedAdam's m and v, SCAFFOLD's c
    and every c_i are in the checkpoint (rebuilding them as at the start would change round 3)."""
    cfg = _config(name, "executor=serial", "output.checkpoint_every=1", "output.checkpoint_keep=2")
    ref = tmp_path / "ref"
    run(cfg, ref)
    resumed = tmp_path / "resumed"
    run(cfg, resumed)
    for suffix in (".pt", ".pt.sha256"):  # as if killed after round 2's checkpoint
        (resumed / "checkpoints" / f"ckpt-000003{suffix}").unlink()
    run(cfg, resumed, resume=True)
    assert _metrics(resumed) == _metrics(ref)

    def summary(out: Path) -> dict[str, Any]:
        return {k: v for k, v in json.loads((out / "summary.json").read_text()).items() if k != "wall_s"}

    assert summary(resumed) == summary(ref)


def test_cli_runs_the_example_config_from_the_repository_root(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [sys.executable, "-m", "edgelearn", "run", "examples/custom_algorithm/config.yaml", "--quiet"]
    args += ["--set", "algorithm.rounds=2", "--set", "output.plots=false", "--out", str(out)]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algorithm"] == "fedprox" and summary["rounds"] == 2
    assert summary["final_accuracy"] > 0.1
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgelearn",
            "list",
            "algorithms",
            "--plugin",
            "examples/custom_algorithm/fedopt.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert listed.returncode == 0, listed.stderr
    shown = listed.stdout + listed.stderr  # the console may write to either
    assert "fedadam" in shown and "fedyogi" in shown and "Reddi" in shown


def test_a_bad_plugin_setting_names_the_key() -> None:
    from edgelearn.errors import ConfigError

    with pytest.raises(ConfigError, match=r"algorithm\.tau") as info:
        _config("fedadam", "algorithm.tau=0")
    assert "greater than 0" in str(info.value)
