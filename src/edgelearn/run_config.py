"""The whole run's config: the shared sections plus one algorithm's, assembled above the algorithms.

:class:`RunConfig` validates ``algorithm:`` against a discriminated union of every algorithm's config class:
the built-ins' (each in ``edgelearn/algorithms/<name>/config.py``, listed in
:data:`BUILTIN_ALGORITHM_CONFIGS`) and those plugins add with :func:`register_algorithm_config`. Loading a
config imports pydantic and the config classes only, never torch. Errors name the key path, what was wrong
and the allowed values (:mod:`edgelearn.config.loading`).
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError
from pydantic.fields import FieldInfo

from edgelearn.algorithms.demlearn.config import DemLearnConfig
from edgelearn.algorithms.fedagg.config import FedAggConfig
from edgelearn.algorithms.fedavg.config import FedAvgConfig
from edgelearn.algorithms.feddkc.config import FedDKCConfig
from edgelearn.algorithms.fedgkt.config import FedGKTConfig
from edgelearn.algorithms.hierfavg.config import HierFAVGConfig
from edgelearn.algorithms.two_stage.config import TwoStageConfig
from edgelearn.config.base import NonNegInt, Section
from edgelearn.config.faults import FaultsConfig
from edgelearn.config.hardware import HardwareConfig
from edgelearn.config.loading import (
    apply_overrides,
    config_problems,
    format_validation_error,
    parse_override,
    read_yaml,
    section_type,
    unknown_everywhere,
)
from edgelearn.config.plan import PlanConfig
from edgelearn.config.sections import (
    ChannelConfig,
    DataConfig,
    EngineConfig,
    EvalConfig,
    ModelConfig,
    OutputConfig,
    PartitionConfig,
    TopologyConfig,
)
from edgelearn.errors import ConfigError
from edgelearn.extensions import registered
from edgelearn.yamlsafe import dump_yaml

log = logging.getLogger(__name__)

BUILTIN_ALGORITHM_CONFIGS: tuple[type[Section], ...] = (
    FedAvgConfig,
    HierFAVGConfig,
    TwoStageConfig,
    FedAggConfig,
    FedGKTConfig,
    FedDKCConfig,
    DemLearnConfig,
)
"""The built-in algorithms' config classes, each with ``name: Literal[<algorithm>]``."""

AlgorithmConfig = Annotated[
    typing.Union[BUILTIN_ALGORITHM_CONFIGS],  # noqa: UP007 - a Union of a runtime tuple of classes
    Field(discriminator="name"),
]


class RunConfig(Section):
    """A whole experiment."""

    name: str = "run"
    seed: NonNegInt = 0
    plugins: list[str] = Field(
        default_factory=list,
        description="modules or .py files (relative to the config file) registering algorithms, models, "
        "datasets, partitioners or hardware profiles; imported before the rest is validated",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="torch device; auto = cuda if available"
    )
    executor: Literal["auto", "serial", "vmap", "ray"] = "auto"
    engine: EngineConfig = EngineConfig()
    data: DataConfig = DataConfig()
    partition: PartitionConfig = PartitionConfig()
    topology: TopologyConfig = TopologyConfig(devices=100)
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    channel: ChannelConfig = ChannelConfig()
    model: ModelConfig = ModelConfig()
    algorithm: AlgorithmConfig = FedAvgConfig()
    eval: EvalConfig = EvalConfig()
    output: OutputConfig = OutputConfig()
    faults: FaultsConfig = FaultsConfig()
    plan: PlanConfig | None = Field(
        None, description="plan clocks and transmit powers before the run (planning/tree); None = full speed"
    )


def algorithm_configs() -> list[type[Section]]:
    """Every config class ``algorithm:`` validates against now (built-ins and plugins')."""
    return list(section_type(RunConfig.model_fields["algorithm"].annotation).members)


def _algorithm_fields(name: str) -> set[str] | None:
    """Field names of the algorithm config class registered as ``name`` (None if no such algorithm)."""
    members = algorithm_configs()
    for member in members:
        if member.model_fields["name"].default == name:
            return set(member.model_fields)
    return None


def algorithm_config(name: str) -> type[Section]:
    """The config class of algorithm ``name`` (ConfigError naming the known ones otherwise)."""
    for member in algorithm_configs():
        if member.model_fields["name"].default == name:
            return member  # type: ignore[no-any-return]
    raise ConfigError(f"no algorithm {name!r}", hint=f"use one of: {', '.join(algorithm_names())}")


