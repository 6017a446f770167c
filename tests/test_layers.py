"""The package's shape, read from its source with ``ast`` (nothing is imported): no import cycle among its
modules, no module importing a layer above its own, no source file over :data:`MAX_LINES` lines.

**The import graph.** One node per module of ``src/edgelearn`` (a package is its ``__init__.py``). Every
``import`` and ``from ... import`` counts wherever it stands (module level, inside functions and classes,
``try`` blocks), except inside the body of an ``if TYPE_CHECKING:`` block: a type-only import never runs, so
it is not an edge (its ``else:`` branch is). ``from P import N`` imports module ``P.N`` when that is a module
of the package, else ``P``; relative imports are resolved against the importer's package; imports of other
distributions are ignored, and so are names looked up at run time (``importlib.import_module``, the
registries' ``"module:Class"`` strings).

Importing ``a.b.c`` also runs the ``__init__`` of each package above it, so the module gets an edge to those
packages too, except the packages that contain the importer itself: when a module imports a sibling, its
own package is already in ``sys.modules``. That is the rule that lets a package ``__init__`` re-export its
own submodules without counting as a cycle with them. An explicit import of a package that contains the
importer (``from edgelearn import __version__``) is an edge like any other.

**Cycles.** The graph must have no strongly connected component of more than one module (and no module
importing itself); each one found is reported with an import path around it.

**Layers.** Each module belongs to a unit: the first name below ``edgelearn`` (``edgelearn.data.registry``
is in ``data``; the package's own ``__init__`` is the unit ``edgelearn``). :data:`LAYERS` orders the units.
A module may import modules of its own unit and of units in lower layers only: never a higher layer, and
never another unit of its own layer (units of one layer are independent of each other). Every unit must be
placed in :data:`LAYERS`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "edgelearn"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    # errors, safe YAML, seed streams and the version: import nothing of the package
    ("base", frozenset({"edgelearn", "errors", "yamlsafe", "seeding"})),
    # loading plugins on demand, so the registries above it need not import the registration API on top
    ("extensions", frozenset({"extensions"})),
    # the physics: topology, hardware kinds and their sourced catalog, channel, costs, ledger, faults.
    # NumPy only; the config resolves `hardware.<tier>.profile` against its catalog
    ("system", frozenset({"system"})),
    # the typed config (and memory's size checks of it); the report layer: atomic writes, the run folder's
    # files, tables and plots. Both import only base, so everything above may use them (report.io's atomic
    # writes serve the cache, checkpoints and algorithms too, not only the runner and the commands).
    ("config, report", frozenset({"config", "memory", "report"})),
    # the user cache of derived arrays and the run checkpoints (both write through report.io)
    ("storage", frozenset({"cache", "checkpoint"})),
    # the independent parts a run is built from: no one of them imports another
    ("data, models, engine", frozenset({"data", "models", "engine"})),
    ("planning", frozenset({"planning"})),
    ("algorithms", frozenset({"algorithms"})),
    # the whole run's config: the shared sections plus the union of every algorithm's config class
    ("run_config", frozenset({"run_config"})),
    # build_context and run: the one place that assembles a run from a config
    ("runner", frozenset({"runner"})),
    # the public registration API: it writes into the registries of every layer below
    ("plugins", frozenset({"plugins"})),
    # whole-run commands built on the runner: bench, sweep, demo, plan, pretrain-autoencoder
    ("commands", frozenset({"commands"})),
    ("cli", frozenset({"cli"})),
    ("python -m edgelearn", frozenset({"__main__"})),
)
"""Units from the bottom layer up (see the module docstring for the rule)."""

MAX_LINES = 600
KNOWN_LONG: frozenset[str] = frozenset()
"""Files allowed over :data:`MAX_LINES` for now (paths below ``src/edgelearn``); each must still be over."""


def module_name(path: Path) -> str:
    """``src/edgelearn/a/b.py`` -> ``edgelearn.a.b``; a package's ``__init__.py`` -> the package's name."""
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement below ``node`` that can run: all but the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                yield from _import_nodes(ast.Module(body=[stmt], type_ignores=[]))
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        yield from _import_nodes(child)


def imported(source: str, importer: str, is_package: bool, known: set[str]) -> set[str]:
    """The package's modules that ``source`` (the text of module ``importer``) imports, as the docstring says
    (without the implicit parent packages: see :func:`edges`)."""
    package = importer if is_package else importer.rpartition(".")[0]
    out: set[str] = set()
    for node in _import_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        out.update(t for t in targets if t == PACKAGE or t.startswith(PACKAGE + "."))
    return out


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def edges() -> dict[str, set[str]]:
    """The import graph: module -> the modules (and the packages Python initialises for them) it imports."""
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets = imported(path.read_text(encoding="utf-8"), name, path.name == "__init__.py", set(mods))
        own = {name, *_ancestors(name)}
        out = set(targets)
        for target in targets:
            out.update(a for a in _ancestors(target) if a not in own)
        out.discard(name)  # a module in sys.modules already
        graph[name] = out
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One import path around each cycle: every strongly connected component of more than one module (and
    every module importing itself), as ``[a, b, ..., a]``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: set[str] = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(_path_around(graph, min(component), component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def _path_around(graph: dict[str, set[str]], start: str, component: set[str]) -> list[str]:
    """The shortest import path from ``start`` back to itself inside ``component`` (breadth first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]  # v, the module before it, ..., start
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{start} is in a cycle but no path returns to it")


