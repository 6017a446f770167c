"""``edgelearn.plugins.register_partitioner``: a plugin partitioner is reachable by name, validated, and
refused when the name is taken or the split is not callable."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from edgelearn.errors import ConfigError
from edgelearn.plugins import register_partitioner

# By module path: ``edgelearn.data.partition`` as an attribute is the package's partition() function.
part = importlib.import_module("edgelearn.data.partition")


@pytest.fixture(autouse=True)
def _own_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations in a test stay in that test."""
    monkeypatch.setattr(part, "PARTITION_METHODS", dict(part.PARTITION_METHODS))
    monkeypatch.setattr(part, "_PLUGINS", dict(part._PLUGINS))


def halves(labels: np.ndarray, num_devices: int, rng: np.random.Generator, reverse: bool = False) -> list:
    """Contiguous blocks of the sample indices (reversed on request)."""
    order = np.arange(len(labels))[::-1] if reverse else np.arange(len(labels))
    return np.array_split(order, num_devices)


def test_a_registered_partitioner_is_called_by_name_with_its_options() -> None:
    register_partitioner("test_halves", halves, options=("reverse",))
    labels = np.array([0, 1, 0, 1, 2, 2])
    got = part.partition("test_halves", labels, 2, np.random.default_rng(0), reverse=True)
    assert [g.tolist() for g in got] == [[5, 4, 3], [2, 1, 0]]
    assert part.PARTITION_METHODS["test_halves"] == ("reverse",)


def test_a_taken_name_or_a_non_callable_is_refused() -> None:
    with pytest.raises(ConfigError, match="partitioner 'iid' is already registered"):
        register_partitioner("iid", halves)
    with pytest.raises(ConfigError, match="split must be callable"):
        register_partitioner("test_not_callable", "halves")  # type: ignore[arg-type]
    register_partitioner("iid", halves, replace=True)  # on purpose