def register_algorithm_config(name: str, config: type[Section], *, replace: bool = False) -> None:
    """Add ``config`` to the classes ``algorithm:`` validates against (what :func:`edgelearn.plugins.
    register_algorithm` calls). It must be a :class:`Section` whose ``name`` field is ``Literal[name]``
    with default ``name``. The RunConfig schema is rebuilt in place, so existing references stay valid."""
    if not (isinstance(config, type) and issubclass(config, Section)):
        raise ConfigError(
            f"algorithm {name!r}: its config must be a subclass of edgelearn.config.Section, got {config!r}",
            hint="class MyConfig(Section): name: Literal['my_algo'] = 'my_algo'; ...",
        )
    field = config.model_fields.get("name")
    if field is None or field.default != name or typing.get_args(field.annotation) != (name,):
        raise ConfigError(
            f"algorithm {name!r}: declare {config.__name__}.name as `name: Literal[{name!r}] = {name!r}`",
            hint="the name field is how a config file picks the algorithm",
        )
    current = algorithm_configs()
    members = [m for m in current if m.model_fields["name"].default != name]
    if len(members) < len(current) and not replace:
        raise ConfigError(
            f"algorithm {name!r} already has a config class",
            hint="pick another name, or pass replace=True to replace it on purpose",
        )
    union = Annotated[typing.Union[tuple([*members, config])], Field(discriminator="name")]  # noqa: UP007
    old = RunConfig.model_fields["algorithm"]
    RunConfig.model_fields["algorithm"] = FieldInfo.from_annotated_attribute(union, old.default)
    RunConfig.model_rebuild(force=True)


def algorithm_names() -> list[str]:
    """Names accepted by ``algorithm.name``."""
    return [m.model_fields["name"].default for m in algorithm_configs()]


def _switch_algorithm(
    original: Any, algo: dict[str, Any], overrides: Sequence[str], source: str
) -> dict[str, Any]:
    """The algorithm section after ``--set algorithm.name=X`` switched algorithms on a shared config.

    Keys from the file that algorithm X does not know are dropped (and logged) only when another algorithm
    knows them, nested keys included: a key no algorithm knows stays and fails validation (a typo), and so
    does a key given explicitly by ``--set algorithm.KEY=...`` (the user asked for it), so nothing the user
    wrote is silently ignored. Without a switch (no such override, or the same name as the file's) the
    section is returned unchanged.
    """
    parsed = [parse_override(o) for o in overrides]
    if not any(path == ["algorithm", "name"] for path, _ in parsed):
        return algo
    name = str(algo.get("name"))
    known = _algorithm_fields(name)
    was = original.get("name", "fedavg") if isinstance(original, Mapping) else "fedavg"
    if known is None or str(was) == name:
        return algo
    explicit: set[Any] = set()
    for path, value in parsed:
        if path[0] == "algorithm" and len(path) > 1:
            explicit.add(path[1])
        elif path == ["algorithm"] and isinstance(value, dict):
            explicit.update(value)
    members = algorithm_configs()
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for key, value in algo.items():
        owners = [m for m in members if key in m.model_fields] if isinstance(key, str) else []
        if key in known or key in explicit or not owners:
            kept[key] = value  # known: used; explicit or nobody's: validation names it with the allowed keys
            continue
        typos = unknown_everywhere(owners, key, value, f"algorithm.{key}")
        if typos:
            unknown += typos
        else:
            dropped.append(key)
    if unknown:
        raise config_problems(unknown, source)
    if dropped:
        log.info("algorithm switched to %s: ignoring keys only other algorithms use: %s", name, dropped)
    return kept


def build_config(
    data: Mapping[str, Any],
    overrides: Iterable[str] = (),
    source: str = "config",
    base_dir: str | Path | None = None,
) -> RunConfig:
    """Validate a raw mapping (plus overrides) into a RunConfig or raise a readable ConfigError.

    The ``plugins`` it names are imported first (``.py`` files relative to ``base_dir``, the config file's
    folder; recorded as absolute paths), so their algorithms, models and datasets validate like built-ins.
    """
    overrides = list(overrides)
    merged = apply_overrides(data, overrides)
    plugins = merged.get("plugins")
    if plugins is not None:
        if not isinstance(plugins, list):
            problem = f"`plugins` must be a list of modules or .py files (got {plugins!r})"
            raise config_problems([problem], source)
        from edgelearn.extensions import load_plugins

        try:
            merged["plugins"] = load_plugins(plugins, base_dir)
        except ConfigError as exc:  # name the key, keep the plugin's own fix
            raise ConfigError(
                f"invalid configuration in {source}:\n  - `plugins`: {exc.message}", hint=exc.hint
            ) from None
    algo = merged.get("algorithm")
    if isinstance(algo, dict) and "name" in algo:
        registered(algo["name"], algorithm_names())  # an installed package may provide it
    if isinstance(algo, dict):
        algo = merged["algorithm"] = _switch_algorithm(data.get("algorithm"), algo, overrides, source)
    if isinstance(algo, dict) and "name" not in algo:
        merged["algorithm"] = {"name": "fedavg", **algo}
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as exc:
        raise format_validation_error(exc, source, RunConfig, algorithm_names()) from None
    except (TypeError, ValueError) as exc:  # validators on odd inputs (e.g. unhashable keys)
        raise ConfigError(f"invalid configuration in {source}: {exc}") from None


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """Read, override and validate a YAML config file (its ``plugins`` are found relative to it)."""
    return build_config(read_yaml(path), overrides, source=str(path), base_dir=Path(path).resolve().parent)


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML (tuples as lists), loadable again by :func:`load_config`."""
    return dump_yaml(cfg.model_dump(mode="json"), sort_keys=False)
