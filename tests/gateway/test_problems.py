"""Every error answer is one problem document (RFC 9457), whatever raised it, and the
table of problem types in docs/ is the one the gateway answers with."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from headwater import errors
from headwater.application import Application
from headwater.gateway._errors import kind_of
from headwater.gateway.app import create_app
from headwater.gateway.problems import KINDS
from headwater.gateway.security import requires
from tests._gateway_fixtures import auth, make_key, problem

DOCS = Path(__file__).resolve().parents[2] / "docs" / "problems.md"


def test_parameter_errors_are_problems_naming_the_field_and_rule(
    client: TestClient, hw: Application
) -> None:
    reader = make_key(hw, "recs", "reader")
    r = client.get("/v1/users/u1/recommendations?k=0&surface=", headers=auth(reader))
    doc = problem(r, 422, "invalid-parameters")
    by_field = {e["field"]: e for e in doc["errors"]}
    assert set(by_field) == {"query.k", "query.surface"}
    assert by_field["query.k"]["rule"] == "greater_than_equal"
    assert by_field["query.surface"]["rule"] == "string_too_short"
    assert all(e["message"] for e in doc["errors"])
    assert "query.k" in doc["detail"]
    assert doc["instance"] == "/v1/users/u1/recommendations"


def test_unknown_routes_methods_and_resources_are_problems(
    client: TestClient, hw: Application
) -> None:
    key = make_key(hw, "ops", "admin")
    doc = problem(client.get("/v1/nothing-here", headers=auth(key)), 404, "not-found")
    assert "/v1/nothing-here" in doc["detail"]
    r = client.patch("/v1/signals", headers=auth(key))
    problem(r, 405, "method-not-allowed")
    assert "POST" in r.headers["Allow"]
    r = client.get("/v1/contracts/no_such_type", headers=auth(key))
    assert "no_such_type" in problem(r, 404, "unknown-event-type")["detail"]
    r = client.get("/v1/deletions/er_nope", headers=auth(key))
    problem(r, 404, "unknown-erasure-request")


@pytest.fixture
def failing(hw: Application) -> Iterator[TestClient]:
    def extra(app: FastAPI) -> None:
        router = APIRouter()

        @router.get("/v1/fails", dependencies=[requires()])
        async def fails() -> None:
            raise RuntimeError("user u-secret broke it")

        app.include_router(router)

    with TestClient(create_app(hw, extra=extra), raise_server_exceptions=False) as c:
        yield c


def test_an_unexpected_failure_is_a_problem_that_does_not_repeat_the_exception(
    failing: TestClient, hw: Application
) -> None:
    r = failing.get("/v1/fails", headers=auth(make_key(hw, "ops", "reader")))
    doc = problem(r, 500, "internal")
    assert "u-secret" not in r.text
    assert doc["request_id"] == r.headers["X-Request-ID"]


def test_each_error_of_the_tree_has_a_documented_kind() -> None:
    built_with_arguments = {
        "MissingDependencyError": errors.MissingDependencyError(
            "kafka", "confluent_kafka", "kafka"
        ),
        "IncompatibleChangeError": errors.IncompatibleChangeError([]),
        "RateLimitedError": errors.RateLimitedError("x", 1.0),
    }
    for name in errors.__all__:
        exc = built_with_arguments.get(name) or getattr(errors, name)("x")
        assert kind_of(exc) in KINDS, name
    assert kind_of(errors.BatchRunningError("x")) == "backend-unavailable"
    assert kind_of(errors.NoErasureParticipantsError("x")) == "no-erasure-participants"
    assert kind_of(errors.MissingDependencyError("a", "b", "c")) == "missing-dependency"
    assert kind_of(errors.BusError("x")) == "backend-failed"
    assert kind_of(errors.HeadwaterError("x")) == "internal"


def test_the_documented_table_is_every_kind() -> None:
    rows = re.findall(r"^\| `([^`]+)` \| (\w+) \| ([^|]+) \|", DOCS.read_text(), re.MULTILINE)
    documented = {(t, status, title.strip()) for t, status, title in rows}
    expected = {
        (k.type, "any" if k.status == 0 else str(k.status), k.title) for k in KINDS.values()
    }
    assert documented == expected
    assert len(rows) == len(KINDS), "each type once"


def test_a_malformed_body_names_the_field_and_rule(client: TestClient, hw: Application) -> None:
    privacy = make_key(hw, "privacy", "privacy")
    bodies = {
        b'{"legal_basis": "gdpr-art17"}': ("$.user_id", "missing_field"),
        b'{"user_id": "", "legal_basis": "gdpr-art17"}': ("$.user_id", "invalid_value"),
        b'{"user_id": "u1", "legal_basis": "gdpr-art17", "why": "x"}': ("$.why", "unknown_field"),
        b'{"user_id": "u1", "legal_basis": "gdpr-art17"': (None, "not_json"),
    }
    for body, (field, rule) in bodies.items():
        r = client.post("/v1/deletions", content=body, headers=auth(privacy))
        [error] = problem(r, 400, "malformed-body")["errors"]
        assert (error.get("field"), error["rule"]) == (field, rule), body
        assert error["message"]
    producer = make_key(hw, "web", "producer")
    batch = b'[{"event_id": "a"}, {"event_id": "b", "payload": {"x": 1, "x": 2}}]'
    r = client.post("/v1/signals", content=batch, headers=auth(producer))
    [error] = problem(r, 400, "malformed-body")["errors"]
    assert (error["field"], error["rule"]) == ("$[1].payload.x", "duplicate_key")
