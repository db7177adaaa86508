"""Event type definitions: the values that make up the contract.

An event type is a value (a name with a definition), never a class of its own:
every signal keeps the one canonical shape and only its ``payload`` schema
differs by type.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from headwater._duration import parse_duration as _parse_duration
from headwater.errors import ContractDefinitionError

__all__ = [
    "DEFAULT_FRESHNESS_BUDGET_S",
    "FIELD_TYPES",
    "LIST_ITEM_TYPES",
    "EventTypeDefinition",
    "FieldSpec",
    "RegisteredEventType",
    "definition_from_mapping",
    "parse_duration",
]

FieldType = Literal["string", "int", "float", "bool", "enum", "list", "timestamp"]
FIELD_TYPES: tuple[str, ...] = ("string", "int", "float", "bool", "enum", "list", "timestamp")
LIST_ITEM_TYPES: tuple[str, ...] = ("string", "int", "float", "bool", "enum", "timestamp")

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: The freshness budget of an event type whose contract sets none (seconds).
DEFAULT_FRESHNESS_BUDGET_S = 300.0
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class FieldSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One payload field: its type, whether it is required, and its bounds.

    ``minimum``/``maximum`` bound numbers, ``min_length``/``max_length`` bound
    strings, ``max_items`` bounds lists, ``values`` lists an enum's members and
    ``items`` names a list's element type (``values`` then applies to enum items).
    """

    type: FieldType
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    max_items: int | None = None
    values: tuple[str, ...] | None = None
    items: str | None = None
    description: str = ""

    def element_type(self) -> str:
        """The type a list's elements have, or the field's own type."""
        return self.items if self.type == "list" and self.items else self.type


def _float_bounds(spec: FieldSpec) -> FieldSpec:
    # Python callers may write minimum=1 (an int is a float to mypy); stored and
    # decoded definitions say 1.0, and both must give the same fingerprint.
    lo, hi = spec.minimum, spec.maximum
    return msgspec.structs.replace(
        spec, minimum=None if lo is None else float(lo), maximum=None if hi is None else float(hi)
    )


