"""docs/extending.md's code is real: the fenced blocks whose header names a file (```python file=my_plugin.py)
are assembled into those files in a temporary folder, in order; the configs run with ``edgelearn run`` (their
``plugins:`` key loads the assembled plugin), the script runs in a fresh interpreter, and the listing shows
the plugin's algorithms."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgelearn.plugins import available
from edgelearn.run_config import load_config
from edgelearn.runner import run

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "extending.md"
BLOCK = re.compile(r"^```(\w+) file=(\S+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
"""A fenced block whose info string is ``<language> file=<name>``; the name's blocks are concatenated."""
EXPECTED = {"my_plugin.py", "my_config.yaml", "grad_shift_by_hand.py", "my_rings.yaml"}
"""The files the walkthrough builds: a block renamed or dropped from the doc fails here, not silently."""
QUICK = ["output.plots=false", "output.progress=false", "engine.torch_threads=1", "executor=serial"]


def doc_files(text: str) -> dict[str, str]:
    """File name -> its blocks' text joined in document order (blank lines between blocks)."""
    files: dict[str, list[str]] = {}
    for _lang, name, body in BLOCK.findall(text):
        files.setdefault(name, []).append(body)
    return {name: "\n\n".join(parts) for name, parts in files.items()}


def test_blocks_are_found_by_their_header() -> None:
    text = "x\n```python file=a.py\nA = 1\n```\n```python\nnot = run\n```\n```python file=a.py\nB = 2\n```\n"
    assert doc_files(text) == {"a.py": "A = 1\n\n\nB = 2\n"}


@pytest.fixture(scope="module")
def assembled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The doc's files written to one folder (once per session: the plugin registers its names once)."""
    folder = tmp_path_factory.mktemp("extending")
    files = doc_files(DOC.read_text(encoding="utf-8"))
    assert set(files) == EXPECTED
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.mark.parametrize(("config", "bar"), [("my_config.yaml", 0.5), ("my_rings.yaml", 0.5)])
def test_the_docs_configs_run_with_the_docs_plugin(assembled: Path, config: str, bar: float) -> None:
    cfg = load_config(assembled / config, QUICK)
    summary = run(cfg, assembled / f"run-{config}")
    # 10 classes (digits) or 3 (rings): chance is at most 1/3. Measured over seeds 0-4 (serial): my_config
    # 0.905, 0.869, 0.891, 0.877, 0.903 after 5 rounds; my_rings 0.797, 0.817, 1.0, 0.943, 1.0 after 15 (one
    # or two classes per device). The bar catches a doc whose code stopped learning, not a weaker seed.
    assert summary["final_accuracy"] >= bar
    assert summary["algorithm"] == cfg.algorithm.name


def test_the_docs_grad_shift_script_matches_its_hand_formula(assembled: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "grad_shift_by_hand.py"],
        cwd=assembled,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["serial matches the hand formula", "vmap matches the hand formula"]


def test_the_docs_plugin_is_listed(assembled: Path) -> None:
    load_config(assembled / "my_config.yaml", QUICK)
    names = dict(available("algorithms"))
    assert names["my_fedprox"].startswith("FedProx (Li et al., MLSys 2020)")
    assert names["fedavgm"].startswith("FedAvgM (Hsu et al., 2019)")
    assert "tiny_mlp" in dict(available("models")) and "rings" in dict(available("datasets"))
    assert "label_sorted" in dict(available("partitioners"))
