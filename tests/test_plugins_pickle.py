"""A plugin loaded from a ``.py`` file travels to other processes by value: its synthetic module name
(``edgelearn_plugin_<hash>``) is importable nowhere else, so a Ray worker must receive its code."""

from __future__ import annotations

import functools
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import local_ray

from edgelearn.engine import ClientData, Cohort, LocalSpec, SerialExecutor
from edgelearn.models import build_model
from edgelearn.plugins import load_plugin, load_plugins

PLUGIN = textwrap.dedent(
    '''
    """A plugin file defining a loss (a function) and a scaled loss (a dataclass instance)."""
    from dataclasses import dataclass

    import torch.nn.functional as F


    def doubled_loss(apply, batch):
        return 2.0 * F.cross_entropy(apply(batch["x"]), batch["y"], reduction="none")


    @dataclass(frozen=True)
    class ScaledLoss:
        scale: float

        def __call__(self, apply, batch):
            return self.scale * F.cross_entropy(apply(batch["x"]), batch["y"], reduction="none")
    '''
)


def _load(tmp_path: Path) -> object:
    (tmp_path / "losses.py").write_text(PLUGIN)
    (entry,) = load_plugins(["losses.py"], tmp_path)
    return sys.modules[load_plugin(entry)]  # loaded once: this returns its module name


def test_a_file_plugins_functions_unpickle_in_a_process_without_the_file(tmp_path: Path) -> None:
    cloudpickle = pytest.importorskip("cloudpickle")
    module = _load(tmp_path)
    assert module.__name__.startswith("edgelearn_plugin_")
    probe = (
        "import pickle, sys, torch\n"
        "fn, scaled = pickle.loads(sys.stdin.buffer.read())\n"
        "batch = {'x': torch.zeros(2, 3), 'y': torch.tensor([0, 1])}\n"
        "print(float(fn(lambda x: x, batch).sum()), float(scaled(lambda x: x, batch).sum()))\n"
    )

    def elsewhere(payload: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-c", probe], input=payload, capture_output=True, cwd=tmp_path, timeout=120
        )

    objects = [module.doubled_loss, module.ScaledLoss(3.0)]
    out = elsewhere(cloudpickle.dumps(objects))
    assert out.returncode == 0, out.stderr.decode()
    ln3 = float(np.log(3.0))  # uniform logits over 3 classes: cross-entropy log 3 per sample
    got = [float(v) for v in out.stdout.split()]
    assert got == pytest.approx([2 * 2 * ln3, 3 * 2 * ln3], rel=1e-6)
    by_reference = elsewhere(pickle.dumps(objects))  # what cloudpickle did before: the module is needed
    assert by_reference.returncode != 0 and b"No module named 'edgelearn_plugin_" in by_reference.stderr


MODEL_FN = functools.partial(build_model, "mlp", (4,), 2, hidden=[6])
"""Importable by the workers (edgelearn's own function): only the loss comes from the plugin file."""


def test_ray_workers_train_with_a_file_plugins_loss(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from edgelearn.engine.ray_executor import RayExecutor

    module = _load(tmp_path)
    g = torch.Generator().manual_seed(5)
    sizes = [3, 8, 5, 11]
    data = [ClientData(torch.randn(n, 4, generator=g), torch.randint(0, 2, (n,), generator=g)) for n in sizes]
    torch.manual_seed(0)
    start = MODEL_FN().state_dict()
    cohort = Cohort(
        model_fn=MODEL_FN,
        arch_key="mlp4-6-2",
        data=data,
        starts=[start],
        start_of=np.zeros(4, dtype=np.int64),
        group_of=np.zeros(4, dtype=np.int64),
        num_groups=1,
        weights=np.asarray(sizes, dtype=np.float64),
        seeds=np.arange(4),
    )
    spec = LocalSpec(lr=0.1, batch_size=4, epochs=1, loss=module.ScaledLoss(0.5))
    with local_ray(), RayExecutor(torch.device("cpu"), num_workers=2, chunk_size=2) as ex:
        got = ex.train(cohort, spec)
    want = SerialExecutor(torch.device("cpu")).train(cohort, spec)
    assert got.group_states[0] is not None and want.group_states[0] is not None
    for k, v in want.group_states[0].items():
        torch.testing.assert_close(got.group_states[0][k], v, atol=1e-6, rtol=0)  # test_engine_ray's bound
