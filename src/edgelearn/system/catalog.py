"""Named hardware profiles: the catalog shipped as package data (``catalog.yaml``: the paper's DVFS nodes,
edge boards, a Xeon edge server, datacenter GPUs, each citing its datasheet or measurement) plus profiles
registered at run time with :func:`register_hardware_profile`, and the per-tier defaults built from them.

Tier defaults (:data:`TIER_DEFAULT_PROFILES`): devices and edge servers are the paper's DVFS nodes (Lyu et
al., arXiv:2404.00836: its DVFS compute model and simulation settings), which the two-stage planner needs;
the cloud is an A100, an accelerator, because a datacenter prices a FLOP at ~1e-11 J, not at the ~1e-8 J a
20 GHz DVFS CPU with the paper's kappa would.

:func:`resolve_tier` turns what a config gives for a tier (a profile, a kind, numbers) into the full set of
fields; the config layer (``edgelearn.config.hardware``) calls it, so a saved config.yaml shows each tier's
profile and every number used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any

import numpy as np

from edgelearn.errors import ConfigError
from edgelearn.system.hardware import (
    DEVICE_P_MAX_W,
    DVFS,
    DVFS_DEFAULTS,
    KIND_FIELDS,
    KINDS,
    NUMERIC_FIELDS,
    SERVER_P_MAX_W,
    FloatOrRange,
    HardwareFieldError,
    HardwareProfile,
    HardwareSpec,
    check_fields,
)
from edgelearn.system.topology import TIER_CODE, Tier, Topology
from edgelearn.yamlsafe import load_yaml

CATALOG_FILE = "catalog.yaml"
"""The built-in catalog, package data next to this module."""

TIER_DEFAULT_PROFILES: dict[Tier, str] = {
    Tier.DEVICE: "paper_device",
    Tier.EDGE: "paper_edge",
    Tier.CLOUD: "a100",
}
"""The profile each tier has when a config names none (see the module docstring for why)."""

TIER_P_MAX_W: dict[Tier, float] = {
    Tier.DEVICE: DEVICE_P_MAX_W,
    Tier.EDGE: SERVER_P_MAX_W,
    Tier.CLOUD: SERVER_P_MAX_W,
}
"""Transmit power limit of a tier whose profile gives none (a compute profile says nothing of the radio)."""

TEXT_FIELDS = ("source", "assumption")
"""Text an entry carries beside its kind and numbers: where the numbers come from and what was assumed."""

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
"""Profile names: lower-case snake case, so ``--set hardware.cloud.profile=NAME`` reads back as NAME."""


@dataclass(frozen=True)
class HardwareEntry:
    """One named profile: its kind, numbers (fixed or ``(low, high)`` ranges; ``p_max_w`` optional), the
    source of the numbers and the assumptions made on top of it."""

    name: str
    kind: str
    values: Mapping[str, FloatOrRange]
    source: str
    assumption: str = ""
    builtin: bool = field(default=False, compare=False)

    def spec(self, tier: Tier | str) -> HardwareSpec:
        """The profile as the hardware of ``tier`` (the tier's radio when the profile has no ``p_max_w``)."""
        return HardwareSpec(kind=self.kind, **{"p_max_w": TIER_P_MAX_W[Tier(tier)], **self.values})

    def node(self, tier: Tier | str = Tier.CLOUD) -> HardwareProfile:
        """One node of this profile (ranges not allowed): its ``seconds_per_flop`` and ``joules_per_flop``."""
        values: dict[str, Any] = {"p_max_w": TIER_P_MAX_W[Tier(tier)], **self.values}
        return HardwareProfile(kind=self.kind, **values)


def _entry(name: object, data: object, *, builtin: bool, where: str) -> HardwareEntry:
    """Validate one profile given as a mapping (kind, numbers, source, assumption) into an entry."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or load_yaml(name) != name:
        raise ConfigError(
            f"{where}: profile name {name!r} is not valid",
            hint="use lower-case letters, digits and underscores, starting with a letter (e.g. my_gpu)",
        )
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} {name!r}: expected a mapping of kind, numbers and source, got {data!r}")
    unknown = sorted(str(k) for k in data if k not in ("kind", *NUMERIC_FIELDS, *TEXT_FIELDS))
    if unknown:
        raise ConfigError(
            f"{where} {name!r}: unknown key(s) {', '.join(unknown)}",
            hint=f"allowed: kind, {', '.join(NUMERIC_FIELDS)}, {', '.join(TEXT_FIELDS)}",
        )
    text = {k: data.get(k, "") for k in TEXT_FIELDS}
    if not isinstance(text["source"], str) or not text["source"].strip():
        raise ConfigError(
            f"{where} {name!r}: `source` must say where the numbers come from (a datasheet, a paper, a "
            "measurement)",
            hint="add source: '<document, URL or measurement>'",
        )
    if not isinstance(text["assumption"], str):
        raise ConfigError(f"{where} {name!r}: `assumption` must be text, got {text['assumption']!r}")
    kind = data.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where} {name!r}: `kind` is {kind!r}; allowed: {', '.join(KINDS)}")
    numbers = {k: v for k, v in data.items() if k in NUMERIC_FIELDS}
    try:
        values = check_fields(kind, numbers, need_radio=False)
    except HardwareFieldError as exc:
        raise ConfigError(f"{where} {name!r}: {exc.problem}", hint=exc.hint) from None
    return HardwareEntry(
        name=name,
        kind=str(kind),
        values=MappingProxyType(values),
        source=" ".join(text["source"].split()),
        assumption=" ".join(str(text["assumption"]).split()),
        builtin=builtin,
    )


def _load_builtin() -> dict[str, HardwareEntry]:
    """The entries of ``catalog.yaml`` (package data), validated."""
    text = resources.files("edgelearn.system").joinpath(CATALOG_FILE).read_text(encoding="utf-8")
    data = load_yaml(text)
    profiles = data.get("profiles") if isinstance(data, Mapping) else None
    if not isinstance(profiles, Mapping):
        raise ConfigError(f"edgelearn/system/{CATALOG_FILE}: expected a top-level `profiles:` mapping")
    return {
        str(name): _entry(name, entry, builtin=True, where=f"edgelearn/system/{CATALOG_FILE}: profile")
        for name, entry in profiles.items()
    }


_BUILTIN: dict[str, HardwareEntry] = _load_builtin()
_REGISTERED: dict[str, HardwareEntry] = {}


def hardware_profiles() -> dict[str, HardwareEntry]:
    """Every known profile by name: the built-in catalog, then those registered at run time."""
    return {**_BUILTIN, **_REGISTERED}


def hardware_profile(name: object) -> HardwareEntry:
    """The profile called ``name``; a :class:`HardwareFieldError` on ``profile`` listing the known names."""
    known = hardware_profiles()
    if not isinstance(name, str) or name not in known:
        raise HardwareFieldError(
            "profile",
            f"unknown hardware profile {name!r}; known profiles: {', '.join(sorted(known))}",
            hint="pick one of them, give the numbers instead (kind, flops_per_s, power_w, ...), or register "
            "your own with edgelearn.system.register_hardware_profile",
        )
    return known[name]


def register_hardware_profile(
    name: str,
    spec: Mapping[str, Any] | HardwareSpec | HardwareProfile,
    *,
    source: str | None = None,
    assumption: str | None = None,
    replace: bool = False,
) -> HardwareEntry:
    """Add a named profile that configs can then use (``hardware.<tier>.profile: name``) in this process.

    ``spec`` is a mapping like a catalog entry (``kind``, the numbers of that kind, optional ``p_max_w``,
    ``source``, ``assumption``) or a :class:`HardwareSpec` / :class:`HardwareProfile` (its numbers and kind,
    ``p_max_w`` included; then pass ``source=``). Every profile needs a non-empty source. The name must be
    new, unless ``replace=True`` replaces a profile registered earlier (built-in names are never replaced:
    the tier defaults rest on them), and in lower-case snake case. Returns the validated entry.
    Register before building configs that name it; a config validated earlier keeps the numbers it got.
    """
    if isinstance(spec, (HardwareSpec, HardwareProfile)):
        data: dict[str, Any] = {"kind": spec.kind}
        data.update({k: getattr(spec, k) for k in NUMERIC_FIELDS if getattr(spec, k) is not None})
    elif isinstance(spec, Mapping):
        data = dict(spec)
    else:
        raise ConfigError(
            f"register_hardware_profile({name!r}): expected a mapping, HardwareSpec or HardwareProfile, got "
            f"{type(spec).__name__}"
        )
    for key, value in (("source", source), ("assumption", assumption)):
        if value is None:
            continue
        if key in data and data[key] != value:
            raise ConfigError(f"register_hardware_profile({name!r}): `{key}` given twice, differently")
        data[key] = value
    if isinstance(name, str) and (name in _BUILTIN or (name in _REGISTERED and not replace)):
        raise ConfigError(
            f"register_hardware_profile: a hardware profile named {name!r} already exists",
            hint="choose another name"
            + ("" if name in _BUILTIN else ", or pass replace=True to replace it on purpose"),
        )
    entry = _entry(name, data, builtin=False, where="register_hardware_profile: profile")
    _REGISTERED[entry.name] = entry
    return entry


def catalog_summaries() -> list[tuple[str, str]]:
    """``(name, one line)`` per known profile, for listings (``edgelearn list hardware``): kind, numbers and,
    for fixed numbers, the energy per FLOP at full speed."""
    out = []
    for name, entry in hardware_profiles().items():
        numbers = ", ".join(f"{k}={_show(v)}" for k, v in entry.values.items())
        fixed = not any(isinstance(v, tuple) for v in entry.values.values())
        cost = f"; {entry.node().joules_per_flop:.2g} J/FLOP" if fixed else ""
        out.append((name, f"{entry.kind}: {numbers}{cost}{'' if entry.builtin else ' (registered)'}"))
    return out


def _show(value: FloatOrRange) -> str:
    return f"[{value[0]:g}, {value[1]:g}]" if isinstance(value, tuple) else f"{value:g}"


def resolve_tier(tier: Tier | str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Every hardware field of ``tier`` from what a config gives (``profile``, ``kind``, numbers; None or
    absent = not given).

    The base is the named profile, else the tier's default profile (:data:`TIER_DEFAULT_PROFILES`) when
    ``kind`` is absent or the same as the default's, else no profile (a DVFS tier then assumes the paper's
    kappa and cycles_per_flop, an accelerator must give flops_per_s and power_w). Numbers given override the
    base's; a number of the other kind is an error, as is a ``kind`` that contradicts the named profile.
    ``p_max_w`` falls back to the tier's radio (:data:`TIER_P_MAX_W`). Returns ``profile`` (None without
    one), ``kind`` and every number of that kind present, plus ``p_max_w``. Raises
    :class:`HardwareFieldError` naming the key at fault.
    """
    tier = Tier(tier)
    name, kind = given.get("profile"), given.get("kind")
    numbers = {k: v for k, v in given.items() if k in NUMERIC_FIELDS and v is not None}
    unknown = [k for k in given if k not in ("profile", "kind", *NUMERIC_FIELDS)]
    if unknown:
        raise HardwareFieldError(unknown[0], f"`{unknown[0]}` is not a hardware field")
    if kind is not None and kind not in KINDS:
        raise HardwareFieldError("kind", f"got {kind!r}; allowed: {', '.join(KINDS)}")
    base: HardwareEntry | None
    if name is not None:
        base = hardware_profile(name)
        if kind is not None and kind != base.kind:
            raise HardwareFieldError(
                "kind",
                f"profile {name!r} is {base.kind} hardware, but kind is {kind!r}",
                hint=f"drop `kind`, or pick a {kind} profile",
            )
    else:
        default = hardware_profile(TIER_DEFAULT_PROFILES[tier])
        base = default if kind is None or kind == default.kind else None
    kind = base.kind if base is not None else kind
    other = next(k for k in KINDS if k != kind)
    for key in numbers:
        if key in KIND_FIELDS[other]:
            examples = ", ".join(n for n, e in _BUILTIN.items() if e.kind == other)
            raise HardwareFieldError(
                key,
                f"`{key}` is a field of {other} hardware, but hardware.{tier.value} is {kind} "
                f"({f'profile {base.name}' if base is not None else f'kind {kind}'})",
                hint=f"remove `{key}`, or make the tier {other}: `kind: {other}` with its numbers, or one of "
                f"the {other} profiles ({examples})",
            )
    start: dict[str, Any] = (
        dict(base.values) if base is not None else dict(DVFS_DEFAULTS if kind == DVFS else {})
    )
    values = check_fields(kind, {"p_max_w": TIER_P_MAX_W[tier], **start, **numbers}, need_radio=True)
    return {"profile": base.name if base is not None else None, "kind": kind, **values}


TIER_DEFAULTS: dict[Tier, HardwareSpec] = {
    tier: _BUILTIN[name].spec(tier) for tier, name in TIER_DEFAULT_PROFILES.items()
}
"""Hardware of each tier when nothing is configured (built-in profiles only)."""

DEVICE_DEFAULT = TIER_DEFAULTS[Tier.DEVICE]
"""End device: the paper's 1 GHz DVFS CPU, kappa 1e-28, 0.1 W (profile ``paper_device``). For heterogeneity
use e.g. ``HardwareSpec(f_max_hz=(0.5e9, 1e9))``."""

EDGE_DEFAULT = TIER_DEFAULTS[Tier.EDGE]
"""Edge server: the paper's 5 GHz DVFS CPU, kappa 1e-28, 1 W transmit power (profile ``paper_edge``)."""

CLOUD_DEFAULT = TIER_DEFAULTS[Tier.CLOUD]
"""Cloud: an A100 SXM4 (profile ``a100``; ~6.4e-12 J/FLOP) with a 1 W radio toward attached devices."""


def sample_profiles(
    topology: Topology, specs: Mapping[Tier | str, HardwareSpec] | None, rng: np.random.Generator
) -> list[HardwareProfile]:
    """One profile per node id, drawing every range uniformly per node; tiers missing from ``specs`` use
    :data:`TIER_DEFAULTS`. Deterministic for a given ``rng`` (draw order: tier, then
    field in :data:`NUMERIC_FIELDS` order, then node id)."""
    chosen = dict(TIER_DEFAULTS)
    for key, spec in (specs or {}).items():
        try:
            tier = Tier(key)
        except ValueError:
            raise ConfigError(
                f"hardware: unknown tier {key!r}", hint=f"use one of {[t.value for t in Tier]}"
            ) from None
        if not isinstance(spec, HardwareSpec):
            raise ConfigError(f"hardware.{tier.value}: expected a HardwareSpec, got {type(spec).__name__}")
        chosen[tier] = spec
    codes = topology.tier_codes
    columns = {name: np.full(topology.num_nodes, np.nan) for name in NUMERIC_FIELDS}
    kinds = np.empty(topology.num_nodes, dtype=object)
    for tier in Tier:
        ids = np.flatnonzero(codes == TIER_CODE[tier])
        kinds[ids] = chosen[tier].kind
        for name, column in columns.items():
            value = getattr(chosen[tier], name)
            if value is None:
                continue
            column[ids] = (
                rng.uniform(value[0], value[1], size=ids.size) if isinstance(value, tuple) else value
            )
    return [
        HardwareProfile(
            kind=str(kinds[i]),
            **{name: None if np.isnan(column[i]) else float(column[i]) for name, column in columns.items()},
        )
        for i in range(topology.num_nodes)
    ]
