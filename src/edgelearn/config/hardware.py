"""The ``hardware:`` config section: per tier (device, edge, cloud) a named profile and/or numbers.

A tier names a profile of the catalog (``edgelearn/system/catalog.yaml`` or one registered with
``edgelearn.system.register_hardware_profile``), e.g. ``hardware.cloud: {profile: h100}``, and/or gives
numbers of one of two kinds (``edgelearn/system/hardware.py``):

* ``kind: dvfs`` (the paper's CPU model): ``f_max_hz``, ``kappa``, ``cycles_per_flop``;
* ``kind: accelerator`` (GPU, NPU, multi-core server): ``flops_per_s``, ``power_w``, optional
  ``idle_power_w`` (recorded, never charged);

plus ``p_max_w``, the transmit power limit. Numbers given beside a profile override its values; any number
may be a ``[low, high]`` range, drawn uniformly per node. Without a profile a tier starts from its default
(devices ``paper_device``, edge servers ``paper_edge``, the cloud ``a100``), unless ``kind`` says otherwise.
A number of the other kind, an unknown profile or a kind that contradicts the profile is a ConfigError
naming the key.

Validation resolves every tier in place: the validated section (and so the run directory's config.yaml)
holds each tier's profile, kind and every number used, so a resumed run notices a changed catalog value.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_serializer, model_validator
from pydantic_core import PydanticCustomError

from edgelearn.config.base import SECTION_KEY_PROBLEM, FloatOrRange, Section

NonNegFloat = Annotated[float, Field(ge=0)]
NonNegFloatOrRange = NonNegFloat | tuple[NonNegFloat, NonNegFloat]
"""A number or [low, high] range that may be 0 (idle power)."""


class HardwareTierConfig(Section):
    """Hardware of the device tier (the base of the edge and cloud sections): a profile and/or numbers;
    see the module docstring. After validation every field of the tier's kind is filled in."""

    tier: ClassVar[str] = "device"

    profile: str | None = Field(
        None, description="catalog name, e.g. paper_device, raspberry_pi_4, jetson_orin_nano, a100"
    )
    kind: Literal["dvfs", "accelerator"] | None = Field(
        None,
        description="dvfs (clock, kappa, cycles/FLOP) or accelerator (FLOP/s, power); default: the profile's",
    )
    f_max_hz: FloatOrRange | None = Field(None, description="dvfs: max CPU clock (paper: devices 1 GHz)")
    kappa: FloatOrRange | None = Field(
        None, description="dvfs: effective switched capacitance (paper: 1e-28)"
    )
    cycles_per_flop: FloatOrRange | None = Field(None, description="dvfs: 0.25 = 4 FLOPs per cycle (SIMD)")
    flops_per_s: FloatOrRange | None = Field(None, description="accelerator: sustained FLOP/s")
    power_w: FloatOrRange | None = Field(None, description="accelerator: active power while computing")
    idle_power_w: NonNegFloatOrRange | None = Field(
        None, description="accelerator: idle power (recorded with the profile, never charged)"
    )
    p_max_w: FloatOrRange | None = Field(
        None, description="max transmit power; default the profile's, else devices 0.1 W, servers 1 W"
    )

    @model_validator(mode="after")
    def _resolve(self) -> HardwareTierConfig:
        """Fill every field from the profile, the tier default and the numbers given (``resolve_tier``)."""
        # Imported here, not at the top: edgelearn.system pulls in numpy and the cost model, which loading a
        # config file (the CLI's start-up) does not otherwise need.
        from edgelearn.system.catalog import resolve_tier
        from edgelearn.system.hardware import HardwareFieldError

        given = {
            name: getattr(self, name) for name in type(self).model_fields if getattr(self, name) is not None
        }
        try:
            resolved = resolve_tier(self.tier, given)
        except HardwareFieldError as exc:
            message = exc.problem if exc.hint is None else f"{exc.problem} (how to fix: {exc.hint})"
            raise PydanticCustomError(SECTION_KEY_PROBLEM, message, {"key": exc.key}) from None
        for name in type(self).model_fields:
            object.__setattr__(self, name, resolved.get(name))
        return self

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: Any) -> Any:
        """Dumps leave out the fields that do not apply to the tier's kind (None) instead of writing nulls."""
        data = handler(self)
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


class EdgeHardwareConfig(HardwareTierConfig):
    """Edge servers: by default the paper's 5 GHz DVFS CPU (profile paper_edge) with a 1 W downlink."""

    tier: ClassVar[str] = "edge"


class CloudHardwareConfig(HardwareTierConfig):
    """The cloud: by default an A100 (profile a100), an accelerator, with a 1 W radio for attached devices."""

    tier: ClassVar[str] = "cloud"


class HardwareConfig(Section):
    """Per-tier hardware; defaults: devices paper_device, edge servers paper_edge (Lyu et al.,
    arXiv:2404.00836: 1 GHz / 5 GHz DVFS CPUs, kappa 1e-28), the cloud an A100 accelerator."""

    device: HardwareTierConfig = Field(default_factory=HardwareTierConfig)
    edge: EdgeHardwareConfig = Field(default_factory=EdgeHardwareConfig)
    cloud: CloudHardwareConfig = Field(default_factory=CloudHardwareConfig)
