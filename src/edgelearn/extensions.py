"""Loading plugins: the ``plugins:`` entries of a config and the ``edgelearn.plugins`` entry points.

The bottom layer of the package (it imports only :mod:`edgelearn.errors`), so the config loader and the
registries below the runner can load plugins on demand without importing the layers above them. What a
plugin does when imported (registering algorithms, models, datasets, partitioners, hardware profiles) is
the public API of :mod:`edgelearn.plugins`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Container, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from edgelearn.errors import ConfigError

ENTRY_POINT_GROUP = "edgelearn.plugins"
"""The Python entry-point group installed packages use to declare edgelearn plugins."""

_loaded: dict[str, str] = {}
"""Plugin reference -> the module name it was imported as (so a plugin is imported once)."""
_entry_points_loaded = False
_file_modules: dict[str, ModuleType] = {}
"""Plugins imported from ``.py`` files, by their synthetic module name: cloudpickle ships them by value."""


def resolve_plugin(entry: str, base_dir: Path | None) -> str:
    """The canonical form of one ``plugins:`` entry: an absolute path for a ``.py`` file (relative entries
    are taken from ``base_dir``, the config file's folder), the module name otherwise."""
    if not isinstance(entry, str) or not entry.strip():
        raise ConfigError(f"plugins: entry {entry!r} is not a module name or a .py file")
    if entry.endswith(".py") or "/" in entry or "\\" in entry:
        if not entry.endswith(".py"):
            raise ConfigError(
                f"plugins: entry {entry!r} looks like a path but is not a .py file",
                hint="name a .py file (relative to the config file) or an importable module (mypkg.plugin)",
            )
        path = Path(entry).expanduser()
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        return str(path.resolve())
    if not all(part.isidentifier() for part in entry.split(".")):
        raise ConfigError(
            f"plugins: entry {entry!r} is neither a module name (dotted identifiers) nor a .py file",
            hint="name an importable module (mypkg.plugin) or a .py file relative to the config file",
        )
    return entry


def load_plugin(entry: str) -> str:
    """Import one plugin (a module name or an absolute ``.py`` path) once; returns its module name."""
    if entry in _loaded:
        return _loaded[entry]
    if entry.endswith(".py"):
        path = Path(entry)
        if not path.is_file():
            raise ConfigError(
                f"plugin file {path} does not exist",
                hint="list .py files relative to the config file, or module names importable from here",
            )
        module_name = "edgelearn_plugin_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"plugin file {path} cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # before exec: dataclasses and pickling look it up
        try:
            spec.loader.exec_module(module)
        except ConfigError:
            del sys.modules[module_name]
            raise
        except Exception as exc:
            del sys.modules[module_name]
            raise ConfigError(f"plugin file {path} failed to import: {type(exc).__name__}: {exc}") from exc
        _file_modules[module_name] = module
        # The standalone cloudpickle when installed, and Ray's vendored copy only if Ray is already imported
        # (importing Ray costs a second; the Ray executor registers file plugins itself when it starts).
        picklers = [sys.modules.get("ray.cloudpickle")]
        try:
            picklers.append(importlib.import_module("cloudpickle"))
        except ImportError:
            pass
        for pickler in picklers:
            if pickler is not None:
                register_pickle_by_value(pickler)
    else:
        module_name = entry
        try:
            importlib.import_module(entry)
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"plugin module {entry!r} cannot be found ({exc})",
                hint="install it, put it on PYTHONPATH, or give the path of a .py file",
            ) from None
        except ConfigError:
            raise
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
            raise ConfigError(f"plugin module {entry!r} failed to import: {problem}") from exc
    _loaded[entry] = module_name
    return module_name


def register_pickle_by_value(pickler: Any) -> list[str]:
    """Tell ``pickler`` (a cloudpickle module, e.g. ``ray.cloudpickle``) to pickle the functions and classes
    of every plugin loaded from a ``.py`` file by value, since no other process can import their synthetic
    module names; returns those names. The Ray executor calls it with Ray's copy when it starts."""
    for module in _file_modules.values():
        pickler.register_pickle_by_value(module)
    return list(_file_modules)


def load_plugins(entries: Iterable[str], base_dir: str | Path | None = None) -> list[str]:
    """Import every plugin of a ``plugins:`` list (relative files from ``base_dir``); returns the canonical
    entries, as a run's saved config records them."""
    base = Path(base_dir) if base_dir is not None else None
    canonical = [resolve_plugin(e, base) for e in entries]
    for entry in canonical:
        load_plugin(entry)
    return canonical


def registered(name: object, table: Container[str]) -> bool:
    """Whether ``name`` is in the registry ``table``, after loading the installed plugins (once per process)
    on a miss: an entry point may register it. The one lookup the registries of every layer share."""
    if isinstance(name, str) and name not in table:
        load_entry_points()
    return isinstance(name, str) and name in table


def load_entry_points() -> list[str]:
    """Import the plugins installed packages declare in :data:`ENTRY_POINT_GROUP` (once per process)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return []
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    names = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = ep.load()
        except Exception as exc:
            raise ConfigError(
                f"plugin entry point {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}",
                hint=f"fix or uninstall the package that declares it in {ENTRY_POINT_GROUP!r}",
            ) from exc
        if callable(target) and not isinstance(target, type):
            target()
        names.append(ep.name)
    return names
