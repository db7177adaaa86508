"""Contract endpoints: a producer team's CI checks and registers changes through the API."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient

from headwater.application import Application
from tests._gateway_fixtures import auth, make_key, problem

REVIEWS_V2 = {
    "team": "reviews",
    "event_types": {
        "rating": {
            "surfaces": ["web", "ios", "android", "reviews", "email"],
            "item": True,
            "freshness_budget": "10m",
            "payload": {
                "rating": {"type": "int", "required": True, "min": 1, "max": 5},
                "text": {"type": "string", "max_length": 2000},
                "verified_purchase": {"type": "bool"},
                "tags": {
                    "type": "list",
                    "items": "enum",
                    "max_items": 5,
                    "values": ["quality", "price", "delivery", "fit", "service"],
                },
                "helpful": {"type": "int", "min": 0},
            },
        }
    },
}


def test_list_and_history(client: TestClient, web_key: str) -> None:
    assert client.get("/v1/contracts").status_code == 401
    listed = client.get("/v1/contracts", headers=auth(web_key)).json()["event_types"]
    assert {t["name"] for t in listed} >= {"view", "rating", "purchase", "search"}
    rating = next(t for t in listed if t["name"] == "rating")
    assert rating["versions"] == [1]
    assert rating["payload"]["rating"]["maximum"] == 5
    assert client.get("/v1/contracts/nope", headers=auth(web_key)).status_code == 404


def test_check_then_register_then_publish_new_field(client: TestClient, hw: Application) -> None:
    key = make_key(
        hw, "reviews", "contracts", "producer", event_types=("rating",), surfaces=("reviews",)
    )
    check = client.post("/v1/contracts/check", json=REVIEWS_V2, headers=auth(key))
    assert check.status_code == 200
    assert check.json()["changed"] == [{"name": "rating", "version": 2}]
    registered = client.post("/v1/contracts", json=REVIEWS_V2, headers=auth(key))
    assert registered.status_code == 201, registered.text
    history = client.get("/v1/contracts/rating", headers=auth(key)).json()
    assert history["versions"][-1]["version"] == 2
    event = {
        "event_id": "r-1",
        "event_type": "rating",
        "user_id": "u1",
        "item_id": "i1",
        "surface": "reviews",
        "timestamp": datetime.now(UTC).isoformat(),
        "payload": {"rating": 4, "helpful": 3},
    }
    published = client.post("/v1/signals", json=[event], headers=auth(key))
    assert published.status_code == 200, published.text


def test_incompatible_change_is_refused_with_every_violation(
    client: TestClient, hw: Application
) -> None:
    key = make_key(hw, "reviews", "contracts")
    broken = {
        "team": "reviews",
        "event_types": {
            "rating": {
                "surfaces": ["reviews"],
                "item": True,
                "payload": {
                    "rating": {"type": "float", "required": True},
                    "mood": {"type": "string", "required": True},
                },
            }
        },
    }
    check = client.post("/v1/contracts/check", json=broken, headers=auth(key)).json()
    assert check["compatible"] is False
    rules = {(v["field"], v["rule"]) for v in check["violations"]}
    assert rules == {
        (None, "surface_removed"),
        ("rating", "type_changed"),
        ("text", "field_removed"),
        ("verified_purchase", "field_removed"),
        ("tags", "field_removed"),
        ("mood", "required_field_added"),
    }
    refused = client.post("/v1/contracts", json=broken, headers=auth(key))
    found = problem(refused, 409, "incompatible-change")["errors"]
    assert {(e.get("field"), e["rule"]) for e in found} == rules
    assert all(e["event_type"] == "rating" and e["message"] for e in found)
    assert all(e["to_version"] == e["from_version"] + 1 for e in found)


def test_only_the_owner_registers(client: TestClient, hw: Application) -> None:
    web = make_key(hw, "web", "contracts")
    r = client.post("/v1/contracts", json=REVIEWS_V2, headers=auth(web))
    assert "web" in problem(r, 403, "forbidden")["detail"]
    # The web team may not take the type by naming the reviews team's document either.
    stolen = {**REVIEWS_V2, "team": "web"}
    r = client.post("/v1/contracts", json=stolen, headers=auth(web))
    assert "owned by team 'reviews'" in problem(r, 403, "forbidden")["detail"]
    history = client.get("/v1/contracts/rating", headers=auth(web)).json()
    assert [v["owner"] for v in history["versions"]] == ["reviews"]
    assert client.post("/v1/contracts/check", json=REVIEWS_V2).status_code == 401
    # A producer key may check (a team's CI) but not register.
    producer = make_key(hw, "reviews", "producer")
    assert (
        client.post("/v1/contracts/check", json=REVIEWS_V2, headers=auth(producer)).status_code
        == 200
    )
    r = client.post("/v1/contracts", json=REVIEWS_V2, headers=auth(producer))
    assert "contracts" in problem(r, 403, "forbidden")["detail"]


def test_a_new_type_belongs_to_its_team_and_only_admin_moves_it(
    client: TestClient, hw: Application, admin_key: str
) -> None:
    search = make_key(hw, "search", "contracts")
    doc = {
        "team": "search",
        "event_types": {"autocomplete": {"surfaces": ["web"], "item": False, "payload": {}}},
    }
    assert client.post("/v1/contracts", json=doc, headers=auth(search)).status_code == 201
    moved = {"owner": "web"}
    r = client.put("/v1/contracts/autocomplete/owner", json=moved, headers=auth(search))
    assert "admin" in problem(r, 403, "forbidden")["detail"]
    r = client.put("/v1/contracts/autocomplete/owner", json=moved, headers=auth(admin_key))
    assert r.status_code == 200, r.text
    owners = [
        v["owner"]
        for v in client.get("/v1/contracts/autocomplete", headers=auth(search)).json()["versions"]
    ]
    assert owners == ["search", "web"]
    # Now the search team may no longer evolve it.
    assert client.post("/v1/contracts", json=doc, headers=auth(search)).status_code == 403


def test_bad_document_is_422(client: TestClient, hw: Application) -> None:
    key = make_key(hw, "reviews", "contracts")
    bad = {"team": "reviews", "event_types": {"rating": {"surfaces": "web"}}}
    r = client.post("/v1/contracts/check", json=bad, headers=auth(key))
    assert "surfaces" in problem(r, 422, "invalid-definition")["detail"]