def unit(name: str) -> str:
    """A module's unit: the first name below the package (the package's own ``__init__``: the package)."""
    parts = name.split(".")
    first = parts[1] if len(parts) > 1 else parts[0]
    return first


def layer_of() -> dict[str, int]:
    """Unit -> its layer's position in :data:`LAYERS` (0 = bottom)."""
    return {u: i for i, (_, units) in enumerate(LAYERS) for u in units}


def test_the_walker_counts_runtime_imports_only() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import edgelearn.errors\n"
        "from edgelearn.system import model\n"
        "if TYPE_CHECKING:\n"
        "    from edgelearn.config import RunConfig\n"
        "else:\n"
        "    from edgelearn import seeding\n"
        "def f():\n"
        "    from edgelearn.runner import run\n"
        "from . import topology\n"
        "import numpy\n"
    )
    known = {"edgelearn.system.model", "edgelearn.seeding", "edgelearn.system.topology"}
    found = imported(source, "edgelearn.system.faults", False, known)
    assert found == {
        "edgelearn.errors",
        "edgelearn.system.model",
        "edgelearn.seeding",
        "edgelearn.runner",
        "edgelearn.system.topology",
    }


def test_a_package_reexporting_its_modules_is_no_cycle_but_a_real_loop_is() -> None:
    graph = {"p": {"p.a"}, "p.a": {"p.b"}, "p.b": set()}
    assert cycles(graph) == []
    graph["p.b"] = {"p"}  # p.b imports its own package's __init__, which imports p.a, which imports p.b
    assert cycles(graph) == [["p", "p.a", "p.b", "p"]]


def test_no_import_cycle() -> None:
    found = cycles(edges())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_every_unit_has_a_layer() -> None:
    placed = layer_of()
    units = {unit(m) for m in modules()}
    assert sorted(units - set(placed)) == [], "add these to LAYERS"
    assert sorted(set(placed) - units) == [], "LAYERS names units that do not exist"


def test_no_module_imports_a_layer_above_it_or_a_sibling_unit() -> None:
    placed = layer_of()
    bad = []
    for importer, targets in sorted(edges().items()):
        mine = unit(importer)
        for target in sorted(targets):
            theirs = unit(target)
            if mine not in placed or theirs not in placed:
                continue  # reported by test_every_unit_has_a_layer
            if theirs == mine or placed[theirs] < placed[mine]:
                continue
            where = "above it" if placed[theirs] > placed[mine] else "in its own layer"
            bad.append(f"{importer} ({LAYERS[placed[mine]][0]}) imports {target}, {where}")
    assert not bad, "\n".join(bad)


ALGORITHMS = f"{PACKAGE}.algorithms"
SHARED_ALGORITHM_MODULES = frozenset({"base", "registry", "kit"})
"""What every algorithm may import in ``edgelearn.algorithms``: the interface, the name table and the kit."""


def algorithm_folder(name: str) -> str | None:
    """The algorithm folder a module belongs to (``edgelearn.algorithms.fedagg.bsbodp`` -> ``fedagg``), or
    None for the shared modules and modules outside the algorithms."""
    parts = name.split(".")
    if name.startswith(ALGORITHMS + ".") and parts[2] not in SHARED_ALGORITHM_MODULES:
        return parts[2]
    return None


def test_no_algorithm_imports_another_and_the_kit_imports_none() -> None:
    """Issue 15 item 2: tier algorithms share the kit, never each other's modules (a plugin may subclass a
    built-in; a built-in may not), and the kit serves every algorithm without depending on one."""
    bad = []
    for importer, targets in sorted(edges().items()):
        mine = algorithm_folder(importer)
        in_kit = importer.startswith(f"{ALGORITHMS}.kit")
        if mine is None and not in_kit:
            continue
        for target in sorted(targets):
            theirs = algorithm_folder(target)
            if theirs is not None and theirs != mine:
                bad.append(f"{importer} imports {target}, another algorithm's module")
    assert not bad, "\n".join(bad)


def test_the_algorithm_rule_catches_a_cross_import() -> None:
    assert algorithm_folder("edgelearn.algorithms.fedagg.bsbodp") == "fedagg"
    assert algorithm_folder("edgelearn.algorithms.kit.split") is None
    assert algorithm_folder("edgelearn.algorithms.fedgkt") == "fedgkt"
    assert algorithm_folder("edgelearn.algorithms") is None


def test_no_source_file_over_the_line_limit() -> None:
    lengths = {
        str(p.relative_to(SRC)): len(p.read_text(encoding="utf-8").splitlines()) for p in SRC.rglob("*.py")
    }
    over = {f: n for f, n in sorted(lengths.items()) if n > MAX_LINES}
    assert sorted(set(over) - KNOWN_LONG) == [], f"over {MAX_LINES} lines: {over}"
    fixed = sorted(f for f in KNOWN_LONG if lengths.get(f, 0) <= MAX_LINES)
    assert not fixed, f"no longer over {MAX_LINES} lines (or gone): remove from KNOWN_LONG: {fixed}"
