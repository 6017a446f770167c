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

import contextlib
import importlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from edgelearn import extensions
from edgelearn.errors import ConfigError
from edgelearn.extensions import (
    ENTRY_POINT_GROUP,
    load_entry_points,
    load_plugin,
    load_plugins,
    register_pickle_by_value,
    resolve_plugin,
)

if TYPE_CHECKING:
    from edgelearn.algorithms.base import Algorithm
    from edgelearn.config import Section

KINDS = ("algorithms", "models", "datasets", "partitioners", "executors", "hardware")
"""What ``edgelearn list`` can show."""


def register_algorithm(
    name: str, algorithm: type[Algorithm] | str, config: type[Section], *, replace: bool = False
) -> None:
    """Make ``algorithm.name: <name>`` run ``algorithm`` (a class or a lazy ``"module:Class"``) with its
    settings validated by ``config``, a :class:`~edgelearn.config.Section` whose ``name`` field is
    ``Literal[<name>]`` with that default. ``replace=True`` replaces an existing registration."""
    from edgelearn.algorithms import registry
    from edgelearn.run_config import register_algorithm_config

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


def register_hardware_profile(name: str, spec: Any, **kwargs: Any) -> Any:
    """Make ``hardware.<tier>.profile: <name>`` name a profile of one's own: a mapping like a catalog entry
    (``kind: dvfs`` with ``f_max_hz``, ``kappa``, ``cycles_per_flop``, or ``kind: accelerator`` with
    ``flops_per_s``, ``power_w``; ``p_max_w``; a non-empty ``source``). See
    :func:`edgelearn.system.catalog.register_hardware_profile` for the keywords and checks."""
    from edgelearn.system.catalog import register_hardware_profile as register

    return register(name, spec, **kwargs)


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """Undo every registration made inside the ``with`` block on leaving it (algorithms with their config
    classes, models, datasets, partitioners, hardware profiles, loaded plugin files), e.g. around a test:
    registries are process-wide, so a name registered by one test would otherwise leak into the next."""
    from edgelearn.algorithms import registry as algorithms
    from edgelearn.data.registry import DATASETS
    from edgelearn.models import registry as models
    from edgelearn.run_config import RunConfig
    from edgelearn.system import catalog

    part = importlib.import_module("edgelearn.data.partition")
    tables: list[dict[Any, Any]] = [
        algorithms.ALGORITHMS,
        DATASETS,
        part.PARTITION_METHODS,
        part._PLUGINS,
        models._SPECS,
        catalog._REGISTERED,
        extensions._loaded,
    ]
    saved = [dict(t) for t in tables]
    field = RunConfig.model_fields["algorithm"]
    try:
        yield
    finally:
        for table, copy in zip(tables, saved):
            table.clear()
            table.update(copy)
        if RunConfig.model_fields["algorithm"] is not field:
            RunConfig.model_fields["algorithm"] = field
            RunConfig.model_rebuild(force=True)


def _check_new(name: str, table: Iterable[str], what: str, replace: bool) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"{what} name {name!r} must be an identifier (letters, digits, underscores)")
    if name in table and not replace:
        raise ConfigError(
            f"{what} {name!r} is already registered",
            hint="pick another name, or pass replace=True to replace it on purpose",
        )


# ------------------------------------------------------------------------------------------- listing
def available(kind: str) -> list[tuple[str, str]]:
    """``(name, one-line description)`` of everything of one kind (:data:`KINDS`), plugins included."""
    load_entry_points()
    if kind == "algorithms":
        from edgelearn.algorithms.registry import ALGORITHMS
        from edgelearn.run_config import algorithm_config

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
    "isolated",
    "load_entry_points",
    "load_plugin",
    "load_plugins",
    "resolve_plugin",
    "register_algorithm",
    "register_dataset",
    "register_hardware_profile",
    "register_model",
    "register_partitioner",
    "register_pickle_by_value",
]
