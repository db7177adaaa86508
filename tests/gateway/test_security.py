"""Every route and every caller: the one policy table, read back from the app, enforced.

The expected table is pinned here on purpose (like the public API): a route added, or
a role changed, fails this test until the table below says so. Every operation of the
OpenAPI document is walked with no key, an unknown key, a revoked key, a key of each
role, and keys of the wrong team.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from headwater.access.roles import Role
from headwater.application import Application
from headwater.gateway.security import policy_table
from tests._gateway_fixtures import auth, make_key, problem

PUBLIC = ("public",)
ANY = ("any key",)
#: (method, path) -> the roles that may call it (admin always may).
EXPECTED: dict[tuple[str, str], tuple[str, ...]] = {
    ("POST", "/v1/signals"): ("producer",),
    ("GET", "/v1/contracts"): ANY,
    ("GET", "/v1/contracts/{name}"): ANY,
    ("POST", "/v1/contracts/check"): ("contracts", "producer"),
    ("POST", "/v1/contracts"): ("contracts",),
    ("PUT", "/v1/contracts/{name}/owner"): ("admin",),
    ("GET", "/v1/users/{user_id}/features"): ("reader",),
    ("POST", "/v1/features/batch"): ("reader",),
    ("GET", "/v1/users/{user_id}/recommendations"): ("reader",),
    ("POST", "/v1/deletions"): ("privacy",),
    ("GET", "/v1/deletions"): ("privacy", "operator"),
    ("GET", "/v1/deletions/{request_id}"): ("privacy",),
    ("GET", "/metrics"): ("operator",),
    ("GET", "/v1/slo"): ("operator",),
    ("GET", "/v1/stats/ingestion"): ("operator",),
    ("GET", "/v1/stats/consumers"): ("operator",),
    ("GET", "/v1/ready"): ("operator",),
    ("GET", "/v1/status"): ("operator",),
    ("GET", "/v1/health"): PUBLIC,
    ("GET", "/dashboard"): PUBLIC,
    ("POST", "/dashboard/session"): PUBLIC,
    ("DELETE", "/dashboard/session"): PUBLIC,
    ("GET", "/v1/dashboard/live"): ("operator",),
    ("GET", "/v1/dashboard/trends"): ("operator",),
    ("POST", "/v1/admin/keys"): ("admin",),
    ("GET", "/v1/admin/keys"): ("admin",),
    ("DELETE", "/v1/admin/keys/{key_id}"): ("admin",),
    ("GET", "/openapi.json"): ANY,
    ("GET", "/docs"): ANY,
}

WEB_DOC = {
    "team": "web",
    "event_types": {"teaser_view": {"surfaces": ["web"], "item": True, "payload": {}}},
}


def _event() -> dict[str, Any]:
    return {
        "event_id": f"e-{datetime.now(UTC).timestamp()}",
        "event_type": "view",
        "user_id": "u1",
        "item_id": "i1",
        "surface": "web",
        "timestamp": datetime.now(UTC).isoformat(),
        "payload": {},
    }


def request_for(method: str, path: str) -> tuple[str, dict[str, Any] | list[Any] | None]:
    """A concrete URL and a well-formed body for each route."""
    url = (
        path.replace("{user_id}", "u1")
        .replace("{name}", "view")
        .replace("{request_id}", "er_unknown")
        .replace("{key_id}", "nokey")
    )
    bodies: dict[tuple[str, str], Any] = {
        ("POST", "/v1/signals"): [_event()],
        ("POST", "/v1/contracts/check"): WEB_DOC,
        ("POST", "/v1/contracts"): WEB_DOC,
        ("PUT", "/v1/contracts/{name}/owner"): {"owner": "web"},
        ("POST", "/v1/features/batch"): {"user_ids": ["u1"]},
        ("POST", "/v1/deletions"): {"user_id": "u1", "legal_basis": "gdpr-art17"},
        ("POST", "/v1/admin/keys"): {"principal": "newteam", "roles": ["reader"]},
        ("POST", "/dashboard/session"): {"key": "hwk_x_y"},
    }
    return url, bodies.get((method, path))


@pytest.fixture
def keys(hw: Application) -> dict[str, str]:
    found = {role.value: make_key(hw, "web", role.value) for role in Role}
    revoked, record = hw.keys.create("web", roles=("admin",))
    hw.keys.revoke(record.key_id)
    found["revoked"] = revoked
    found["unknown"] = "hwk_deadbeef_" + "x" * 43
    return found


def test_the_policy_table_is_the_one_pinned_here(client: TestClient) -> None:
    assert policy_table(client.app) == EXPECTED  # type: ignore[arg-type]


def test_the_openapi_document_shows_each_routes_roles(
    client: TestClient, keys: dict[str, str]
) -> None:
    spec = client.get("/openapi.json", headers=auth(keys["reader"])).json()
    assert set(spec["components"]["securitySchemes"]) == {
        "bearer",
        "apiKeyHeader",
        "dashboardSession",
    }
    seen = set()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            key = (method.upper(), path)
            seen.add(key)
            roles = EXPECTED[key]
            if roles == PUBLIC:
                assert "security" not in operation, key
                continue
            scopes = {tuple(s) for req in operation["security"] for s in req.values()}
            assert scopes == {() if roles == ANY else roles}, (key, operation["security"])
    assert seen == set(EXPECTED), "every route is in the OpenAPI document"


@pytest.mark.parametrize(("method", "path"), sorted(EXPECTED))
def test_every_route_and_every_caller(
    client: TestClient, keys: dict[str, str], method: str, path: str
) -> None:
    roles = EXPECTED[(method, path)]
    url, body = request_for(method, path)

    def call(key: str | None) -> Any:
        headers = auth(key) if key else {}
        return client.request(method, url, json=body, headers=headers)

    if roles == PUBLIC:
        for key in (None, keys["unknown"], keys["revoked"], keys["producer"]):
            r = call(key)
            # The login itself refuses the made-up key in its body; nothing else does.
            assert r.status_code != 401 or path == "/dashboard/session", (key, r.text)
        return
    for key in (None, keys["unknown"], keys["revoked"]):
        r = call(key)
        problem(r, 401, "unauthenticated")
        assert r.headers["WWW-Authenticate"] == "Bearer"
        if key:
            assert key not in r.text, "an error never repeats the key"
    for role in Role:
        r = call(keys[role.value])
        allowed = roles == ANY or role.value in roles or role is Role.ADMIN
        if allowed:
            assert r.status_code not in (401, 403), (role, r.status_code, r.text)
        else:
            message = problem(r, 403, "forbidden")["detail"]
            assert "needs the role" in message
            assert all(needed in message for needed in roles), message
            assert keys[role.value] not in r.text


def test_the_wrong_team_is_refused(client: TestClient, hw: Application) -> None:
    # A producer key of the search team may not publish the web team's views ...
    search = make_key(hw, "search", "producer", "contracts")
    r = client.post("/v1/signals", json=[_event()], headers=auth(search))
    assert "view" in problem(r, 403, "forbidden")["detail"]
    # ... nor may its contracts role register the web team's document.
    r = client.post("/v1/contracts", json=WEB_DOC, headers=auth(search))
    assert r.status_code == 403
    # A producer key asked for every type does publish it; the list shows it as *.
    everything, record = hw.keys.create("search", event_types=("*",))
    assert record.event_types == ("*",)
    assert client.post("/v1/signals", json=[_event()], headers=auth(everything)).status_code == 200


def test_revocation_applies_within_a_second(client: TestClient, hw: Application) -> None:
    import time

    from headwater.gateway.security import KEY_CACHE_S

    secret, record = hw.keys.create("web", roles=("reader",))
    assert client.get("/v1/users/u1/features", headers=auth(secret)).status_code == 200
    hw.keys.revoke(record.key_id)
    time.sleep(KEY_CACHE_S + 0.05)
    r = client.get("/v1/users/u1/features", headers=auth(secret))
    assert "revoked" in problem(r, 401, "unauthenticated")["detail"]


def test_health_is_liveness_only_and_readiness_needs_an_operator(
    client: TestClient, keys: dict[str, str]
) -> None:
    assert client.get("/v1/health").json() == {"status": "ok"}
    ready = client.get("/v1/ready", headers=auth(keys["operator"])).json()
    assert ready["ready"] is True
    assert set(ready["backends"]) == {"control", "bus", "online", "dedupe"}


def test_admin_manages_keys_over_the_api(client: TestClient, keys: dict[str, str]) -> None:
    created = client.post(
        "/v1/admin/keys",
        json={"principal": "recommendations", "kind": "service", "roles": ["reader"]},
        headers=auth(keys["admin"]),
    )
    assert created.status_code == 201, created.text
    secret = created.json()["api_key"]
    key_id = created.json()["key"]["key_id"]
    assert client.get("/v1/users/u1/features", headers=auth(secret)).status_code == 200
    listed = client.get("/v1/admin/keys", headers=auth(keys["admin"])).json()["keys"]
    assert key_id in [k["key_id"] for k in listed]
    assert all("hash" not in str(k) and "hwk_" not in str(k) for k in listed)
    bad = client.post(
        "/v1/admin/keys",
        json={"principal": "x", "roles": ["superuser"]},
        headers=auth(keys["admin"]),
    )
    assert "superuser" in problem(bad, 400, "invalid-argument")["detail"]
    revoked = client.delete(f"/v1/admin/keys/{key_id}", headers=auth(keys["admin"]))
    assert revoked.status_code == 200
    assert revoked.json()["key"]["revoked_at"]


def test_a_key_given_twice_is_refused_on_every_json_route(
    client: TestClient, keys: dict[str, str]
) -> None:
    body = b'{"user_id": "victim", "user_id": "attacker", "legal_basis": "gdpr-art17"}'
    r = client.post(
        "/v1/deletions",
        content=body,
        headers={**auth(keys["privacy"]), "Content-Type": "application/json"},
    )
    doc = problem(r, 400, "malformed-body")
    assert 'duplicate key "user_id"' in doc["detail"]
    assert [(e["field"], e["rule"]) for e in doc["errors"]] == [("$.user_id", "duplicate_key")]
    r = client.post(
        "/v1/features/batch",
        content=b'{"user_ids": ["a"], "user_ids": ["b"]}',
        headers=auth(keys["reader"]),
    )
    assert "user_ids" in problem(r, 400, "malformed-body")["detail"]


@pytest.mark.parametrize(
    ("body", "kind", "says"),
    [
        ({"user_id": "u1", "legal_basis": "she asked nicely"}, "invalid-erasure-request", "one of"),
        (
            {"user_id": "u1", "legal_basis": "gdpr-art17", "reason": "jane@example.com, 1990"},
            "malformed-body",
            "reason",
        ),
        (
            {"user_id": "u1", "legal_basis": "gdpr-art17", "reference": "Jane Doe, born 1990"},
            "invalid-erasure-request",
            "ticket or case id",
        ),
    ],
    ids=["unknown legal basis", "free-text reason", "bad reference"],
)
def test_an_erasure_request_takes_a_legal_basis_never_free_text(
    client: TestClient,
    keys: dict[str, str],
    body: dict[str, str],
    kind: str,
    says: str,
) -> None:
    r = client.post("/v1/deletions", json=body, headers=auth(keys["privacy"]))
    assert says in problem(r, 400, kind)["detail"]
    assert "jane@example.com" not in r.text
    assert "Jane Doe" not in r.text
    listed = client.get("/v1/deletions", headers=auth(keys["privacy"]))
    assert listed.status_code == 200
    assert listed.json()["requests"] == [], "nothing was opened"


def test_a_dashboard_session_reads_as_an_operator_and_never_writes(
    client: TestClient, hw: Application, keys: dict[str, str]
) -> None:
    # An administrator logs in to the dashboard: the cookie is not the admin key.
    login = client.post("/dashboard/session", json={"key": keys["admin"]})
    assert login.status_code == 200, login.text
    assert login.json()["roles"] == ["reader", "operator"]
    assert client.cookies.get("hw_session")
    # It reads what the dashboard shows: its data, the operator's reads, a user lookup.
    for path in ("/v1/dashboard/live", "/v1/stats/ingestion", "/v1/users/u1/features"):
        assert client.get(path).status_code == 200, path
    # Nothing else of the admin's: 403 on reads needing another role ...
    for path in ("/v1/admin/keys", "/v1/deletions/er_unknown"):
        assert "needs the role" in problem(client.get(path), 403, "forbidden")["detail"]
    # ... and 401 on every write route: the cookie authenticates no write at all.
    before = len(hw.keys.list())
    writes = [(m, p) for (m, p), roles in EXPECTED.items() if m != "GET" and roles != PUBLIC]
    assert ("POST", "/v1/admin/keys") in writes
    for method, path in writes:
        url, body = request_for(method, path)
        r = client.request(method, url, json=body)
        assert "session only reads" in problem(r, 401, "unauthenticated")["detail"], (method, path)
    assert len(hw.keys.list()) == before, "no key was created with the cookie"
    # The logout (public, a write) still works, and ends the session.
    assert client.delete("/dashboard/session").status_code == 200
    assert client.get("/v1/dashboard/live").status_code == 401


def test_a_session_has_only_the_dashboards_roles_its_key_holds(
    client: TestClient, keys: dict[str, str]
) -> None:
    login = client.post("/dashboard/session", json={"key": keys["operator"]})
    assert login.json()["roles"] == ["operator"]
    assert client.get("/v1/dashboard/live").status_code == 200
    r = client.get("/v1/users/u1/features")
    assert "reader" in problem(r, 403, "forbidden")["detail"]
