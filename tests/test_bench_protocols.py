"""Smoke test of benchmarks/protocols.py: both protocol shapes in ``--quick`` mode on a tiny generated
Fashion-MNIST folder; the JSON has every field, finite and consistent with the run's sizes."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from edgelearn.data.idx import write_idx

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "protocols.py"
MODULE = "bench_protocols"
TRAIN, TEST, SIDE = 120, 40, 28
"""Tiny split: 120 training images over the quick run's 20 clients = 6 each, one step at batch 10."""


def _load_script() -> ModuleType:
    """The script as a module (registered in sys.modules first: its dataclass looks its module up there)."""
    if MODULE in sys.modules:
        return sys.modules[MODULE]
    spec = importlib.util.spec_from_file_location(MODULE, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = module
    spec.loader.exec_module(module)
    return module


def _fashion_dir(folder: Path) -> Path:
    """Fashion-MNIST's four gzipped idx files with random 28x28 images and labels."""
    rng = np.random.default_rng(0)
    for split, n in (("train", TRAIN), ("t10k", TEST)):
        write_idx(
            folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, SIDE, SIDE), dtype=np.uint8)
        )
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))
    return folder


def _finite_positive(record: dict[str, Any], *keys: str) -> None:
    for key in keys:
        value = record[key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value)


def test_quick_protocols_write_sensible_json(tmp_path: Path) -> None:
    bench = _load_script()
    out = tmp_path / "protocols.json"
    data = _fashion_dir(tmp_path / "fashion")
    argv = ["--quick", "--data-dir", str(data), "--executor", "serial", "vmap", "--device", "cpu"]
    result = bench.main([*argv, "--in-process", "--json", str(out)])
    assert json.loads(out.read_text(encoding="utf-8")) == result
    env = result["environment"]
    assert env["cpu_capability"] and env["cpu_count"] >= 1
    records = result["records"]
    assert [(r["protocol"], r["executor"]) for r in records] == [
        ("flute-lr", "serial"),
        ("flute-lr", "vmap"),
        ("pfl-cnn", "serial"),
        ("pfl-cnn", "vmap"),
    ]
    clients, per_round, rounds = bench.QUICK_CLIENTS, bench.QUICK_PER_ROUND, bench.QUICK_ROUNDS
    per_client = TRAIN // clients
    for r in records:
        proto = bench.PROTOCOLS[r["protocol"]]
        assert (r["clients"], r["clients_per_round"], r["rounds"]) == (clients, per_round, rounds)
        assert (
            r["train_samples"] == TRAIN and r["partition"] == proto.partition and r["data"] == "fashion_mnist"
        )
        assert r["samples"] == rounds * per_round * per_client
        assert r["client_steps"] == rounds * per_round * math.ceil(per_client / proto.batch_size)
        _finite_positive(r, "wall_s", "s_per_round", "client_steps_per_s", "samples_per_s", "peak_rss_mb")
        assert 0.0 <= r["final_accuracy"] <= 1.0 and math.isfinite(r["final_loss"])
        assert r["threads"] == 1 and r["device"] == "cpu" and r["cpu_capability"] == env["cpu_capability"]
        assert len(r["loadavg_before"]) == 3 and isinstance(r["busy"], bool)
        assert 0.0 <= r["other_processes_cpus"] <= env["cpu_count"]
        central = r["central"]
        assert central["samples"] == r["samples"] and central["batch_size"] == proto.batch_size
        _finite_positive(central, "samples_per_s", "seconds")
        assert 0.0 <= central["final_accuracy"] <= 1.0
    lr, cnn = records[0], records[2]
    assert lr["model_params"] == SIDE * SIDE * 10 + 10  # logistic regression: one 784x10 layer
    assert cnn["model"] == "cnn_small" and cnn["model_params"] > lr["model_params"]
    assert records[0]["central"] == records[1]["central"]  # one centralized reference per protocol
    assert bench.main(["--render", str(out)]) == result
    table = bench.markdown_table(result).splitlines()
    assert len(table) == 2 + len(records) and table[2].startswith(
        "| flute-lr | serial | shards | cpu | 1 | 5/20 | 2 |"
    )


def test_pairs_run_in_fresh_processes_share_one_central_reference(tmp_path: Path) -> None:
    bench = _load_script()
    data = _fashion_dir(tmp_path / "fashion")
    argv = ["--quick", "--data-dir", str(data), "--protocol", "flute-lr", "--executor", "serial", "vmap"]
    records = bench.main([*argv, "--device", "cpu", "--partition", "iid"])["records"]
    assert [r["executor"] for r in records] == ["serial", "vmap"]
    assert all(r["partition"] == "iid" for r in records)  # the override reaches the child processes
    assert all(r["process"] == "fresh process for this pair" for r in records)
    assert records[0]["central"] == records[1]["central"] and records[0]["central"]["samples_per_s"] > 0
    # same seed, same data, same sampled clients: both executors deliver the same model within float noise
    assert records[0]["final_loss"] == pytest.approx(records[1]["final_loss"], rel=1e-4)


@pytest.mark.parametrize(
    "flags", [["--rounds", "0"], ["--threads", "-1"], ["--protocol", "mnist"], ["--partition", "power"]]
)
def test_bad_flags_are_rejected(flags: list[str]) -> None:
    with pytest.raises(SystemExit):
        _load_script().parse_args(flags)
