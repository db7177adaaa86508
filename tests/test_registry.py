"""The contract registry on every control-plane backend (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import msgspec
import pytest

from headwater.contract.definition import EventTypeDefinition, FieldSpec
from headwater.contract.loader import default_definitions
from headwater.control import ControlDatabase, open_control_database
from headwater.errors import ConfigurationError, IncompatibleChangeError
from headwater.registry.contracts import ContractRegistry

_OPEN: list[ControlDatabase] = []


def registry(url: str) -> ContractRegistry:
    db = open_control_database(url)
    _OPEN.append(db)
    return ContractRegistry(db)


@pytest.fixture(autouse=True)
def _close_databases() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def with_field(d: EventTypeDefinition, name: str, spec: FieldSpec) -> EventTypeDefinition:
    return msgspec.structs.replace(d, payload={**d.payload, name: spec}).content()


def test_apply_registers_version_one(control_url: str) -> None:
    reg = registry(control_url)
    plan = reg.apply(default_definitions())
    assert set(plan.added) == set(default_definitions())
    assert {r.name: r.version for r in reg.current()} == dict.fromkeys(default_definitions(), 1)
    again = reg.apply(default_definitions())
    assert set(again.unchanged) == set(default_definitions())
    assert reg.revision() == len(default_definitions())


def test_compatible_change_gets_next_version(control_url: str) -> None:
    reg = registry(control_url)
    reg.apply(default_definitions())
    defs = default_definitions()
    defs["rating"] = with_field(defs["rating"], "helpful", FieldSpec(type="bool"))
    plan = reg.apply(defs)
    assert plan.changed == (("rating", 2),)
    history = reg.history()["rating"]
    assert [r.version for r in history] == [1, 2]
    assert "helpful" in history[-1].definition.payload
    assert "helpful" not in history[0].definition.payload


def test_incompatible_change_is_refused_with_every_violation(control_url: str) -> None:
    reg = registry(control_url)
    reg.apply(default_definitions())
    defs = default_definitions()
    rating = defs["rating"]
    payload = dict(rating.payload)
    del payload["text"]
    payload["rating"] = msgspec.structs.replace(payload["rating"], maximum=4.0)
    payload["stars"] = FieldSpec(type="int", required=True)
    defs["rating"] = msgspec.structs.replace(rating, payload=payload).content()
    defs["view"] = msgspec.structs.replace(defs["view"], surfaces=("web",)).content()
    with pytest.raises(IncompatibleChangeError) as info:
        reg.apply(defs)
    found = {
        (v.event_type, v.field, v.rule, v.from_version, v.to_version) for v in info.value.violations
    }
    assert found == {
        ("rating", "text", "field_removed", 1, 2),
        ("rating", "rating", "bound_tightened", 1, 2),
        ("rating", "stars", "required_field_added", 1, 2),
        ("view", None, "surface_removed", 1, 2),
    }
    # Nothing of the refused set was registered, not even its compatible parts.
    assert all(r.version == 1 for r in reg.current())


def test_removal_is_refused_unless_partial(control_url: str) -> None:
    reg = registry(control_url)
    reg.apply(default_definitions())
    only_view = {"view": default_definitions()["view"]}
    plan = reg.plan(only_view)
    assert {v.rule for v in plan.violations} == {"event_type_removed"}
    assert reg.plan(only_view, partial=True).compatible


def test_concurrent_apply_assigns_distinct_versions(control_url: str) -> None:
    reg = registry(control_url)
    reg.apply(default_definitions())
    base = default_definitions()["view"]
    errors: list[BaseException] = []

    def propose(i: int) -> None:
        try:
            own = registry(control_url)
            spec = FieldSpec(type="string")
            own.apply({"view": with_field(base, f"extra_{i}", spec)}, partial=True)
        except IncompatibleChangeError:
            pass  # a later proposal lacking an earlier one's field is a removal: refused
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=propose, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    versions = [r.version for r in reg.history()["view"]]
    assert versions == list(range(1, len(versions) + 1))
    assert len(versions) >= 2


def test_unknown_scheme() -> None:
    with pytest.raises(ConfigurationError, match="no control-plane backend"):
        open_control_database("mysql://x")
