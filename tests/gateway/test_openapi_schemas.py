"""The OpenAPI document's schemas are the msgspec structures' own, and every answer of
every route is an encoding of the structure its status documents, no more, no less."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from fastapi.testclient import TestClient

from headwater.access.roles import Role
from headwater.application import Application
from headwater.erasure.ledger import Participant
from headwater.gateway._schemas import Answer, models
from headwater.gateway.answers import LoggedOut
from headwater.gateway.observe_answers import Health
from headwater.wire import PROBLEM_JSON, Problem
from tests._gateway_fixtures import auth, make_key, problem
from tests.gateway.test_security import EXPECTED, request_for

_REF = "#/components/schemas/"


def _spec(client: TestClient, key: str) -> dict[str, Any]:
    doc: dict[str, Any] = client.get("/openapi.json", headers=auth(key)).json()
    return doc


def assert_documented(spec: dict[str, Any], method: str, path: str, r: Any) -> str | None:
    """Check that ``r`` is an answer the document gives for this operation: its status
    and media type are documented, and its body is an encoding of the structure named
    there (decoded strictly and encoded again, it is the same JSON). The structure's
    name, or None for an answer without a schema (HTML, Prometheus text)."""
    responses = spec["paths"][path][method.lower()]["responses"]
    documented = responses.get(str(r.status_code))
    assert documented is not None, (method, path, r.status_code, r.text[:300])
    media_type = r.headers["content-type"].split(";")[0]
    content = documented.get("content", {})
    assert media_type in content, (method, path, r.status_code, media_type, list(content))
    schema = content[media_type].get("schema", {})
    name = schema.get("$ref", "").removeprefix(_REF)
    if not name:
        return None
    if r.status_code >= 400:
        assert media_type == PROBLEM_JSON, (method, path, r.status_code)
    model = models()[name]
    assert_encodes(r.content, model)
    return name


def assert_encodes(body: bytes, model: type[msgspec.Struct]) -> None:
    """``body`` is exactly an encoding of ``model``: a field missing, of another type, or
    beside the structure's fields fails."""
    try:
        value = msgspec.json.decode(body, type=model)
    except msgspec.ValidationError as exc:
        raise AssertionError(f"not a {model.__name__}: {exc}: {body[:300]!r}") from None
    assert json.loads(msgspec.json.encode(value)) == json.loads(body), (
        f"{body[:300]!r} has more than a {model.__name__}"
    )


def test_the_components_are_the_structures_own_schemas(client: TestClient, admin_key: str) -> None:
    spec = _spec(client, admin_key)
    _, expected = msgspec.json.schema_components(
        models().values(),
        ref_template=_REF + "{name}",
        schema_hook=lambda _: {"description": "Any JSON value"},
    )
    assert spec["components"]["schemas"] == json.loads(msgspec.json.encode(expected))
    # FastAPI's own validation error body is not documented: the answer is a Problem.
    text = json.dumps(spec["paths"])
    assert "HTTPValidationError" not in text
    refs = {part.split('"')[0] for part in text.split(_REF)[1:]}
    assert refs <= set(expected), refs - set(expected)
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation.get("responses", {}).items():
                if int(status) >= 400:
                    schema = answer["content"][PROBLEM_JSON]["schema"]["$ref"]
                    assert schema in (_REF + "Problem", _REF + "Unready"), (method, path)


@pytest.mark.parametrize(("method", "path"), sorted(EXPECTED))
def test_every_answer_is_the_structure_it_documents(
    client: TestClient, hw: Application, method: str, path: str
) -> None:
    hw.ledger.register_participant(Participant("online-features", "test", 60.0))
    admin = make_key(hw, "web", "admin")
    spec = _spec(client, admin)
    url, body = request_for(method, path)
    roles = EXPECTED[(method, path)]
    callers: list[str | None] = [admin, None]
    if roles not in (("public",), ("any key",)):
        # A role that may not call it: 403.
        others = [r.value for r in Role if r.value not in roles and r is not Role.ADMIN]
        callers.append(make_key(hw, "web", *others))
    for key in callers:
        r = client.request(method, url, json=body, headers=auth(key) if key else {})
        name = assert_documented(spec, method, path, r)
        if r.status_code < 300 and path not in ("/metrics", "/dashboard", "/docs", "/openapi.json"):
            assert name is not None, (method, path, "a JSON answer without a documented schema")


