"""Evolution rules: which changes to an event type's definition are allowed.

Allowed: adding an optional payload field, adding an enum value, adding a surface,
adding an event type, loosening or dropping a bound, and changing metadata (owner,
description, freshness budget). Everything else a producer or consumer could trip
on is refused, and every refusal is reported, not only the first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from headwater.contract.definition import EventTypeDefinition, FieldSpec

__all__ = ["RULES", "Violation", "check_evolution", "compare_definitions"]

RULES: dict[str, str] = {
    "event_type_removed": "an event type cannot be removed once registered",
    "surface_removed": "a surface cannot be removed from an event type",
    "item_rule_changed": "whether an event type carries an item cannot change",
    "field_removed": "a payload field cannot be removed",
    "type_changed": "a payload field cannot change its type",
    "required_field_added": "a new payload field must be optional",
    "made_required": "an optional payload field cannot become required",
    "made_optional": "a required payload field cannot become optional (consumers rely on it)",
    "enum_value_removed": "an enum value cannot be removed",
    "bound_tightened": "a bound cannot be tightened or added to an existing field",
}


class Violation(msgspec.Struct, frozen=True):
    """One refused change: which type and field, which rule, between which versions."""

    event_type: str
    field: str | None
    rule: str
    from_version: int
    to_version: int
    message: str

    def describe(self) -> str:
        """One line for people: type.field, rule, versions, detail."""
        where = self.event_type + (f".{self.field}" if self.field else "")
        return f"{where}: {self.rule} (v{self.from_version} -> v{self.to_version}): {self.message}"


def _tightened(old: FieldSpec, new: FieldSpec) -> list[str]:
    reasons: list[str] = []
    lower_bounds = (
        ("minimum", old.minimum, new.minimum),
        ("min_length", old.min_length, new.min_length),
    )
    for name, was, now in lower_bounds:
        if now is not None and (was is None or now > was):
            reasons.append(f"{name} {was if was is not None else 'unset'} -> {now}")
    upper_bounds = (
        ("maximum", old.maximum, new.maximum),
        ("max_length", old.max_length, new.max_length),
        ("max_items", old.max_items, new.max_items),
    )
    for name, was, now in upper_bounds:
        if now is not None and (was is None or now < was):
            reasons.append(f"{name} {was if was is not None else 'unset'} -> {now}")
    return reasons


def _label(spec: FieldSpec) -> str:
    return f"list[{spec.items}]" if spec.type == "list" else spec.type


def _compare_field(old: FieldSpec, new: FieldSpec) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if old.type != new.type or old.element_type() != new.element_type():
        found.append(("type_changed", f"{_label(old)} -> {_label(new)}"))
        return found
    if new.required and not old.required:
        found.append(("made_required", "was optional, now required"))
    if old.required and not new.required:
        found.append(("made_optional", "was required, now optional"))
    removed = sorted(set(old.values or ()) - set(new.values or ()))
    if removed:
        found.append(("enum_value_removed", f"values removed: {removed}"))
    found.extend(("bound_tightened", reason) for reason in _tightened(old, new))
    return found


def compare_definitions(
    old: EventTypeDefinition, old_version: int, new: EventTypeDefinition, new_version: int
) -> list[Violation]:
    """Every rule the change from ``old`` to ``new`` breaks (empty when compatible)."""
    found: list[tuple[str | None, str, str]] = []
    gone = sorted(set(old.surfaces) - set(new.surfaces))
    if gone:
        found.append((None, "surface_removed", f"surfaces removed: {gone}"))
    if old.has_item != new.has_item:
        found.append((None, "item_rule_changed", f"item {old.has_item} -> {new.has_item}"))
    for fname, ospec in old.payload.items():
        nspec = new.payload.get(fname)
        if nspec is None:
            found.append((fname, "field_removed", f"{ospec.type} field removed"))
            continue
        found.extend((fname, rule, msg) for rule, msg in _compare_field(ospec, nspec))
    for fname, nspec in new.payload.items():
        if fname not in old.payload and nspec.required:
            found.append((fname, "required_field_added", f"new {nspec.type} field is required"))
    return [
        Violation(
            event_type=new.name,
            field=fname,
            rule=rule,
            from_version=old_version,
            to_version=new_version,
            message=f"{RULES[rule]}: {detail}",
        )
        for fname, rule, detail in found
    ]


def check_evolution(
    history: Mapping[str, Iterable[tuple[int, EventTypeDefinition]]],
    proposed: Mapping[str, EventTypeDefinition],
    *,
    allow_removal: bool = False,
) -> list[Violation]:
    """Check a proposed set of definitions against every registered version of each type.

    ``history`` maps each registered type to its ``(version, definition)`` pairs. A
    proposed definition is checked against every earlier version, so a bound loosened
    in v2 cannot be tightened below v1's in v3. Types absent from ``proposed`` are
    reported as removed unless ``allow_removal`` (a partial set, e.g. one team's file).
    """
    violations: list[Violation] = []
    for name, versions in sorted(history.items()):
        pairs = sorted(versions, key=lambda p: p[0])
        if not pairs:
            continue
        latest_version = pairs[-1][0]
        new = proposed.get(name)
        if new is None:
            if not allow_removal:
                violations.append(
                    Violation(
                        name,
                        None,
                        "event_type_removed",
                        latest_version,
                        latest_version + 1,
                        RULES["event_type_removed"],
                    )
                )
            continue
        if new.fingerprint() == pairs[-1][1].fingerprint():
            continue
        for version, old in pairs:
            violations.extend(compare_definitions(old, version, new, latest_version + 1))
    return violations
