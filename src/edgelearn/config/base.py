"""The base of every config section (unknown keys are errors, a boolean is never a number) and the numeric
field types the sections share.

Every section of the package and of plugins derives from :class:`Section`: the shared sections in this
package, each algorithm's own in ``edgelearn/algorithms/<name>/config.py``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

BOOL_NOT_NUMBER = "bool_not_number"
"""Error type of a boolean given for a number (its context names the key inside the section)."""

SECTION_KEY_PROBLEM = "section_key_problem"
"""Error type of a check across a section's fields that blames one key (its context names the key, and
``format_validation_error`` appends it to the section's path, as for :data:`BOOL_NOT_NUMBER`)."""

PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
# A value that may be fixed or drawn per node uniformly from [low, high].
FloatOrRange = PositiveFloat | tuple[PositiveFloat, PositiveFloat]


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment, and a
    boolean is never taken as a number (pydantic's lax mode reads ``rounds: true`` as 1)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    renamed: ClassVar[Mapping[str, str]] = {}
    """Old key -> where it lives now (a dotted path inside the section): giving the old key is an error
    naming the new one, so a config written for an earlier version fails loudly instead of being ignored."""

    @model_validator(mode="before")
    @classmethod
    def _no_bool_as_number(cls, data: Any) -> Any:
        """Reject ``true``/``false`` where a field (or an item of its list/tuple) wants a number.

        Done before pydantic's own parsing so everything else stays lax: YAML's ``5`` or the string
        ``"1e6"`` (PyYAML reads ``1e6`` as a string) still parse, and ints stay valid for float fields. A
        model-level check because pydantic allows no field "before" validator on the algorithm's
        discriminator ``name``; the error carries the key, which :func:`format_validation_error` appends.
        """
        if isinstance(data, Mapping):
            for key, value in data.items():
                if isinstance(key, str) and key in cls.renamed:
                    raise PydanticCustomError(
                        SECTION_KEY_PROBLEM,
                        "this key moved to `{new}`: write `{new}: ...` inside this section instead",
                        {"key": key, "new": cls.renamed[key]},
                    )
                field = cls.model_fields.get(key) if isinstance(key, str) else None
                if field is not None and _bool_where_number(field.annotation, value):
                    raise PydanticCustomError(
                        BOOL_NOT_NUMBER,
                        "a boolean is not a number here; write a number (e.g. 1 or 0.5)",
                        {"key": key},
                    )
        return data


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a (possibly Annotated / Optional) annotation, Annotated wrappers stripped."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _bool_where_number(annotation: Any, value: Any) -> bool:
    """Whether ``value`` holds a bool at a place where ``annotation`` wants a number and admits no bool."""
    members = _members(annotation)
    if isinstance(value, bool):
        admits = any(
            m is bool
            or m is Any
            or (typing.get_origin(m) is Literal and any(a is value for a in typing.get_args(m)))
            for m in members
        )
        numeric = any(
            m in (int, float)
            or (typing.get_origin(m) is Literal and any(isinstance(a, int) for a in typing.get_args(m)))
            for m in members
        )
        return numeric and not admits
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            slots = []  # what each list/tuple alternative expects at position i
            for m in members:
                origin, args = typing.get_origin(m), typing.get_args(m)
                if origin is list and args:
                    slots.append(args[0])
                elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
                    slots.append(args[0])
                elif origin is tuple and i < len(args):
                    slots.append(args[i])
            if slots and all(_bool_where_number(slot, item) for slot in slots):
                return True
    return False