def test_answers_beyond_the_walk_are_documented_too(client: TestClient, hw: Application) -> None:
    admin = make_key(hw, "web", "admin")
    spec = _spec(client, admin)
    now = "2026-01-01T00:00:00Z"
    bad = {
        "event_id": "x1",
        "event_type": "view",
        "user_id": "u1",
        "surface": "web",
        "timestamp": now,
        "payload": {},
    }
    r = client.post("/v1/signals", json=[bad], headers=auth(admin))
    assert r.status_code == 207
    assert assert_documented(spec, "POST", "/v1/signals", r) == "IngestOutcome"
    r = client.get("/v1/users/u1/recommendations?k=0", headers=auth(admin))
    assert r.status_code == 422
    assert assert_documented(spec, "GET", "/v1/users/{user_id}/recommendations", r) == "Problem"
    r = client.post("/v1/contracts/check", content=b"team: [", headers=auth(admin))
    assert r.status_code == 422
    assert assert_documented(spec, "POST", "/v1/contracts/check", r) == "Problem"
    r = client.get("/v1/deletions?status=open", headers=auth(admin))
    assert assert_documented(spec, "GET", "/v1/deletions", r) == "DeletionList"


def test_a_route_cannot_encode_another_structure_than_it_documents() -> None:
    health = Answer(Health, "The process answers")
    assert health.reply(Health(status="ok")).body == b'{"status":"ok"}'
    with pytest.raises(TypeError, match="LoggedOut"):
        health.reply(LoggedOut(logged_out=True))  # type: ignore[arg-type]


def test_the_check_fails_when_an_answer_differs_from_its_structure() -> None:
    good = msgspec.json.encode(Health(status="ok"))
    assert_encodes(good, Health)
    for differs in (b'{"status": "ok", "uptime_s": 3}', b"{}", b'{"status": 1}'):
        with pytest.raises(AssertionError):
            assert_encodes(differs, Health)
    other = Problem(type="about:blank", title="Not Found", status=404, detail="none")
    with pytest.raises(AssertionError):
        assert_encodes(msgspec.json.encode(other), Health)


def test_not_ready_is_a_problem_that_keeps_the_readiness_report(
    client: TestClient, hw: Application
) -> None:
    operator = make_key(hw, "ops", "operator")
    spec = _spec(client, operator)
    ready = client.get("/v1/ready", headers=auth(operator))
    assert assert_documented(spec, "GET", "/v1/ready", ready) == "Readiness"
    hw.dedupe.close()  # the idempotency window stops answering
    r = client.get("/v1/ready", headers=auth(operator))
    doc = problem(r, 503, "not-ready")
    assert assert_documented(spec, "GET", "/v1/ready", r) == "Unready"
    assert doc["ready"] is False
    assert doc["backends"]["dedupe"]["ok"] is False
    assert doc["backends"]["control"]["ok"] is True
    assert "dedupe" in doc["detail"]
    assert r.headers["Retry-After"] == "1"


def test_status_with_a_running_consumer_is_its_documented_structure(
    client: TestClient, hw: Application
) -> None:
    from headwater.runtime.presence import ConsumerPresence

    ConsumerPresence(hw.control).beat(
        member="m-1",
        group="features",
        consumer="features",
        partitions={0: 3, 1: 3},
        records=12,
        fenced_batches=0,
        last_commit=1.0,
        force=True,
    )
    operator = make_key(hw, "ops", "operator")
    r = client.get("/v1/status", headers=auth(operator))
    assert assert_documented(_spec(client, operator), "GET", "/v1/status", r) == "StatusReport"
    [features] = [g for g in r.json()["groups"] if g["group"] == "features"]
    assert [i["member"] for i in features["instances"]] == ["m-1"]


def test_every_documented_body_is_the_structure_the_route_reads(
    client: TestClient, admin_key: str
) -> None:
    spec = _spec(client, admin_key)
    documented = 0
    for method, path in sorted(EXPECTED):
        operation = spec["paths"][path][method.lower()]
        _, body = request_for(method, path)
        if "requestBody" not in operation:
            assert body is None, (method, path, "a body the document does not describe")
            continue
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        if schema.get("type") == "array":  # a batch of events
            model = models()[schema["items"]["$ref"].removeprefix(_REF)]
            assert isinstance(body, list)
            for item in body:
                msgspec.json.decode(json.dumps(item), type=model)  # strict, as sent
        else:
            model = models()[schema["$ref"].removeprefix(_REF)]
            msgspec.convert(body, model)  # strict: an unknown or missing field fails
        documented += 1
    assert documented == 8
