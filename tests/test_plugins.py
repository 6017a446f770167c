"""The public plugin API (edgelearn.plugins): a user's algorithm, model, dataset and partitioner registered
from outside the package, loaded by a config's ``plugins:`` key or an installed entry point, listed by
``edgelearn list``, and validated with errors that name the problem."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from edgelearn import extensions, plugins
from edgelearn.algorithms.fedavg.config import FedAvgConfig
from edgelearn.config import Section
from edgelearn.errors import ConfigError, DataError
from edgelearn.run_config import algorithm_names, build_config, load_config
from edgelearn.runner import build_context, run

PLUGIN_SOURCE = '''
"""A user's plugin: an algorithm (FedAvg with a renamed config), a model, a dataset and a partitioner."""
from typing import Literal

import numpy as np
import torch
from torch import nn

from edgelearn.algorithms.fedavg.algorithm import FedAvg
from edgelearn.algorithms.fedavg.config import FedAvgConfig
from edgelearn.data.dataset import make_bundle
from edgelearn.plugins import register_algorithm, register_dataset, register_model, register_partitioner


class EchoConfig(FedAvgConfig):
    """Echo: FedAvg under another name (a plugin test)."""

    name: Literal["echo_{tag}"] = "echo_{tag}"


class Echo(FedAvg):
    name = "echo_{tag}"


def tiny_linear(input_shape, num_classes, bias=True):
    """One linear layer on the flattened input."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), num_classes, bias=bias))


def blobs(data_dir, seed, n=120, classes=3):
    """Two-dimensional Gaussian blobs, one per class."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = (rng.normal(size=(n, 2)) + 4.0 * np.stack([np.cos(y), np.sin(y)], 1)).astype(np.float32)
    return make_bundle(
        "blobs", x[:90], y[:90], x[90:], y[90:], num_classes=classes, classes=None, source="blobs"
    )


def by_label(labels, num_devices, rng, spread=1):
    """Device k gets the samples whose label is k modulo the device count."""
    return [np.flatnonzero(labels % num_devices == k) for k in range(num_devices)]