class EventTypeDefinition(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One event type: owner, surfaces, item rule, payload schema and freshness budget."""

    name: str
    owner: str
    surfaces: tuple[str, ...]
    has_item: bool
    payload: dict[str, FieldSpec]
    freshness_budget_s: float = DEFAULT_FRESHNESS_BUDGET_S
    description: str = ""

    def content(self) -> EventTypeDefinition:
        """The same definition in a canonical order, numbers as floats, for comparison."""
        return msgspec.structs.replace(
            self,
            surfaces=tuple(sorted(set(self.surfaces))),
            payload={k: _float_bounds(self.payload[k]) for k in sorted(self.payload)},
            freshness_budget_s=float(self.freshness_budget_s),
        )

    def fingerprint(self) -> bytes:
        """Canonical bytes of the definition; equal definitions give equal bytes."""
        return msgspec.json.encode(self.content(), order="sorted")


def parse_duration(value: object, where: str) -> float:
    """Seconds from ``90``, ``"90s"``, ``"5m"``, ``"1h"``, ``"250ms"`` or ``"7d"``."""
    return _parse_duration(value, where, ContractDefinitionError)


def _field_from_mapping(name: str, raw: Any, where: str) -> FieldSpec:
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        raise ContractDefinitionError(f"{where}: field {name!r} must be a mapping or a type name")
    data = dict(raw)
    # Files may say min/max; the value object names them minimum/maximum.
    for short, full in (("min", "minimum"), ("max", "maximum")):
        if short in data:
            data[full] = data.pop(short)
    if "values" in data and isinstance(data["values"], list):
        data["values"] = tuple(str(v) for v in data["values"])
    try:
        spec = msgspec.convert(data, FieldSpec)
    except msgspec.ValidationError as exc:
        raise ContractDefinitionError(f"{where}: field {name!r}: {exc}") from None
    _check_field(name, spec, where)
    return spec


def _misplaced_options(spec: FieldSpec) -> list[str]:
    problems: list[str] = []
    kind = spec.element_type()
    if (spec.minimum is not None or spec.maximum is not None) and kind not in ("int", "float"):
        problems.append("minimum/maximum apply to int and float fields only")
    if (spec.min_length is not None or spec.max_length is not None) and kind != "string":
        problems.append("min_length/max_length apply to string fields only")
    if spec.max_items is not None and spec.type != "list":
        problems.append("max_items applies to list fields only")
    if spec.type == "list" and spec.items not in LIST_ITEM_TYPES:
        problems.append(f"a list names its element type in items: one of {LIST_ITEM_TYPES}")
    if spec.type != "list" and spec.items is not None:
        problems.append("items applies to list fields only")
    if kind == "enum" and not spec.values:
        problems.append("an enum lists its values")
    if kind == "enum" and spec.values and len(set(spec.values)) != len(spec.values):
        problems.append("enum values repeat")
    if kind != "enum" and spec.values is not None:
        problems.append("values apply to enum fields only")
    return problems


def _bad_bounds(spec: FieldSpec) -> list[str]:
    problems: list[str] = []
    if spec.minimum is not None and spec.maximum is not None and spec.minimum > spec.maximum:
        problems.append("minimum is above maximum")
    lo, hi = spec.min_length, spec.max_length
    if any(n is not None and n < 0 for n in (lo, hi, spec.max_items)):
        problems.append("lengths and max_items cannot be negative")
    if lo is not None and hi is not None and lo > hi:
        problems.append("min_length is above max_length")
    if spec.element_type() == "int" and any(
        b is not None and (b != int(b) or not INT64_MIN <= b <= INT64_MAX)
        for b in (spec.minimum, spec.maximum)
    ):
        problems.append("int bounds are whole numbers within 64 bits")
    return problems


def _check_field(name: str, spec: FieldSpec, where: str) -> None:
    problems = [] if _NAME.match(name) else ["names are lower_snake_case, at most 64 characters"]
    problems += _misplaced_options(spec) + _bad_bounds(spec)
    if problems:
        raise ContractDefinitionError(f"{where}: field {name!r}: " + "; ".join(problems))


def definition_from_mapping(name: str, raw: Any, owner: str, where: str) -> EventTypeDefinition:
    """Build a definition from the mapping a YAML or TOML file holds for one event type."""
    if not isinstance(raw, dict):
        raise ContractDefinitionError(f"{where}: event type {name!r} must be a mapping")
    if not _NAME.match(name):
        raise ContractDefinitionError(
            f"{where}: event type name {name!r} must be lower_snake_case, at most 64 characters"
        )
    known = {"surfaces", "item", "payload", "freshness_budget", "description", "owner"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ContractDefinitionError(
            f"{where}: event type {name!r} has unknown keys {unknown}; known: {sorted(known)}"
        )
    surfaces = raw.get("surfaces")
    if (
        not isinstance(surfaces, list)
        or not surfaces
        or not all(isinstance(s, str) and _NAME.match(s) for s in surfaces)
    ):
        raise ContractDefinitionError(
            f"{where}: event type {name!r} needs surfaces: "
            "a non-empty list of lower_snake_case names"
        )
    has_item = raw.get("item", True)
    if not isinstance(has_item, bool):
        raise ContractDefinitionError(f"{where}: event type {name!r}: item is true or false")
    payload_raw = raw.get("payload") or {}
    if not isinstance(payload_raw, dict):
        raise ContractDefinitionError(f"{where}: event type {name!r}: payload must be a mapping")
    payload = {
        str(k): _field_from_mapping(str(k), v, f"{where}: {name}") for k, v in payload_raw.items()
    }
    budget = parse_duration(raw.get("freshness_budget", "5m"), f"{where}: {name}.freshness_budget")
    description = raw.get("description", "")
    return EventTypeDefinition(
        name=name,
        owner=str(raw.get("owner", owner)),
        surfaces=tuple(surfaces),
        has_item=has_item,
        payload=payload,
        freshness_budget_s=budget,
        description=str(description),
    ).content()


class RegisteredEventType(msgspec.Struct, frozen=True):
    """A definition as registered: its version number and when it was registered."""

    definition: EventTypeDefinition
    version: int
    registered_at: str = ""

    @property
    def name(self) -> str:
        """The event type's name."""
        return self.definition.name
