"""Contract endpoints: a producer team's CI checks and registers changes through the API."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient

from headwater.application import Application
from tests._gateway_fixtures import auth

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


def test_list_and_history(client: TestClient) -> None:
    listed = client.get("/v1/contracts").json()["event_types"]
    assert {t["name"] for t in listed} >= {"view", "rating", "purchase", "search"}
    rating = next(t for t in listed if t["name"] == "rating")
    assert rating["versions"] == [1]
    assert rating["payload"]["rating"]["maximum"] == 5
    assert client.get("/v1/contracts/nope").status_code == 404


def test_check_then_register_then_publish_new_field(client: TestClient, hw: Application) -> None:
    key, _ = hw.keys.create("reviews", event_types=("rating",), surfaces=("reviews",))
    check = client.post("/v1/contracts/check", json=REVIEWS_V2, headers=auth(key))
    assert check.status_code == 200
    assert check.json()["changed"] == [{"name": "rating", "version": 2}]
    registered = client.post("/v1/contracts", json=REVIEWS_V2, headers=auth(key))
    assert registered.status_code == 201, registered.text
    assert client.get("/v1/contracts/rating").json()["versions"][-1]["version"] == 2
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
    key, _ = hw.keys.create("reviews")
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
    assert refused.status_code == 409
    assert len(refused.json()["violations"]) == 6


def test_only_the_owner_registers(client: TestClient, hw: Application) -> None:
    key, _ = hw.keys.create("web")
    r = client.post("/v1/contracts", json=REVIEWS_V2, headers=auth(key))
    assert r.status_code == 403
    assert client.post("/v1/contracts/check", json=REVIEWS_V2).status_code == 401


def test_bad_document_is_422(client: TestClient, hw: Application) -> None:
    key, _ = hw.keys.create("reviews")
    bad = {"team": "reviews", "event_types": {"rating": {"surfaces": "web"}}}
    r = client.post("/v1/contracts/check", json=bad, headers=auth(key))
    assert r.status_code == 422
    assert "surfaces" in r.json()["message"]
