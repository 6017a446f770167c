"""A run imports what it uses: a FedAvg run on digits loads no planner, Ray, plotting, compile stack or SciPy.

The run goes through the real CLI in a fresh interpreter (the test process has imported everything already)
and reports ``sys.modules`` at exit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny import python_stdout

from edgelearn.algorithms import registry
from edgelearn.algorithms.fedavg.algorithm import FedAvg
from edgelearn.data.builtin import digits_arrays
from edgelearn.errors import ConfigError

ALGORITHM_NAMES = ("fedavg", "hierfavg", "two_stage", "fedagg", "fedgkt", "feddkc", "demlearn")
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fedavg-digits.yaml"

NOT_IMPORTED = (
    "cvxpy",  # two-stage's planner (edgelearn.planning) only
    "edgelearn.planning",
    # other algorithms: a config imports every algorithm's config.py (pydantic only), never its algorithm
    "edgelearn.algorithms.two_stage.algorithm",
    "edgelearn.algorithms.fedagg.algorithm",
    "edgelearn.algorithms.fedagg.bridge",
    "edgelearn.algorithms.fedgkt.algorithm",
    "edgelearn.algorithms.feddkc.algorithm",
    "edgelearn.algorithms.demlearn.algorithm",
    "edgelearn.algorithms.hierfavg.algorithm",
    "edgelearn.algorithms.kit.distill",
    "edgelearn.commands",  # bench, sweep, demo, plan, pretrain-autoencoder: the CLI imports them lazily
    "ray",  # the Ray executor only
    "matplotlib",  # plots only (output.plots=false here)
    "torch._dynamo",  # FlopCounterMode, torch.func.grad and torch.optim import it; runs use none of them
    "torch.utils.flop_counter",  # the FLOP reference; runs count analytically
    "sympy",  # torch's symbolic shapes: imported by F.cross_entropy's decomposition under vmap
    "scipy",  # SciPy as a whole: scikit-learn, cvxpy and DemLearn's clustering
    "scipy.stats",
    "sklearn",  # digits come from the user cache after the first load
)
"""Modules a FedAvg run on cached digits must not import. What it does import beyond torch and numpy: pydantic
and PyYAML (config), typer and rich (CLI, progress and tables)."""

PROBE = """
import json, sys
from edgelearn.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    print(json.dumps(sorted(m for m in sys.modules)))
"""


def _run_modules(tmp_path: Path, *overrides: str) -> set[str]:
    digits_arrays()  # fill the (per-session, see conftest) dataset cache, as any earlier run would have
    args = [
        "run",
        str(CONFIG),
        "--quiet",
        "--out",
        str(tmp_path / "run"),
        "--set",
        "algorithm.rounds=2",
        "--set",
        "algorithm.local.epochs=1",
        "--set",
        "topology.devices=20",
    ]
    for item in overrides:
        args += ["--set", item]
    out = python_stdout(PROBE, *args)
    assert (tmp_path / "run" / "summary.json").is_file()
    return set(json.loads(out.strip().splitlines()[-1]))


def test_a_fedavg_run_imports_only_what_it_uses(tmp_path: Path) -> None:
    modules = _run_modules(tmp_path, "output.plots=false")
    assert "edgelearn.algorithms.fedavg.algorithm" in modules and "torch" in modules
    assert "edgelearn.engine.vmap" in modules  # the auto executor picked vmap for this MLP cohort
    assert sorted(m for m in NOT_IMPORTED if m in modules) == []


def test_plots_import_matplotlib_when_on(tmp_path: Path) -> None:
    modules = _run_modules(tmp_path, "output.plots=true")
    assert "matplotlib" in modules
    assert sorted(m for m in NOT_IMPORTED if m in modules and not m.startswith("matplotlib")) == []


def test_config_and_registry_import_no_algorithm() -> None:
    """The run config imports every algorithm's config.py but no algorithm, and no torch."""
    code = (
        "import json, sys\n"
        "import edgelearn.run_config, edgelearn.algorithms.registry as r\n"
        "print(json.dumps(sorted(sys.modules)))\n"
        "r.algorithm_class('hierfavg')\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    before, after = python_stdout(code).strip().splitlines()
    algorithm_modules = {f"edgelearn.algorithms.{name}.algorithm" for name in ALGORITHM_NAMES}
    config_modules = {f"edgelearn.algorithms.{name}.config" for name in ALGORITHM_NAMES}
    assert not algorithm_modules & set(json.loads(before))
    assert config_modules <= set(json.loads(before)) and "torch" not in json.loads(before)
    assert set(json.loads(after)) & algorithm_modules == {"edgelearn.algorithms.hierfavg.algorithm"}


def test_registry_resolves_lazily_and_accepts_classes_and_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "ALGORITHMS", dict(registry.ALGORITHMS))
    assert registry.algorithm_class("fedavg") is FedAvg
    assert registry.ALGORITHMS["fedavg"] is FedAvg  # the reference was replaced by the class
    registry.register("mine", FedAvg)
    registry.register("mine_lazy", "edgelearn.algorithms.fedavg.algorithm:FedAvg")
    assert registry.algorithm_class("mine") is FedAvg
    assert registry.algorithm_class("mine_lazy") is FedAvg
    with pytest.raises(ConfigError, match="'nope' is not a known algorithm"):
        registry.algorithm_class("nope")
    registry.register("broken", "edgelearn.algorithms.fedavg.algorithm:NoSuchClass")
    with pytest.raises(ConfigError, match="could not be loaded"):
        registry.algorithm_class("broken")
    with pytest.raises(ConfigError, match="package.module:ClassName"):
        registry.register("bad", "no_colon_here")


def test_every_registered_algorithm_resolves_to_its_name() -> None:
    for name in list(registry.ALGORITHMS):
        assert registry.algorithm_class(name).name == name
