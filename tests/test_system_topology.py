"""Topology constructors, queries, validation errors and reparenting."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from edgelearn.errors import ConfigError
from edgelearn.system.topology import Tier, Topology

DEPTH3_SPEC = {"devices": 2, "children": [{"name": "e0", "devices": 3}, {"children": [{"devices": 4}]}]}


def test_flat() -> None:
    t = Topology.flat(3)
    assert t.num_nodes == 4 and t.num_devices == 3
    assert t.devices == [1, 2, 3] and t.edges == []
    assert [n.name for n in t.nodes] == ["cloud", "dev0", "dev1", "dev2"]
    assert t.parent(0) is None and t.parent(2) == 0
    assert t.children(0) == [1, 2, 3]
    assert t.tier(0) is Tier.CLOUD and t.tier(3) is Tier.DEVICE
    assert t.depth(3) == 1


def test_hierarchical_ids_follow_depth_first_creation() -> None:
    t = Topology.hierarchical(2, 2)
    assert [(n.name, n.parent) for n in t.nodes] == [
        ("cloud", None), ("edge0", 0), ("dev0", 1), ("dev1", 1), ("edge1", 0), ("dev2", 4), ("dev3", 4),
    ]  # fmt: skip
    assert t.edges == [1, 4] and t.devices == [2, 3, 5, 6]
    assert t.children(0) == [1, 4] and t.children(4) == [5, 6]
    assert t.device_ordinal(5) == 2
    np.testing.assert_array_equal(t.parent_array, [-1, 0, 1, 1, 0, 4, 4])


def test_hierarchical_uneven_with_cloud_devices() -> None:
    t = Topology.hierarchical(2, [1, 3], cloud_devices=1)
    assert t.devices == [1, 3, 5, 6, 7] and t.edges == [2, 4]
    assert t.children(0) == [1, 2, 4]
    assert t.subtree_devices(4) == [5, 6, 7]


def test_from_spec_depth3_with_cloud_devices() -> None:
    t = Topology.from_spec(DEPTH3_SPEC)
    names = [n.name for n in t.nodes]
    assert names == ["cloud", "dev0", "dev1", "e0", "dev2", "dev3", "dev4", "edge1", "edge2"] + [
        f"dev{i}" for i in range(5, 9)
    ]
    assert t.devices == [1, 2, 4, 5, 6, 9, 10, 11, 12] and t.edges == [3, 7, 8]
    assert t.parent(1) == 0 and t.parent(4) == 3 and t.parent(8) == 7 and t.parent(9) == 8
    assert t.depth(9) == 3 and t.depth(8) == 2 and t.depth(1) == 1 and t.depth(0) == 0
    assert t.path_to_root(10) == [10, 8, 7, 0]
    assert t.subtree_devices(7) == [9, 10, 11, 12]
    assert t.subtree_devices(0) == t.devices
    assert t.subtree_devices(4) == [4]
    assert [t.device_ordinal(i) for i in (1, 4, 9, 12)] == [0, 2, 5, 8]
    np.testing.assert_array_equal(t.device_ordinals([12, 1]), [8, 0])
    with pytest.raises(ValueError, match="not a device"):
        t.device_ordinal(3)


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"devices": 2, "children": [{"devices": 1}, {"devices": -1}]}, "topology.tree.children[1].devices"),
        ({"devices": 1, "children": [{"devise": 2}]}, "topology.tree.children[0]"),
        ({"devices": True}, "topology.tree.devices"),
        ({"devices": 1.5}, "topology.tree.devices"),
        (
            {"devices": 1, "children": [{"children": [{"devices": 0}]}]},
            "topology.tree.children[0].children[0]",
        ),
        ({"devices": 1, "children": "e0"}, "topology.tree.children"),
        ({"devices": 1, "children": [{"name": "", "devices": 1}]}, "topology.tree.children[0].name"),
        ({"devices": 1, "children": [7]}, "topology.tree.children[0]"),
        ({}, "topology.tree"),
    ],
)
def test_from_spec_errors_name_the_key(spec: dict, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        Topology.from_spec(spec)
    assert path in info.value.message


def test_from_spec_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match="devise"):
        Topology.from_spec({"devices": 1, "children": [{"devise": 2}]})


def test_duplicate_names_rejected() -> None:
    with pytest.raises(ConfigError, match="edge1"):
        Topology.from_spec({"children": [{"name": "edge1", "devices": 1}, {"devices": 1}]})


@pytest.mark.parametrize(
    "make",
    [
        lambda: Topology.flat(0),
        lambda: Topology.flat(-2),
        lambda: Topology.hierarchical(0, 3),
        lambda: Topology.hierarchical(2, [1]),
        lambda: Topology.hierarchical(2, [1, 0]),
        lambda: Topology.hierarchical(2, -1),
        lambda: Topology.hierarchical(2, 2, cloud_devices=-1),
    ],
)
def test_constructor_errors(make: Callable[[], Topology]) -> None:
    with pytest.raises(ConfigError):
        make()


def test_reparent_device_and_edge() -> None:
    t = Topology.hierarchical(2, 2)
    v0 = t.version
    t.reparent(2, 4)
    assert t.parent(2) == 4 and t.children(1) == [3] and t.children(4) == [2, 5, 6]
    assert t.devices == [2, 3, 5, 6] and t.device_ordinal(2) == 0
    assert t.subtree_devices(4) == [2, 5, 6] and t.version > v0
    assert t.parent_array[2] == 4
    t.reparent(4, 1)  # edge1 (with its subtree) under edge0
    assert t.depth(5) == 3 and t.path_to_root(2) == [2, 4, 1, 0]
    assert t.subtree_devices(1) == [2, 3, 5, 6]
    with pytest.raises(ConfigError, match="cycle"):
        t.reparent(1, 4)
    with pytest.raises(ConfigError, match="cloud"):
        t.reparent(0, 1)
    with pytest.raises(ConfigError, match="device"):
        t.reparent(3, 2)
    with pytest.raises(ConfigError):
        t.reparent(4, 4)


def test_dict_round_trip_after_reparent() -> None:
    t = Topology.from_spec(DEPTH3_SPEC)
    t.reparent(9, 3)
    t2 = Topology.from_dict(t.to_dict())
    assert t2.to_dict() == t.to_dict()
    assert t2.children(3) == [4, 5, 6, 9]
    fresh = Topology.from_spec(DEPTH3_SPEC)
    fresh.load_dict(t.to_dict())
    assert fresh.parent(9) == 3 and fresh.subtree_devices(8) == [10, 11, 12]
    with pytest.raises(ConfigError):
        Topology.flat(3).load_dict(t.to_dict())
    with pytest.raises(ConfigError):
        Topology.from_dict({"nodes": [{"id": 0}]})
