"""Tests for edgelearn.report.io: strict-but-tolerant metrics parsing, summary reading, crash-safe writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgelearn.errors import DataError
from edgelearn.report.io import append_jsonl, read_metrics, read_summary, write_json_atomic


def _write_lines(run_dir: Path, lines: list[str]) -> None:
    """Write raw metrics lines (each gets a newline) into ``run_dir/metrics.jsonl``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_read_metrics_keeps_extra_keys_and_tolerates_missing_trailing_keys(tmp_path: Path) -> None:
    _write_lines(
        tmp_path,
        [
            '{"round": 1, "accuracy": 0.5, "loss": 1.2, "energy_j": 3.0, "custom": "x"}',
            "",  # blank lines are skipped
            '{"round": 2, "accuracy": 0.75}',  # an older run without the cost keys
        ],
    )
    records = read_metrics(tmp_path)
    assert records == [
        {"round": 1, "accuracy": 0.5, "loss": 1.2, "energy_j": 3.0, "custom": "x"},
        {"round": 2, "accuracy": 0.75},
    ]


def test_read_metrics_empty_file_gives_no_records(tmp_path: Path) -> None:
    _write_lines(tmp_path, [])
    assert read_metrics(tmp_path) == []


@pytest.mark.parametrize(
    ("bad_line", "fragment"),
    [
        ('{"round": 2, "accuracy": 0.6', "malformed JSON"),  # truncated by a crash
        ('{"accuracy": 0.6}', "'round' is missing"),
        ('{"round": 2}', "'accuracy' is missing"),
        ("[1, 2]", "expected a JSON object"),
        ('{"round": 0, "accuracy": 0.6}', "'round' must be an integer >= 1"),
        ('{"round": true, "accuracy": 0.6}', "'round' must be an integer >= 1"),
        ('{"round": 2, "accuracy": 60}', "'accuracy' must be a number in [0, 1]"),
        ('{"round": 2, "accuracy": "0.6"}', "'accuracy' must be a number in [0, 1]"),
        ('{"round": 2, "accuracy": 0.6, "energy_j": "lots"}', "'energy_j' must be a number"),
        ('{"round": 2, "accuracy": 0.6, "accuracy_by_tier": [0.5]}', "'accuracy_by_tier' must map"),
    ],
)
def test_read_metrics_bad_line_names_file_and_line_number(
    tmp_path: Path, bad_line: str, fragment: str
) -> None:
    _write_lines(tmp_path, ['{"round": 1, "accuracy": 0.5}', "", bad_line])
    with pytest.raises(DataError) as info:
        read_metrics(tmp_path)
    message = str(info.value)
    assert "metrics.jsonl, line 3" in message  # the blank line still counts: line numbers match an editor
    assert fragment in message
    assert info.value.hint


def test_missing_run_dir_and_files_say_a_run_directory_is_expected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as info:
        read_metrics(tmp_path / "nope")
    assert "edgelearn run" in (info.value.hint or "")
    with pytest.raises(DataError, match="metrics.jsonl not found") as info:
        read_metrics(tmp_path)
    assert "edgelearn run" in (info.value.hint or "")
    with pytest.raises(DataError, match="summary.json not found"):
        read_summary(tmp_path)


def test_read_summary_rejects_malformed_and_non_object_json(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text('{"algorithm": "fedavg",\n "rounds": }', encoding="utf-8")
    with pytest.raises(DataError, match=r"summary.json: malformed JSON .* line 2"):
        read_summary(tmp_path)
    (tmp_path / "summary.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(DataError, match="expected a JSON object, got list"):
        read_summary(tmp_path)


def test_write_json_atomic_round_trips_numpy_values_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "summary.json"
    obj = {"algorithm": "fedavg", "energy_j": np.float64(1.5), "rounds": np.int64(3), "v": np.arange(3)}
    assert write_json_atomic(target, obj) == target
    write_json_atomic(target, {**obj, "rounds": 4})  # replacing an existing file
    assert json.loads(target.read_text(encoding="utf-8")) == {
        "algorithm": "fedavg",
        "energy_j": 1.5,
        "rounds": 4,
        "v": [0, 1, 2],
    }
    assert sorted(p.name for p in target.parent.iterdir()) == ["summary.json"]


def test_write_json_atomic_failure_keeps_old_file_and_removes_temp(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    write_json_atomic(target, {"rounds": 1})
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json_atomic(target, {"rounds": object()})
    assert json.loads(target.read_text(encoding="utf-8")) == {"rounds": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_append_jsonl_then_read_metrics_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"round": 1, "accuracy": np.float32(0.5), "energy_j": 2.0})
    append_jsonl(path, {"round": 2, "accuracy": 0.625, "accuracy_by_tier": {"edge": 0.5}}, fsync=False)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == '{"round":1,"accuracy":0.5,"energy_j":2.0}'
    assert read_metrics(tmp_path) == [
        {"round": 1, "accuracy": 0.5, "energy_j": 2.0},
        {"round": 2, "accuracy": 0.625, "accuracy_by_tier": {"edge": 0.5}},
    ]


@settings(max_examples=50, deadline=None)
@given(
    accuracies=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=8),
    energy=st.floats(min_value=0.0, max_value=1e12),
)
def test_append_then_read_preserves_every_record(
    tmp_path_factory, accuracies: list[float], energy: float
) -> None:
    run_dir = tmp_path_factory.mktemp("run")
    records = [
        {"round": i + 1, "accuracy": a, "energy_j": energy * (i + 1)} for i, a in enumerate(accuracies)
    ]
    for record in records:
        append_jsonl(run_dir / "metrics.jsonl", record, fsync=False)
    assert read_metrics(run_dir) == records


def test_rounds_to_is_the_first_round_at_or_above_the_target() -> None:
    from edgelearn.report.io import rounds_to, target_key

    records = [
        {"round": 1, "accuracy": 0.5},
        {"round": 2, "accuracy": 0.72},
        {"round": 4, "accuracy": 0.7},  # eval.every = 2: only evaluated rounds appear
        {"round": 5, "accuracy": float("nan")},
    ]
    assert rounds_to(records, 0.7) == 2
    assert rounds_to(records, 0.5) == 1
    assert rounds_to(records, 0.73) is None
    assert rounds_to([], 0.1) is None
    assert (target_key(0.7), target_key(0.725), target_key(1.0)) == ("70%", "72.5%", "100%")
