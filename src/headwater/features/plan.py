"""What registering a new set of feature definitions changes, and what each change needs.

A feature's stored value is the fold of the user's events under its definition. A
change that leaves that fold the same (today only the ``description``) is compatible:
the stored values stay valid. Any other change (kind, event types, windows, size,
fields, removal rule) changes what the value means, so the value is recomputed from
the archive (a backfill) before it is answered again; a new feature is backfilled the
same way. A removed feature is no longer computed nor answered.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from headwater.features.spec import FeatureSpec

__all__ = ["COMPATIBLE_FIELDS", "FeatureChange", "FeaturePlan", "plan_features"]

#: Fields whose change leaves every stored value valid.
COMPATIBLE_FIELDS = frozenset({"description"})


class FeatureChange(msgspec.Struct, frozen=True):
    """One changed feature: the fields that differ, and whether it needs a backfill."""

    name: str
    fields: tuple[str, ...]
    backfill: bool


class FeaturePlan(msgspec.Struct, frozen=True):
    """Added, removed, changed and unchanged features of a proposed set."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[FeatureChange, ...]
    unchanged: tuple[str, ...]
    #: The features in common are declared in another order (compatible).
    reordered: bool = False

    @property
    def empty(self) -> bool:
        """True when the proposed set is the current one (nothing to register)."""
        return not (self.added or self.removed or self.changed or self.reordered)

    @property
    def backfills(self) -> tuple[str, ...]:
        """The features whose values are recomputed from the archive."""
        return self.added + tuple(c.name for c in self.changed if c.backfill)

    def describe(self) -> list[str]:
        """One line per feature, as ``headwater features plan`` prints them."""
        lines = [f"  + {n} (new: backfill from the archive)" for n in self.added]
        for c in self.changed:
            what = "backfill from the archive" if c.backfill else "compatible"
            lines.append(f"  ~ {c.name} ({', '.join(c.fields)} changed: {what})")
        lines += [f"  - {n} (removed: no longer computed nor answered)" for n in self.removed]
        lines += [f"  = {n} (unchanged)" for n in self.unchanged]
        if self.reordered and not (self.added or self.removed or self.changed):
            lines.append("  (order of the features changed: compatible)")
        return lines


def _differing(old: FeatureSpec, new: FeatureSpec) -> tuple[str, ...]:
    return tuple(
        f for f in old.__struct_fields__ if f != "name" and getattr(old, f) != getattr(new, f)
    )


def plan_features(current: Sequence[FeatureSpec], proposed: Sequence[FeatureSpec]) -> FeaturePlan:
    """Compare ``proposed`` with ``current`` (both in declaration order)."""
    before = {s.name: s for s in current}
    after = {s.name: s for s in proposed}
    added, changed, unchanged = [], [], []
    for name, spec in after.items():
        old = before.get(name)
        if old is None:
            added.append(name)
            continue
        fields = _differing(old, spec)
        if fields:
            changed.append(FeatureChange(name, fields, not set(fields) <= COMPATIBLE_FIELDS))
        else:
            unchanged.append(name)
    removed = [n for n in before if n not in after]
    common_before = [n for n in before if n in after]
    common_after = [n for n in after if n in before]
    return FeaturePlan(
        tuple(added),
        tuple(removed),
        tuple(changed),
        tuple(unchanged),
        reordered=common_before != common_after,
    )
