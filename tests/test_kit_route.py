"""The one hop-by-hop router of the tree algorithms (``algorithms.kit.comm.route``): per-flow payloads up
and down, with per-flow tops, checked by hand and against the per-path loops it replaced (FedAgg's
``charge_paths`` for embeddings, FedGKT's ``charge_down_paths`` for logits), ledger event for ledger event."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgelearn.algorithms.kit.comm import route
from edgelearn.seeding import Seeds
from edgelearn.system import SystemModel
from edgelearn.system.channel import ChannelSpec
from edgelearn.system.topology import Topology

DEEP_SPEC = {
    "devices": 2,
    "children": [
        {"devices": 3, "children": [{"devices": 4}, {"devices": 2, "children": [{"devices": 3}]}]},
        {"devices": 5},
    ],
}
"""A four-level tree with devices at every level (cloud, edges, sub-edges, sub-sub-edge)."""


def _system(spec: dict) -> SystemModel:
    return SystemModel.build(Topology.from_spec(spec), None, ChannelSpec(), Seeds(1))


def reference_up(system: SystemModel, flows: Iterable[tuple[Sequence[int], float]], *, phase: str) -> None:
    """The per-path upward loop ``route`` replaced: loads summed per (child, parent), deepest level first."""
    load: dict[tuple[int, int], float] = {}
    for path, nbytes in flows:
        for child, parent in zip(path[:-1], path[1:]):
            load[(int(child), int(parent))] = load.get((int(child), int(parent)), 0.0) + float(nbytes)
    links = sorted(load)
    depth = system.topology.depth
    for d in sorted({depth(c) for c, _ in links}, reverse=True):
        level = [link for link in links if depth(link[0]) == d]
        system.transmit([c for c, _ in level], [p for _, p in level], [load[k] for k in level], phase=phase)


def reference_down(system: SystemModel, flows: Iterable[tuple[Sequence[int], float]], *, phase: str) -> None:
    """The per-path downward loop ``route`` replaced: loads summed per (parent, child), top level first."""
    load: dict[tuple[int, int], float] = {}
    for path, nbytes in flows:
        for child, parent in zip(path[:-1], path[1:]):
            load[(int(parent), int(child))] = load.get((int(parent), int(child)), 0.0) + float(nbytes)
    links = sorted(load)
    depth = system.topology.depth
    for d in sorted({depth(p) for p, _ in links}):
        level = [link for link in links if depth(link[0]) == d]
        system.transmit([p for p, _ in level], [c for _, c in level], [load[k] for k in level], phase=phase)


def test_per_flow_payloads_by_hand() -> None:
    system = _system({"children": [{"devices": 3}, {"devices": 2}]})
    topo = system.topology
    edge = topo.edges[0]
    a, b = topo.children(edge)[:2]
    system.begin_round(7)
    load = route(system, [a, b], [100.0, 30.0], direction="down", phase="x")
    assert load == {(0, edge): 130.0, (edge, a): 100.0, (edge, b): 30.0}
    events = system.ledger.events(7)
    assert events["src"].tolist() == [0, edge, edge]
    assert events["bytes"].tolist() == [130.0, 100.0, 30.0]
    assert events["t_start"][1] >= events["t_end"][0]  # the edge forwards after it has received
    up = route(system, [a, b], [10.0, 5.0], direction="up", phase="y")
    assert up == {(a, edge): 10.0, (b, edge): 5.0, (edge, 0): 15.0}
    # per-flow tops: a stops at its edge, b goes to the cloud
    assert route(system, [a, b], [4.0, 6.0], top=[edge, 0], direction="up", phase="z") == {
        (a, edge): 4.0,
        (b, edge): 6.0,
        (edge, 0): 6.0,
    }
    # a multicast carries one model once per link, however many receivers lie below
    assert route(system, [a, b], 8.0, direction="down", phase="m", multicast=True) == {
        (0, edge): 8.0,
        (edge, a): 8.0,
        (edge, b): 8.0,
    }
    assert route(system, [], 8.0, direction="up", phase="none") == {}


def test_bad_routes_are_refused() -> None:
    system = _system({"children": [{"devices": 3}, {"devices": 2}]})
    topo = system.topology
    system.begin_round(0)
    a = topo.children(topo.edges[0])[0]
    with pytest.raises(ValueError, match="is not below node"):
        route(system, [a], 1.0, top=topo.edges[1], direction="up", phase="x")
    with pytest.raises(ValueError, match="one payload"):
        route(system, [a], [1.0], direction="down", phase="x", multicast=True)
    with pytest.raises(ValueError, match="not in 0.."):
        route(system, [99], 1.0, direction="up", phase="x")


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_route_records_what_the_per_path_loops_did(data: st.DataObject) -> None:
    reference, vectorized = _system(DEEP_SPEC), _system(DEEP_SPEC)
    topo = reference.topology
    nodes = data.draw(st.lists(st.integers(1, topo.num_nodes - 1), max_size=12))
    sizes = [float(data.draw(st.integers(0, 10**6))) for _ in nodes]
    # each flow stops at a random ancestor on its way to the cloud (FedAgg's migrations stop at a holder)
    tops = [data.draw(st.sampled_from(topo.path_to_root(n)[1:])) for n in nodes]
    paths = [topo.path_to_root(n)[: topo.path_to_root(n).index(t) + 1] for n, t in zip(nodes, tops)]
    for system in (reference, vectorized):
        system.begin_round(3)
    reference_up(reference, zip(paths, sizes), phase="up")
    reference_down(reference, zip(paths, sizes), phase="down")
    route(vectorized, nodes, sizes, top=tops, direction="up", phase="up")
    route(vectorized, nodes, sizes, top=tops, direction="down", phase="down")
    want, got = reference.ledger.events(3), vectorized.ledger.events(3)
    assert want.shape == got.shape
    assert all(np.array_equal(want[name], got[name]) for name in want.dtype.names or ())
