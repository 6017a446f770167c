"""The one YAML loader for everything the project reads as configuration (run configs, ``--set`` values,
sweep suites, a run directory's saved config).

``yaml.safe_load`` has two traps for config files:

* a duplicated key silently keeps the last value (``rounds: 5`` ... ``rounds: 50``), so a run uses a value
  the reader of the file did not see; here it is an error naming the key and both lines;
* anchors and aliases (``&a`` / ``*a``) share one node under many keys: a few hundred bytes can describe a
  billion-element tree (the "billion laughs" bomb) that pydantic validation or a YAML dump then expands
  until the process is killed. Aliases are still allowed (PyYAML's own dumper writes them for shared
  objects, so scripted files hold them), but right after parsing, before anything is built, the size of
  the tree they expand to is counted over the distinct nodes (microseconds even for a bomb) and a tree of
  more than :data:`MAX_EXPANDED_NODES` values, or a recursive alias, is refused. Loaded data is then
  unshared, so a ``--set`` into one place never changes the other places an alias pointed at.

Both errors are ``yaml.YAMLError`` subclasses carrying line marks, so every caller's existing
``except yaml.YAMLError`` turns them into a ConfigError.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, SequenceNode


class DuplicateKeyError(ConstructorError):
    """A mapping lists the same key twice."""

    def __init__(self, key: Any, first: Node, again: Node) -> None:
        self.key = key
        self.line = again.start_mark.line + 1
        self.first_line = first.start_mark.line + 1
        super().__init__(
            None,
            None,
            f"duplicate key {key!r} at line {self.line} (first given at line {self.first_line}); "
            "a YAML mapping may give each key once: delete one of them",
            again.start_mark,
        )


MAX_EXPANDED_NODES = 100_000
"""Most values (scalars, lists and mappings) a config document may expand to once aliases are followed.
The largest shipped file (a sweep suite) has about 600; 100,000 Python values stay around 10 MB, while an
alias bomb expands to billions."""


class AliasExpansionError(ComposerError):
    """Aliases expand the document beyond :data:`MAX_EXPANDED_NODES` values, or refer to themselves."""

    def __init__(self, problem: str, mark: Any) -> None:
        self.line = mark.line + 1
        super().__init__(None, None, problem, mark)


def _check_expansion(root: Node) -> None:
    """Count the values ``root`` expands to (each distinct node once), refusing a bomb or a cycle."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise AliasExpansionError(
                f"a YAML alias at line {node.start_mark.line + 1} refers to itself (an endless structure); "
                "write the values out",
                node.start_mark,
            )
        active.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        if total > MAX_EXPANDED_NODES:
            raise AliasExpansionError(
                f"YAML aliases at line {node.start_mark.line + 1} expand to {total:,} values, more than the "
                f"{MAX_EXPANDED_NODES:,} a config may hold (an alias bomb?); write the values out",
                node.start_mark,
            )
        sizes[key] = total
        return total

    size(root)


def _unshared(data: Any) -> Any:
    """A copy of loaded data in which no list or mapping appears twice (aliases become separate copies)."""
    if isinstance(data, dict):
        return {k: _unshared(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_unshared(v) for v in data]
    return data


class StrictSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate mapping keys and alias bombs, and unshares aliases."""

    def compose_document(self) -> Node:  # type: ignore[override]
        """Compose as usual, then check what the aliases expand to before anything is constructed."""
        node = super().compose_document()
        if node is not None:
            _check_expansion(node)
        return node  # type: ignore[no-any-return]

    def construct_document(self, node: Node) -> Any:
        """Construct as usual, then give every alias occurrence its own copy (size already bounded)."""
        return _unshared(super().construct_document(node))

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Build a mapping, raising :class:`DuplicateKeyError` on the second occurrence of a key."""
        seen: dict[Any, Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges; explicit keys beside it may override merged ones
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                raise DuplicateKeyError(key, first, key_node)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


def load_yaml(text: str) -> Any:
    """Parse one YAML document with :class:`StrictSafeLoader` (raises ``yaml.YAMLError`` subclasses)."""
    return yaml.load(text, Loader=StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass


class _NoAliasDumper(yaml.SafeDumper):
    """SafeDumper that writes repeated objects out instead of as anchors, so our own files load again."""

    def ignore_aliases(self, data: Any) -> bool:
        """Never emit anchors or aliases."""
        return True


def dump_yaml(data: Any, **kwargs: Any) -> str:
    """``yaml.safe_dump`` without anchors or aliases (which :func:`load_yaml` refuses)."""
    return yaml.dump(data, Dumper=_NoAliasDumper, **kwargs)
