"""Extend edgelearn from your own code: algorithms, models, datasets, partitioners and hardware profiles.

The public way in. A plugin is a Python module (or a ``.py`` file) that calls the ``register_*`` functions
below when imported. Three ways to load one, none of which touches the package:

* a ``plugins:`` list in a run config, naming modules (``mypkg.fedprox``) or ``.py`` files (relative to the
  config file): ``edgelearn run`` imports them before validating the rest of the config;
* an installed package declaring an entry point in the group ``edgelearn.plugins`` (the module is imported,
  or, for an entry point naming a callable, the callable is called), loaded the first time a name is not
  found and by ``edgelearn list``;
* calling :func:`load_plugins` or the ``register_*`` functions from a script.

A plugin loaded from a ``.py`` file is imported under a synthetic module name (``edgelearn_plugin_<hash>``)
that other processes cannot import, so its functions and classes are registered with cloudpickle to travel
by value: a Ray worker then unpickles a plugin's loss, model factory or dataclass without the file
(:func:`register_pickle_by_value`; the Ray executor registers file plugins loaded before Ray was imported).

Registration validates what it is given (a duplicate name, an algorithm config that is not a config
``Section`` with ``name: Literal[<name>]``, a loader that is not callable) and fails with a
:class:`~edgelearn.errors.ConfigError` naming the problem. The built-ins are registered through the same
tables, so a plugin reaches everything a built-in does (the design of FedJAX's ``for_each_client`` and
Flower's strategies: a small class per algorithm over shared machinery).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from edgelearn.errors import ConfigError

if TYPE_CHECKING:
    from edgelearn.algorithms.base import Algorithm
    from edgelearn.config import Section

ENTRY_POINT_GROUP = "edgelearn.plugins"
"""The Python entry-point group installed packages use to declare edgelearn plugins."""

KINDS = ("algorithms", "models", "datasets", "partitioners", "executors", "hardware")
"""What ``edgelearn list`` can show."""

_loaded: dict[str, str] = {}
"""Plugin reference -> the module name it was imported as (so a plugin is imported once)."""
_entry_points_loaded = False
_file_modules: dict[str, ModuleType] = {}
"""Plugins imported from ``.py`` files, by their synthetic module name: cloudpickle ships them by value."""


def register_algorithm(
    name: str, algorithm: type[Algorithm] | str, config: type[Section], *, replace: bool = False
) -> None:
    """Make ``algorithm.name: <name>`` run ``algorithm`` (a class or a lazy ``"module:Class"``) with its
    settings validated by ``config``, a :class:`~edgelearn.config.Section` whose ``name`` field is
    ``Literal[<name>]`` with that default. ``replace=True`` replaces an existing registration."""
    from edgelearn.algorithms import registry
    from edgelearn.config import register_algorithm_config

    if name in registry.ALGORITHMS and not replace:
        raise ConfigError(
            f"algorithm {name!r} is already registered",
            hint="pick another name, or pass replace=True to replace it on purpose",
        )
    if not (isinstance(algorithm, str) or isinstance(algorithm, type)):
        raise ConfigError(f"register_algorithm({name!r}): algorithm must be a class or 'module:Class'")
    register_algorithm_config(name, config, replace=replace)
    registry.register(name, algorithm)


def register_model(name: str, builder: Callable[..., Any], *, replace: bool = False, **defaults: Any) -> None:
    """Make ``model.name: <name>`` build ``builder(input_shape, num_classes, **options)``; ``defaults`` are
    the keyword options it accepts with their default values (any other option is refused)."""
    from edgelearn.models import registry

    _check_new(name, registry.model_names(), "model", replace)
    if not callable(builder):
        raise ConfigError(f"register_model({name!r}): builder must be callable")
    registry.register_model(name, builder, defaults)


def register_dataset(
    name: str,
    loader: Callable[..., Any],
    *,
    options: Sequence[str] = (),
    uses_data_dir: bool = True,
    summary: str = "",
    replace: bool = False,
) -> None:
    """Make ``data.dataset: <name>`` load ``loader(data_dir, seed, **options)``, which returns a
    :class:`~edgelearn.data.DatasetBundle` (e.g. from :func:`edgelearn.data.dataset.make_bundle`). The
    config's ``data.options`` mapping is passed as keyword options, checked against ``options``."""
    from edgelearn.data.registry import DATASETS, DatasetSpec

    _check_new(name, DATASETS, "dataset", replace)
    if not callable(loader):
        raise ConfigError(f"register_dataset({name!r}): loader must be callable")
    DATASETS[name] = DatasetSpec(loader, tuple(options), uses_data_dir=uses_data_dir, summary=summary)


