"""Reading a config: YAML files through the strict safe loader, ``--set a.b=c`` overrides, and pydantic's
validation errors turned into one :class:`ConfigError` naming each bad key path, what was wrong and the keys
allowed there.

Nothing here knows the run's sections: :mod:`edgelearn.run_config` hands its root section (and the algorithm
names its union accepts) to :func:`format_validation_error`.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import ValidationError

from edgelearn.config.base import BOOL_NOT_NUMBER, SECTION_KEY_PROBLEM, Section, _members
from edgelearn.errors import ConfigError
from edgelearn.yamlsafe import AliasExpansionError, DuplicateKeyError, load_yaml


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a key path and a YAML-parsed value (so numbers, lists, bools work)."""
    if "=" not in item:
        raise ConfigError(
            f"config override {item!r} has no '='", hint="write overrides as --set key.path=value"
        )
    key, _, raw = item.partition("=")
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(
            f"config override {item!r} has an empty key", hint="write overrides as --set key.path=value"
        )
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"config override {item!r}: the value of `{key.strip()}` is not valid YAML ({exc})"
        ) from None
    return path, value


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with every ``key.path=value`` override set (intermediate maps created)."""
    out = copy.deepcopy(dict(data))
    for item in overrides:
        path, value = parse_override(item)
        node: dict[str, Any] = out
        for i, key in enumerate(path[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: i + 1])
                raise ConfigError(f"override {item!r}: `{where}` is a value, not a section")
            node = child
        node[path[-1]] = value
    return out


def _fields_at(root: type[Section], loc: Sequence[Any]) -> tuple[str, list[str] | None]:
    """Readable dotted path for a pydantic error location, and the allowed keys of its parent section."""
    model: Any = root
    parts: list[str] = []
    allowed: list[str] | None = sorted(root.model_fields)
    leaf = False
    for item in loc:
        if leaf and isinstance(item, str):
            continue  # pydantic names the member of a scalar union (e.g. 'constrained-float'): not a key
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
            continue
        fields = getattr(model, "model_fields", None)
        if fields is None or item not in fields:
            # a discriminated-union tag (e.g. 'fedavg') or a key of a free-form dict
            if fields is None or model is None:
                parts.append(str(item))
            elif union_member(model, item) is not None:
                model = union_member(model, item)
                allowed = sorted(model.model_fields)
                continue
            else:
                parts.append(str(item))
                allowed = sorted(fields)
                model = None
            continue
        parts.append(item)
        allowed = sorted(fields)
        model = section_type(fields[item].annotation)
        leaf = model is None and not _is_mapping(fields[item].annotation)
    return ".".join(parts) or "<top level>", allowed


def section_type(annotation: Any) -> Any:
    """The Section class behind a field annotation (unwrapping Optional/Annotated), or a union marker."""
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    members = [
        m for m in getattr(annotation, "__args__", ()) if isinstance(m, type) and issubclass(m, Section)
    ]
    if len(members) == 1:
        return members[0]
    if members:
        return SectionUnion(members)
    inner = getattr(annotation, "__origin__", None)
    if inner is Annotated:  # pragma: no cover - pydantic strips Annotated from field annotations
        return section_type(annotation.__args__[0])
    return None


def _is_mapping(annotation: Any) -> bool:
    """True for dict-typed fields, whose keys appear in error locations as real keys."""
    text = str(annotation)
    return text.startswith("dict") or "dict[" in text


class SectionUnion:
    """Marker for a discriminated union of sections (the algorithm)."""

    def __init__(self, members: list[type[Section]]) -> None:
        self.members = members
        self.model_fields: dict[str, Any] = {}


def union_member(model: Any, tag: str) -> type[Section] | None:
    if isinstance(model, SectionUnion):
        for member in model.members:
            field = member.model_fields.get("name")
            if field is not None and field.default == tag:
                return member
    return None


def format_validation_error(
    exc: ValidationError, source: str, root: type[Section], tags: Sequence[str] = ()
) -> ConfigError:
    """Turn a pydantic ValidationError of section ``root`` into one ConfigError listing each bad key path and
    how to fix it; ``tags`` are the names a discriminated union (the algorithm) accepts."""
    lines: list[str] = []
    seen: set[str] = set()
    for err in exc.errors():
        loc = err["loc"]
        bad_key = bool(loc) and loc[-1] == "[key]"  # pydantic's marker: the key itself is invalid
        path, allowed = _fields_at(root, loc[:-1] if bad_key else loc)
        if bad_key:
            err = {**err, "msg": f"a key here is invalid: {err['msg']}"}
        if err["type"] in (BOOL_NOT_NUMBER, SECTION_KEY_PROBLEM):  # raised for its section: key in context
            key = str(err.get("ctx", {}).get("key"))
            given = err.get("input")
            got = given.get(key) if isinstance(given, Mapping) else None
            if err["type"] == SECTION_KEY_PROBLEM and not (isinstance(given, Mapping) and key in given):
                got = {}  # a key that was not given (a missing one): no "(got ...)" in the message
            err = {**err, "input": got}
            path = key if path == "<top level>" else f"{path}.{key}"
        if path in seen:
            continue  # one message per key: a scalar union reports each member's complaint
        seen.add(path)
        kind = err["type"]
        new = err.get("ctx", {}).get("new") if kind == SECTION_KEY_PROBLEM else None
        if new is not None:  # a renamed key (Section.renamed): name where it lives now
            parent = path.rpartition(".")[0]
            moved = f"{parent}.{new}" if parent else str(new)
            msg = f"{quote_key(path)} has moved: write `{moved}` (e.g. --set {moved}={err['input']!r})"
        elif kind == "extra_forbidden":
            msg = f"{quote_key(path)} is not a known key"
            if allowed:
                msg += f"; allowed here: {', '.join(allowed)}"
        elif kind == "union_tag_invalid":
            msg = f"`{path}.name` is {err['input'].get('name')!r}; allowed: {', '.join(tags)}"
        elif kind == "union_tag_not_found":
            msg = f"{quote_key(path)} needs a `name`; allowed: {', '.join(tags)}"
        else:
            shown = err.get("input")
            got = "" if isinstance(shown, dict) else f" (got {shown!r})"
            msg = f"{quote_key(path)}: {err['msg']}{got}"
        lines.append(msg)
    return config_problems(lines, source)


def quote_key(path: str) -> str:
    r"""A key path as error messages show it: in backticks, or as a Python string literal when it holds a
    backtick itself (a key such as ``\``` would otherwise read as empty code spans)."""
    return f"`{path}`" if "`" not in path else repr(path)


def config_problems(lines: Sequence[str], source: str) -> ConfigError:
    """One ConfigError listing each problem (a line naming its key) of the config from ``source``."""
    return ConfigError(
        f"invalid configuration in {source}:\n  - " + "\n  - ".join(lines),
        hint="correct the keys above in the YAML file or the --set overrides",
    )


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with the strict safe loader (edgelearn/yamlsafe.py: no duplicate keys, no alias
    bombs); a missing file, a non-mapping or a refused construct is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"config file {p} does not exist",
            hint="pass the path of a YAML file, e.g. configs/fedavg-digits.yaml",
        )
    try:
        data = load_yaml(p.read_text(encoding="utf-8"))
    except DuplicateKeyError as exc:
        raise ConfigError(
            f"config file {p}: key `{exc.key}` is given twice (line {exc.first_line} and line {exc.line})",
            hint="keep one of the two lines; YAML would silently use the last one",
        ) from None
    except AliasExpansionError as exc:
        raise ConfigError(f"config file {p}: {exc.problem}") from None
    except RecursionError:
        raise ConfigError(
            f"config file {p} is nested too deeply to read", hint="a config needs a few levels of sections"
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of sections, found {type(data).__name__}")
    return data


def unknown_everywhere(owners: Sequence[type[Section]], key: str, value: Any, where: str) -> list[str]:
    """Messages for nested keys of ``value`` that no algorithm in ``owners`` knows under field ``key``."""
    found = [_unknown_keys(m.model_fields[key].annotation, value, where) for m in owners]
    common = set.intersection(*(set(f) for f in found))
    return [found[0][path] for path in sorted(common)]


def _unknown_keys(annotation: Any, value: Any, where: str) -> dict[str, str]:
    """Unknown nested keys of ``value`` under a field typed ``annotation``: dotted path -> message."""
    out: dict[str, str] = {}
    section = section_type(annotation)
    if isinstance(value, dict) and isinstance(section, type):
        for k, v in value.items():
            path = f"{where}.{k}"
            field = section.model_fields.get(k) if isinstance(k, str) else None
            if field is None:
                allowed = ", ".join(sorted(section.model_fields))
                out[path] = f"{quote_key(path)} is not a known key; allowed here: {allowed}"
            else:
                out.update(_unknown_keys(field.annotation, v, path))
    elif isinstance(value, list):
        items = [m for m in _members(annotation) if typing.get_origin(m) is list and typing.get_args(m)]
        for i, item in enumerate(value):
            if items:
                out.update(_unknown_keys(typing.get_args(items[0])[0], item, f"{where}[{i}]"))
    return out