register_algorithm("echo_{tag}", Echo, EchoConfig)
register_model("tiny_linear_{tag}", tiny_linear, bias=True)
register_dataset("blobs_{tag}", blobs, options=("n", "classes"), uses_data_dir=False, summary="2-D blobs")
register_partitioner("by_label_{tag}", by_label, options=("spread",))
'''


def write_plugin(folder: Path, tag: str) -> Path:
    """A plugin file registering names suffixed with ``tag`` (each test its own, registries are global)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"plugin_{tag}.py"
    path.write_text(PLUGIN_SOURCE.replace("{tag}", tag))
    return path


def config_using(folder: Path, tag: str) -> Path:
    cfg = folder / "run.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""\
            plugins: [plugins/plugin_{tag}.py]
            device: cpu
            topology: {{devices: 3}}
            data: {{dataset: blobs_{tag}, options: {{n: 150}}}}
            partition: {{method: by_label_{tag}, options: {{spread: 2}}}}
            model: {{name: tiny_linear_{tag}}}
            algorithm: {{name: echo_{tag}, rounds: 3, local: {{lr: 0.1, batch_size: 8, epochs: 2}}}}
            output: {{plots: false}}
            """
        )
    )
    return cfg


def test_a_config_loads_its_plugins_relative_to_itself_and_runs_them(tmp_path: Path) -> None:
    write_plugin(tmp_path / "plugins", "a")
    cfg = load_config(config_using(tmp_path, "a"))
    assert cfg.plugins == [str((tmp_path / "plugins/plugin_a.py").resolve())]  # recorded absolute
    assert "echo_a" in algorithm_names() and cfg.algorithm.name == "echo_a"
    ctx = build_context(cfg)
    # the plugin's partitioner decided the split, the plugin's loader the data (90 training samples)
    assert [sorted(set(ctx.bundle.train.y[p] % 3)) for p in ctx.parts] == [[0], [1], [2]]
    summary = run(cfg, tmp_path / "out", progress=False)
    assert summary["algorithm"] == "echo_a" and summary["final_accuracy"] > 0.5  # blobs are separable
    # the saved config names the plugin by absolute path, so resuming from the run folder works anywhere
    saved = load_config(tmp_path / "out/config.yaml")
    assert saved.model_dump(exclude={"output"}) == cfg.model_dump(exclude={"output"})


def test_the_cli_runs_and_lists_a_plugin_from_a_config(tmp_path: Path) -> None:
    write_plugin(tmp_path / "plugins", "b")
    cfg = config_using(tmp_path, "b")
    cli = [sys.executable, "-m", "edgelearn"]
    done = subprocess.run(
        [*cli, "run", str(cfg), "--out", str(tmp_path / "r")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "r/summary.json").read_text())["algorithm"] == "echo_b"
    listed = subprocess.run(
        [*cli, "list", "algorithms", "--plugin", str(tmp_path / "plugins/plugin_b.py")],
        capture_output=True,
        text=True,
    )
    assert (
        listed.returncode == 0
        and "echo_b" in listed.stdout
        and "Echo: FedAvg under another name" in listed.stdout
    )


def test_registration_refuses_duplicates_and_bad_config_classes() -> None:
    class GoodConfig(Section):
        name: Literal["good_c"] = "good_c"

    class WrongName(Section):
        name: Literal["other"] = "other"

    plugins.register_algorithm("good_c", "edgelearn.algorithms.fedavg.algorithm:FedAvg", GoodConfig)
    with pytest.raises(ConfigError, match="'good_c' is already registered"):
        plugins.register_algorithm("good_c", "edgelearn.algorithms.fedavg.algorithm:FedAvg", GoodConfig)
    plugins.register_algorithm(
        "good_c", "edgelearn.algorithms.fedavg.algorithm:FedAvg", GoodConfig, replace=True
    )
    with pytest.raises(ConfigError, match=r"declare WrongName.name as `name: Literal\['bad_c'\]"):
        plugins.register_algorithm("bad_c", "edgelearn.algorithms.fedavg.algorithm:FedAvg", WrongName)
    with pytest.raises(ConfigError, match="must be a subclass of edgelearn.config.Section"):
        plugins.register_algorithm("bad_c", "edgelearn.algorithms.fedavg.algorithm:FedAvg", dict)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="fedavg' is already registered"):
        plugins.register_algorithm("fedavg", "edgelearn.algorithms.fedavg.algorithm:FedAvg", FedAvgConfig)
    with pytest.raises(ConfigError, match="model 'mlp' is already registered"):
        plugins.register_model("mlp", lambda shape, classes: None)
    with pytest.raises(ConfigError, match="dataset 'digits' is already registered"):
        plugins.register_dataset("digits", lambda data_dir, seed: None)
    with pytest.raises(ConfigError, match="must be an identifier"):
        plugins.register_partitioner("no spaces", lambda y, n, rng: [])
    assert "bad_c" not in algorithm_names()  # a refused registration leaves nothing behind


def test_bad_plugin_entries_name_the_key(tmp_path: Path) -> None:
    cases = [
        (
            {"plugins": ["no_such_module_xyz"]},
            "`plugins`: plugin module 'no_such_module_xyz' cannot be found",
        ),
        ({"plugins": [str(tmp_path / "missing.py")]}, "`plugins`: plugin file .*missing.py does not exist"),
        ({"plugins": "one.py"}, "`plugins` must be a list"),
        ({"plugins": ["/"]}, "`plugins`: plugins: entry '/' looks like a path but is not a .py file"),
        ({"plugins": ["."]}, "`plugins`: plugins: entry '.' is neither a module name"),
    ]
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    cases.append(({"plugins": [str(broken)]}, "failed to import: RuntimeError: boom"))
    for data, match in cases:
        with pytest.raises(ConfigError, match=match):
            build_config(data)


def test_a_plugin_partitioner_that_overlaps_is_refused(tmp_path: Path) -> None:
    plugins.register_partitioner("overlap_p", lambda y, n, rng: [np.arange(5)] * n)
    with pytest.raises(DataError, match="put a sample on two devices"):
        build_context(build_config({}, ["partition.method=overlap_p", "topology.devices=2", "device=cpu"]))
    typo = build_config({}, ["partition.method=nope_p", "device=cpu"])  # names are the data layer's to check
    with pytest.raises(DataError, match="partition.method 'nope_p' is not a registered partitioner"):
        build_context(typo)
    with pytest.raises(
        DataError, match=r"(?s)data.dataset 'imagenet' is not a registered dataset.*digits, synthetic"
    ):
        build_context(build_config({}, ["data.dataset=imagenet", "device=cpu"]))


def test_installed_entry_points_are_loaded_on_a_miss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A package declaring ``[project.entry-points."edgelearn.plugins"]``: a dist-info folder on sys.path."""
    site = tmp_path / "site"
    write_plugin(site, "ep").rename(site / "ep_plugin_mod.py")
    dist = site / "ep_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[edgelearn.plugins]\nep = ep_plugin_mod\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(extensions, "_entry_points_loaded", False)
    cfg = build_config(
        {}, ["algorithm.name=echo_ep", "topology.devices=3"]
    )  # unknown until entry points load
    assert cfg.algorithm.name == "echo_ep"