def register_partitioner(
    name: str, split: Callable[..., Any], *, options: Sequence[str] = (), replace: bool = False
) -> None:
    """Make ``partition.method: <name>`` call ``split(labels, num_devices, rng, **options)``, which returns
    one index array per device; ``partition.options`` is passed, checked against ``options``. The result is
    validated like the built-ins' (indices in range, no sample on two devices)."""
    # By module path: ``edgelearn.data.partition`` as an attribute is the package's partition() function.
    from edgelearn.data.partition import PARTITION_METHODS
    from edgelearn.data.partition import register_partitioner as add_partitioner

    _check_new(name, PARTITION_METHODS, "partitioner", replace)
    if not callable(split):
        raise ConfigError(f"register_partitioner({name!r}): split must be callable")
    add_partitioner(name, split, tuple(options))


def _check_new(name: str, table: Iterable[str], what: str, replace: bool) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"{what} name {name!r} must be an identifier (letters, digits, underscores)")
    if name in table and not replace:
        raise ConfigError(
            f"{what} {name!r} is already registered",
            hint="pick another name, or pass replace=True to replace it on purpose",
        )


# ------------------------------------------------------------------------------------------- loading
def resolve_plugin(entry: str, base_dir: Path | None) -> str:
    """The canonical form of one ``plugins:`` entry: an absolute path for a ``.py`` file (relative entries
    are taken from ``base_dir``, the config file's folder), the module name otherwise."""
    if not isinstance(entry, str) or not entry.strip():
        raise ConfigError(f"plugins: entry {entry!r} is not a module name or a .py file")
    if entry.endswith(".py") or "/" in entry or "\\" in entry:
        path = Path(entry).expanduser()
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        return str(path.resolve())
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


# ------------------------------------------------------------------------------------------- listing
def available(kind: str) -> list[tuple[str, str]]:
    """``(name, one-line description)`` of everything of one kind (:data:`KINDS`), plugins included."""
    load_entry_points()
    if kind == "algorithms":
        from edgelearn.algorithms.registry import ALGORITHMS
        from edgelearn.config import algorithm_config

        return [(n, _first_line(algorithm_config(n).__doc__)) for n in ALGORITHMS]
    if kind == "models":
        from edgelearn.models.registry import model_names, model_summary

        return [(n, model_summary(n)) for n in model_names()]
    if kind == "datasets":
        from edgelearn.data.registry import DATASETS

        return [
            (n, f"{spec.summary or _first_line(spec.loader.__doc__)} ({_options(spec.options)})".strip())
            for n, spec in DATASETS.items()
        ]
    if kind == "partitioners":
        from edgelearn.data.partition import PARTITION_METHODS

        return [(n, _options(opts)) for n, opts in PARTITION_METHODS.items()]
    if kind == "executors":
        from edgelearn.engine.executor import EXECUTOR_SUMMARIES

        return list(EXECUTOR_SUMMARIES.items())
    if kind == "hardware":
        from edgelearn.system.catalog import catalog_summaries

        return catalog_summaries()
    raise ConfigError(f"cannot list {kind!r}", hint=f"use one of: {', '.join(KINDS)}")


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0].strip() if (doc or "").strip() else ""


def _options(options: Sequence[str]) -> str:
    return f"options: {', '.join(options)}" if options else "no options"


__all__ = [
    "ENTRY_POINT_GROUP",
    "KINDS",
    "available",
    "load_entry_points",
    "load_plugins",
    "register_algorithm",
    "register_dataset",
    "register_model",
    "register_partitioner",
    "register_pickle_by_value",
]
