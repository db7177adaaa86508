"""Property tests of the evolution rules and of the registry that enforces them.

Allowed evolutions must never be refused; every forbidden change must be reported, all
at once, naming type, field, rule and versions; and a registry driven by random
proposals must keep consecutive versions, each compatible with every earlier one.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from headwater.contract.compat import RULES, check_evolution, compare_definitions
from headwater.contract.definition import (
    FIELD_TYPES,
    LIST_ITEM_TYPES,
    EventTypeDefinition,
    FieldSpec,
)
from headwater.control import open_control_database
from headwater.errors import IncompatibleChangeError
from headwater.registry.contracts import ContractRegistry

Draw = Callable[[st.SearchStrategy[Any]], Any]
History = dict[str, list[tuple[int, EventTypeDefinition]]]
Found = set[tuple[str | None, str]]  # (field, rule) of one type

PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

names = st.from_regex(r"[a-z][a-z0-9_]{0,9}", fullmatch=True)
LOWER = ("minimum", "min_length")
UPPER = ("maximum", "max_length", "max_items")


# --- definitions ---------------------------------------------------------------------------


@st.composite
def _ordered(draw: Draw, values: st.SearchStrategy[Any]) -> tuple[Any, Any]:
    lo, hi = draw(st.none() | values), draw(st.none() | values)
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    return lo, hi


def _steps(kind: str) -> st.SearchStrategy[Any]:
    """Bound values for an element kind: whole for ints and lengths, halves for floats."""
    if kind == "float":
        return st.integers(-1000, 1000).map(lambda n: n / 2) | st.integers(-1000, 1000)
    if kind == "int":
        # An int where the struct says float is what Python callers write (and mypy allows).
        return st.integers(-1000, 1000) | st.integers(-1000, 1000).map(float)
    return st.integers(0, 50)


@st.composite
def field_specs(draw: Draw, *, required: bool | None = None) -> FieldSpec:
    kind = draw(st.sampled_from(FIELD_TYPES))
    items = draw(st.sampled_from(LIST_ITEM_TYPES)) if kind == "list" else None
    element = items or kind
    spec: dict[str, Any] = {
        "type": kind,
        "items": items,
        "required": draw(st.booleans()) if required is None else required,
        "description": draw(st.text(max_size=6)),
    }
    if kind == "list":
        spec["max_items"] = draw(st.none() | st.integers(0, 50))
    if element in ("int", "float"):
        spec["minimum"], spec["maximum"] = draw(_ordered(_steps(element)))
    elif element == "string":
        spec["min_length"], spec["max_length"] = draw(_ordered(_steps(element)))
    elif element == "enum":
        spec["values"] = tuple(
            draw(st.lists(st.text(max_size=6), min_size=1, max_size=5, unique=True))
        )
    return FieldSpec(**spec)


@st.composite
def definitions(draw: Draw, name: str | None = None) -> EventTypeDefinition:
    return EventTypeDefinition(
        name=name or draw(names),
        owner=draw(names),
        surfaces=tuple(draw(st.lists(names, min_size=1, max_size=4, unique=True))),
        has_item=draw(st.booleans()),
        payload=draw(st.dictionaries(names, field_specs(), max_size=5)),
        freshness_budget_s=draw(st.integers(1, 3600) | st.floats(0.5, 86_400)),
        description=draw(st.text(max_size=10)),
    )


@st.composite
def contracts(draw: Draw) -> dict[str, EventTypeDefinition]:
    return {
        n: draw(definitions(n)) for n in draw(st.lists(names, min_size=1, max_size=3, unique=True))
    }


def with_field(d: EventTypeDefinition, name: str, spec: FieldSpec | None) -> EventTypeDefinition:
    payload = {k: v for k, v in d.payload.items() if k != name}
    if spec is not None:
        payload[name] = spec
    return msgspec.structs.replace(d, payload=payload)


def _bounds_of(spec: FieldSpec) -> tuple[str, ...]:
    """The bound attributes that apply to a field."""
    element = spec.element_type()
    found: tuple[str, ...] = ()
    if element in ("int", "float"):
        found = ("minimum", "maximum")
    elif element == "string":
        found = ("min_length", "max_length")
    return (*found, "max_items") if spec.type == "list" else found


def _label(spec: FieldSpec) -> str:
    return f"list[{spec.items}]" if spec.type == "list" else spec.type


# --- allowed evolutions ----------------------------------------------------------------------


def _add_optional_field(draw: Draw, d: EventTypeDefinition) -> EventTypeDefinition | None:
    name = draw(names.filter(lambda n: n not in d.payload))
    return with_field(d, name, draw(field_specs(required=False)))


def _add_enum_value(draw: Draw, d: EventTypeDefinition) -> EventTypeDefinition | None:
    enums = sorted(n for n, s in d.payload.items() if s.element_type() == "enum")
    if not enums:
        return None
    name = draw(st.sampled_from(enums))
    spec = d.payload[name]
    value = draw(st.text(max_size=6).filter(lambda v: v not in (spec.values or ())))
    return with_field(d, name, msgspec.structs.replace(spec, values=(*(spec.values or ()), value)))


def _add_surface(draw: Draw, d: EventTypeDefinition) -> EventTypeDefinition | None:
    surface = draw(names.filter(lambda s: s not in d.surfaces))
    return msgspec.structs.replace(d, surfaces=(*d.surfaces, surface))


def _loosen_bound(draw: Draw, d: EventTypeDefinition) -> EventTypeDefinition | None:
    bounded = sorted(
        (n, attr)
        for n, s in d.payload.items()
        for attr in _bounds_of(s)
        if getattr(s, attr) is not None
    )
    if not bounded:
        return None
    name, attr = draw(st.sampled_from(bounded))
    spec = d.payload[name]
    old = getattr(spec, attr)
    numeric = attr in ("minimum", "maximum")
    step = draw(_steps(spec.element_type() if numeric else "length").map(abs))
    # Lower bounds go down (lengths not below zero), upper bounds go up.
    lowered = old - step if attr == "minimum" else max(0, old - step)
    new = lowered if attr in LOWER else old + step
    new = draw(st.sampled_from([new, None]))  # loosen, or drop the bound
    return with_field(d, name, msgspec.structs.replace(spec, **{attr: new}))


def _change_metadata(draw: Draw, d: EventTypeDefinition) -> EventTypeDefinition | None:
    what = draw(st.sampled_from(["owner", "description", "freshness", "field", "reorder"]))
    if what == "owner":
        return msgspec.structs.replace(d, owner=draw(names))
    if what == "description":
        return msgspec.structs.replace(d, description=draw(st.text(max_size=10)))
    if what == "freshness":
        return msgspec.structs.replace(d, freshness_budget_s=draw(st.floats(0.5, 86_400)))
    if what == "field" and d.payload:
        name = draw(st.sampled_from(sorted(d.payload)))
        spec = msgspec.structs.replace(d.payload[name], description=draw(st.text(max_size=6)))
        return with_field(d, name, spec)
    # The order of surfaces and fields carries no meaning.
    surfaces = tuple(draw(st.permutations(d.surfaces)))
    payload = {k: d.payload[k] for k in draw(st.permutations(list(d.payload)))}
    return msgspec.structs.replace(d, surfaces=surfaces, payload=payload)


ALLOWED: dict[str, Callable[[Draw, EventTypeDefinition], EventTypeDefinition | None]] = {
    "loosen_bound": _loosen_bound,
    "add_optional_field": _add_optional_field,
    "add_enum_value": _add_enum_value,
    "add_surface": _add_surface,
    "change_metadata": _change_metadata,
}


@st.composite
def allowed_changes(draw: Draw, d: EventTypeDefinition) -> EventTypeDefinition:
    """``d`` after one to three allowed evolutions."""
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(list(ALLOWED)))
        changed = ALLOWED[op](draw, d)
        if changed is not None:
            event(f"allowed: {op}")
            d = changed
    return d


# --- forbidden changes -----------------------------------------------------------------------


def _tighten(draw: Draw, spec: FieldSpec) -> FieldSpec | None:
    options = []
    for attr in _bounds_of(spec):
        old = getattr(spec, attr)
        if attr in UPPER and old is not None and old <= 0 and attr != "maximum":
            continue  # a length or item count cannot go below zero
        options.append(attr)
    if not options:
        return None
    attr = draw(st.sampled_from(options))
    old = getattr(spec, attr)
    kind = spec.element_type() if attr in ("minimum", "maximum") else "int"
    if old is None:
        new = draw(_steps(kind) if attr in ("minimum", "maximum") else st.integers(0, 50))
    else:
        step = draw(st.integers(1, 100)) / (2 if kind == "float" else 1)
        step = int(step) if kind != "float" else step
        new = old + step if attr in LOWER else old - step
        if attr in UPPER and attr != "maximum":
            new = max(0, new)
    return msgspec.structs.replace(spec, **{attr: new})


def _field_breakages(draw: Draw, spec: FieldSpec) -> list[tuple[str, FieldSpec | None]]:
    """(rule, new spec or None for removal) for every way this field can be broken."""
    found: list[tuple[str, FieldSpec | None]] = [("field_removed", None)]
    other = draw(field_specs(required=spec.required).filter(lambda s: _label(s) != _label(spec)))
    found.append(("type_changed", other))
    flipped = msgspec.structs.replace(spec, required=not spec.required)
    found.append(("made_optional" if spec.required else "made_required", flipped))
    if spec.element_type() == "enum" and spec.values:
        gone = draw(st.sampled_from(spec.values))
        kept = tuple(v for v in spec.values if v != gone)
        if not kept:  # an enum keeps at least one value: swap the only one for a new one
            kept = (draw(st.text(max_size=6).filter(lambda v: v != gone)),)
        found.append(("enum_value_removed", msgspec.structs.replace(spec, values=kept)))
    tightened = _tighten(draw, spec)
    if tightened is not None:
        found.append(("bound_tightened", tightened))
    return found


@st.composite
def forbidden_changes(
    draw: Draw,
    d: EventTypeDefinition,
) -> tuple[EventTypeDefinition, Found, set[str | None]]:
    """``d`` with one or several forbidden changes, what each must be reported as, and
    the fields touched (None for the type itself); allowed changes may come along."""
    new = d
    expected: Found = set()
    touched: set[str | None] = set()
    for name in draw(
        st.lists(st.sampled_from(sorted(d.payload)), unique=True) if d.payload else st.just([])
    ):
        rule_name, spec = draw(st.sampled_from(_field_breakages(draw, d.payload[name])))
        event(f"forbidden: {rule_name}")
        new = with_field(new, name, spec)
        expected.add((name, rule_name))
        touched.add(name)
    for name in draw(st.lists(names.filter(lambda n: n not in d.payload), unique=True, max_size=2)):
        event("forbidden: required_field_added")
        new = with_field(new, name, draw(field_specs(required=True)))
        expected.add((name, "required_field_added"))
        touched.add(name)
    if draw(st.booleans()) or not expected:
        event("forbidden: item_rule_changed")
        new = msgspec.structs.replace(new, has_item=not d.has_item)
        expected.add((None, "item_rule_changed"))
        touched.add(None)
    if draw(st.booleans()):
        event("forbidden: surface_removed")
        gone = draw(st.sampled_from(d.surfaces))
        kept = tuple(s for s in new.surfaces if s != gone)
        if not kept:
            kept = (draw(names.filter(lambda s: s not in d.surfaces)),)
        new = msgspec.structs.replace(new, surfaces=kept)
        expected.add((None, "surface_removed"))
        touched.add(None)
    # Allowed changes alongside must add nothing to the report.
    if draw(st.booleans()):
        # A fresh name: re-adding a removed field would undo the removal.
        name = draw(names.filter(lambda n: n not in d.payload and n not in new.payload))
        new = with_field(new, name, draw(field_specs(required=False)))
    if draw(st.booleans()):
        new = _change_metadata(draw, new) or new
    return new, expected, touched


# --- properties --------------------------------------------------------------------------------


@st.composite
def histories(draw: Draw) -> History:
    """One to three types, each with a chain of versions made of allowed evolutions."""
    history: History = {}
    for name, d in draw(contracts()).items():
        versions = [(1, d)]
        for _ in range(draw(st.integers(0, 3))):
            versions.append((versions[-1][0] + 1, draw(allowed_changes(versions[-1][1]))))
        history[name] = versions
    return history


@settings(PROPERTY_SETTINGS, max_examples=100)
@given(data=st.data())
def test_allowed_evolutions_are_never_refused(data: st.DataObject) -> None:
    history: History = {}
    for name, d in data.draw(contracts(), label="contract").items():
        history[name] = [(1, d)]
    for _ in range(data.draw(st.integers(1, 4), label="steps")):
        proposed = {n: data.draw(allowed_changes(v[-1][1]), label=n) for n, v in history.items()}
        extra = data.draw(
            st.lists(names.filter(lambda n: n not in history), unique=True, max_size=2),
            label="new types",
        )
        proposed |= {n: data.draw(definitions(n)) for n in extra}
        assert check_evolution(history, proposed) == []
        for name, d in proposed.items():
            versions = history.setdefault(name, [])
            versions.append((len(versions) + 1, d))


@PROPERTY_SETTINGS
@given(data=st.data())
def test_every_forbidden_change_is_reported_at_once(data: st.DataObject) -> None:
    history = data.draw(histories(), label="history")
    latest = {n: v[-1][0] for n, v in history.items()}
    proposed: dict[str, EventTypeDefinition] = {}
    expected: set[tuple[str, str | None, str, int, int]] = set()
    touched: set[tuple[str, str | None]] = set()
    actions = data.draw(
        st.lists(
            st.sampled_from(["keep", "allowed", "forbidden", "remove"]),
            min_size=len(history),
            max_size=len(history),
        ).filter(lambda a: "forbidden" in a or "remove" in a),
        label="actions",
    )
    for (name, versions), action in zip(sorted(history.items()), actions, strict=True):
        current, v = versions[-1][1], latest[name]
        if action == "remove":
            expected.add((name, None, "event_type_removed", v, v + 1))
            touched.add((name, None))
        elif action == "forbidden":
            proposed[name], found, fields = data.draw(forbidden_changes(current), label=name)
            expected |= {(name, f, r, v, v + 1) for f, r in found}
            touched |= {(name, f) for f in fields}
        else:
            proposed[name] = current if action == "keep" else data.draw(allowed_changes(current))
    extra = data.draw(
        st.lists(names.filter(lambda n: n not in history), unique=True, max_size=2),
        label="new types",
    )
    proposed |= {n: data.draw(definitions(n)) for n in extra}

    violations = check_evolution(history, proposed)
    found = {(v.event_type, v.field, v.rule, v.from_version, v.to_version) for v in violations}
    # Against the latest version the report is exactly the changes made, each once.
    assert {f for f in found if f[3] == latest[f[0]]} == expected
    assert len(violations) == len(found)
    for v in violations:
        # Against earlier versions it names only what changed, always as the next version.
        assert (v.event_type, v.field) in touched
        assert v.to_version == latest[v.event_type] + 1
        assert v.message.startswith(RULES[v.rule])
    partial = check_evolution(history, proposed, allow_removal=True)
    assert {v.rule for v in partial} <= set(RULES) - {"event_type_removed"}
    assert len(partial) == len(violations) - sum(1 for e in expected if e[0] not in proposed)


def _rated(maximum: float | None, version: int = 1) -> tuple[int, EventTypeDefinition]:
    spec = FieldSpec(type="int", required=True, minimum=1.0, maximum=maximum)
    return version, EventTypeDefinition(
        name="rating", owner="reviews", surfaces=("web",), has_item=True, payload={"rating": spec}
    )


def test_a_bound_is_checked_against_every_earlier_version(tmp_path: Path) -> None:
    v1, v2, proposal = _rated(10.0, 1), _rated(20.0, 2), _rated(15.0)[1]
    (violation,) = check_evolution({"rating": [v1, v2]}, {"rating": proposal})
    assert (violation.event_type, violation.field, violation.rule) == (
        "rating",
        "rating",
        "bound_tightened",
    )
    assert (violation.from_version, violation.to_version) == (2, 3)
    # Dropped in v2, the bound cannot come back tighter than v1's either.
    found = check_evolution({"rating": [v1, _rated(None, 2)]}, {"rating": proposal})
    assert {(v.from_version, v.rule) for v in found} == {(2, "bound_tightened")}
    tighter = check_evolution(
        {"rating": [_rated(12.0, 1), _rated(None, 2)]}, {"rating": _rated(11.0)[1]}
    )
    assert {(v.from_version, v.rule) for v in tighter} == {
        (1, "bound_tightened"),
        (2, "bound_tightened"),
    }

    db = open_control_database(f"sqlite:///{tmp_path}/c.db")
    try:
        registry = ContractRegistry(db)
        registry.apply({"rating": v1[1]})
        assert registry.apply({"rating": v2[1]}).changed == (("rating", 2),)
        with pytest.raises(IncompatibleChangeError) as info:
            registry.apply({"rating": proposal})
        assert [(v.field, v.rule, v.from_version, v.to_version) for v in info.value.violations] == [
            ("rating", "bound_tightened", 2, 3)
        ]
        assert [r.version for r in registry.history()["rating"]] == [1, 2]
    finally:
        db.close()


def test_equal_definitions_are_one_version_however_numbers_are_written(tmp_path: Path) -> None:
    # FieldSpec bounds and the freshness budget are floats; Python callers write ints.
    as_ints = EventTypeDefinition(
        name="rating",
        owner="reviews",
        surfaces=("web",),
        has_item=True,
        payload={"rating": FieldSpec(type="int", minimum=1, maximum=5)},
        freshness_budget_s=60,
    )
    as_floats = EventTypeDefinition(
        name="rating",
        owner="reviews",
        surfaces=("web",),
        has_item=True,
        payload={"rating": FieldSpec(type="int", minimum=1.0, maximum=5.0)},
        freshness_budget_s=60.0,
    )
    assert as_ints == as_floats
    assert as_ints.fingerprint() == as_floats.fingerprint()
    db = open_control_database(f"sqlite:///{tmp_path}/c.db")
    try:
        registry = ContractRegistry(db)
        registry.apply({"rating": as_ints})
        assert registry.apply({"rating": as_ints}).unchanged == ("rating",)
        assert registry.apply({"rating": as_floats}).unchanged == ("rating",)
        assert [r.version for r in registry.history()["rating"]] == [1]
    finally:
        db.close()


# --- the registry as a state machine ---------------------------------------------------------


class RegistryMachine(RuleBasedStateMachine):
    """Random proposals against a SQLite-backed registry, checked against a plain model."""

    def __init__(self) -> None:
        super().__init__()
        self._dir = tempfile.TemporaryDirectory()
        self.db = open_control_database(f"sqlite:///{self._dir.name}/c.db")
        self.registry = ContractRegistry(self.db)
        self.model: dict[str, list[EventTypeDefinition]] = {}

    def teardown(self) -> None:
        self.db.close()
        self._dir.cleanup()

    def _apply(self, proposed: dict[str, EventTypeDefinition], *, partial: bool) -> None:
        """Apply a proposal expected to pass, and move the model the same way."""
        planned = self.registry.plan(proposed, partial=partial)
        plan = self.registry.apply(proposed, partial=partial)
        assert plan == planned
        added, changed, unchanged = [], [], []
        for name, d in sorted(proposed.items()):
            versions = self.model.setdefault(name, [])
            if not versions:
                added.append(name)
            elif d.content() == versions[-1].content():
                unchanged.append(name)
                continue
            else:
                changed.append((name, len(versions) + 1))
            versions.append(d)
        assert (plan.added, plan.changed, plan.unchanged) == (
            tuple(added),
            tuple(changed),
            tuple(unchanged),
        )

    def _refuse(self, proposed: dict[str, EventTypeDefinition], *, partial: bool) -> set[Any]:
        """Apply a proposal expected to be refused; nothing may change."""
        before, revision = self.registry.history(), self.registry.revision()
        with pytest.raises(IncompatibleChangeError) as info:
            self.registry.apply(proposed, partial=partial)
        assert self.registry.history() == before
        assert self.registry.revision() == revision
        return {
            (v.event_type, v.field, v.rule, v.from_version, v.to_version)
            for v in info.value.violations
        }

    @initialize(contract=contracts())
    def register_contract(self, contract: dict[str, EventTypeDefinition]) -> None:
        self._apply(contract, partial=False)

    @rule(data=st.data())
    def add_type(self, data: st.DataObject) -> None:
        name = data.draw(names.filter(lambda n: n not in self.model))
        self._apply({name: data.draw(definitions(name))}, partial=True)

    @rule(data=st.data())
    def propose_allowed_change(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.model)))
        self._apply({name: data.draw(allowed_changes(self.model[name][-1]))}, partial=True)

    @rule(data=st.data())
    def resubmit_unchanged(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.model)))
        # Read back from the registry: a stored definition must match itself.
        stored = {r.name: r.definition for r in self.registry.current()}
        self._apply({name: stored[name]}, partial=True)
        self._apply({name: self.model[name][-1]}, partial=True)

    @rule(data=st.data())
    def propose_forbidden_change(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.model)))
        latest = len(self.model[name])
        new, expected, _ = data.draw(forbidden_changes(self.model[name][-1]))
        found = self._refuse({name: new}, partial=True)
        assert {(t, f, r, v, w) for t, f, r, v, w in found if v == latest} == {
            (name, f, r, latest, latest + 1) for f, r in expected
        }

    @precondition(lambda self: len(self.model) > 1)
    @rule(data=st.data())
    def propose_whole_set_without_a_type(self, data: st.DataObject) -> None:
        gone = data.draw(st.sampled_from(sorted(self.model)))
        proposed = {n: v[-1] for n, v in self.model.items() if n != gone}
        found = self._refuse(proposed, partial=False)
        latest = len(self.model[gone])
        assert found == {(gone, None, "event_type_removed", latest, latest + 1)}

    @rule(data=st.data())
    def propose_whole_set_of_allowed_changes(self, data: st.DataObject) -> None:
        proposed = {
            n: data.draw(st.just(v[-1]) | allowed_changes(v[-1])) for n, v in self.model.items()
        }
        self._apply(proposed, partial=False)

    @rule(data=st.data())
    def propose_anything(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.model)))
        proposal = {name: data.draw(definitions(name))}
        history = {name: list(enumerate(self.model[name], start=1))}
        if check_evolution(history, proposal):
            self._refuse(proposal, partial=True)
        else:
            self._apply(proposal, partial=True)

    @invariant()
    def versions_are_consecutive_real_and_compatible(self) -> None:
        history = self.registry.history()
        assert sorted(history) == sorted(self.model)
        for name, versions in history.items():
            assert [r.version for r in versions] == list(range(1, len(versions) + 1))
            assert [r.definition for r in versions] == self.model[name]
            for older, newer in itertools.pairwise(versions):
                assert older.definition.content() != newer.definition.content()
            for i, old in enumerate(versions):
                for new in versions[i + 1 :]:
                    assert (
                        compare_definitions(
                            old.definition, old.version, new.definition, new.version
                        )
                        == []
                    )


RegistryMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRegistryMachine = RegistryMachine.TestCase
