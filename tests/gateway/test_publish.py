"""POST /v1/signals: per-event results, status codes, scope, limits and idempotence."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient

from headwater.application import Application
from headwater.bus import open_bus
from headwater.contract.signal import decode_signal
from headwater.errors import BackendUnavailableError
from tests._gateway_fixtures import auth, problem


def event(i: int, **over: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "event_id": f"ev-{i}",
        "event_type": "view",
        "user_id": f"u{i % 3}",
        "item_id": f"i{i}",
        "surface": "web",
        "timestamp": datetime.now(UTC).isoformat(),
        "payload": {"dwell_ms": 10 * i},
    }
    e.update(over)
    return e


def published(hw: Application) -> list[Any]:
    bus = open_bus(hw.settings.bus_url)
    consumer = bus.consumer(f"check-{id(bus)}")
    out = []
    while records := consumer.poll(1000, 0.2):
        out.extend(decode_signal(r.value) for r in records)
    consumer.close()
    bus.close()
    return out


def test_all_accepted_is_200_and_published_with_envelope(
    client: TestClient, hw: Application, web_key: str
) -> None:
    r = client.post("/v1/signals", json=[event(i) for i in range(5)], headers=auth(web_key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["rejected"], body["duplicates"]) == (5, 0, 0)
    assert [x["status"] for x in body["results"]] == ["accepted"] * 5
    signals = published(hw)
    assert sorted(s.event_id for s in signals) == [f"ev-{i}" for i in range(5)]
    assert {s.producer for s in signals} == {"web"}
    assert all(s.schema_version == 1 and s.received_at is not None for s in signals)


def test_partial_is_207_with_each_rejection(
    client: TestClient, hw: Application, web_key: str
) -> None:
    batch = [event(0), event(1, surface="tv"), event(2, payload={"dwell_ms": "x"}), event(3)]
    r = client.post("/v1/signals", json=batch, headers=auth(web_key))
    assert r.status_code == 207
    results = r.json()["results"]
    assert [x["status"] for x in results] == ["accepted", "rejected", "rejected", "accepted"]
    assert (results[1]["event_id"], results[1]["field"], results[1]["rule"]) == (
        "ev-1",
        "surface",
        "surface_not_allowed",
    )
    assert (results[2]["field"], results[2]["rule"]) == ("payload.dwell_ms", "wrong_type")
    assert sorted(s.event_id for s in published(hw)) == ["ev-0", "ev-3"]


def test_resent_events_are_accepted_without_second_publish(
    client: TestClient, hw: Application, web_key: str
) -> None:
    batch = [event(i) for i in range(3)]
    assert client.post("/v1/signals", json=batch, headers=auth(web_key)).status_code == 200
    again = client.post("/v1/signals", json=[*batch, event(9), event(9)], headers=auth(web_key))
    assert again.status_code == 200
    body = again.json()
    assert (body["accepted"], body["duplicates"]) == (1, 4)
    assert [x["status"] for x in body["results"]] == ["duplicate"] * 3 + ["accepted", "duplicate"]
    ids = [s.event_id for s in published(hw)]
    assert sorted(ids) == ["ev-0", "ev-1", "ev-2", "ev-9"]


def test_gzip_and_ndjson(client: TestClient, hw: Application, web_key: str) -> None:
    body = gzip.compress(json.dumps([event(1), event(2)]).encode())
    r = client.post(
        "/v1/signals",
        content=body,
        headers={**auth(web_key), "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    lines = "\n".join([json.dumps(event(3)), "{broken", json.dumps(event(4))])
    r = client.post(
        "/v1/signals",
        content=lines,
        headers={**auth(web_key), "Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 207
    assert [x["status"] for x in r.json()["results"]] == ["accepted", "rejected", "accepted"]
    assert r.json()["results"][1]["rule"] == "malformed_json"
    assert len(published(hw)) == 4


def test_auth_errors(client: TestClient, hw: Application, web_key: str) -> None:
    assert client.post("/v1/signals", json=[event(0)]).status_code == 401
    r = client.post("/v1/signals", json=[event(0)], headers=auth("hwk_nope_nope"))
    doc = problem(r, 401, "unauthenticated")
    assert doc["instance"] == "/v1/signals"
    assert doc["request_id"] == r.headers["X-Request-ID"]
    assert r.headers["WWW-Authenticate"] == "Bearer"
    ok = client.post("/v1/signals", json=[event(0)], headers={"X-API-Key": web_key})
    assert ok.status_code == 200
    key_id = web_key.split("_")[1]
    hw.keys.revoke(key_id)
    client.app.state.key_cache.clear()  # type: ignore[attr-defined]
    assert client.post("/v1/signals", json=[event(1)], headers=auth(web_key)).status_code == 401
    assert [s.event_id for s in published(hw)] == ["ev-0"]


def test_scope_is_enforced_for_the_whole_batch(client: TestClient, hw: Application) -> None:
    secret, _ = hw.keys.create("reviews", event_types=("rating",), surfaces=("reviews",))
    rating = event(0, event_type="rating", surface="reviews", payload={"rating": 5})
    assert client.post("/v1/signals", json=[rating], headers=auth(secret)).status_code == 200
    r = client.post(
        "/v1/signals",
        json=[
            event(1, event_id="r2", event_type="rating", surface="reviews", payload={"rating": 4}),
            event(2),
        ],
        headers=auth(secret),
    )
    doc = problem(r, 403, "forbidden")
    assert "event_type 'view' not allowed" in doc["detail"]
    # The refused event is named: index, event_id, field and rule.
    assert doc["errors"] == [
        {
            "index": 1,
            "event_id": "ev-2",
            "event_type": "view",
            "field": "event_type",
            "rule": "scope",
            "message": "event_type 'view' not allowed",
        }
    ]
    wrong_surface = event(3, event_type="rating", surface="web", payload={"rating": 1})
    r = client.post("/v1/signals", json=[wrong_surface], headers=auth(secret))
    [refused] = problem(r, 403, "forbidden")["errors"]
    assert (refused["index"], refused["field"], refused["rule"]) == (0, "surface", "scope")
    assert [s.event_id for s in published(hw)] == ["ev-0"]


def test_size_limits_and_malformed(client: TestClient, web_key: str) -> None:
    r = client.post("/v1/signals", json=[event(i) for i in range(501)], headers=auth(web_key))
    problem(r, 413, "too-large")
    r = client.post("/v1/signals", content=b"x" * (1024 * 1024 + 1), headers=auth(web_key))
    problem(r, 413, "too-large")
    bomb = gzip.compress(b"[" + b" " * (8 * 1024 * 1024) + b"]")
    r = client.post(
        "/v1/signals", content=bomb, headers={**auth(web_key), "Content-Encoding": "gzip"}
    )
    assert r.status_code == 413
    for bad in (b"{not json", b'{"event_id": 1}', b"", b"\xff\xfe"):
        r = client.post("/v1/signals", content=bad, headers=auth(web_key))
        problem(r, 400, "malformed-body")
    r = client.post(
        "/v1/signals", content=b"abc", headers={**auth(web_key), "Content-Encoding": "gzip"}
    )
    assert r.status_code == 400


def test_rate_limit_429_with_retry_after(client: TestClient, hw: Application) -> None:
    secret, _ = hw.keys.create("email", event_types=("view",), rate_limit_eps=5, burst=10)
    assert (
        client.post(
            "/v1/signals", json=[event(i) for i in range(10)], headers=auth(secret)
        ).status_code
        == 200
    )
    r = client.post("/v1/signals", json=[event(i) for i in range(10, 15)], headers=auth(secret))
    problem(r, 429, "rate-limited")
    assert int(r.headers["Retry-After"]) >= 1


def test_the_rate_limit_counts_a_batchs_events_not_words_in_it(
    client: TestClient, hw: Application
) -> None:
    # The count comes from the JSON guard's read of the array: text that spells a field
    # name inside an event is not another event, and a refused body spends nothing.
    secret, _ = hw.keys.create("email", event_types=("view",), rate_limit_eps=5, burst=10)
    spelled = {"referrer": '"event_id" "event_id" "event_id"'}
    r = client.post("/v1/signals", content=b'[{"a": 1, "a": 2}]', headers=auth(secret))
    problem(r, 400, "malformed-body")
    r = client.post(
        "/v1/signals", json=[event(i, payload=spelled) for i in range(10)], headers=auth(secret)
    )
    assert r.status_code == 200, r.text
    r = client.post("/v1/signals", json=[event(10)], headers=auth(secret))
    problem(r, 429, "rate-limited")


def test_an_event_past_the_size_limit_is_refused_alone(client: TestClient, web_key: str) -> None:
    # The batch is bounded per event from the guard's longest element, not a second read.
    big = event(1, payload={"referrer": "r" * (40 * 1024)})
    r = client.post("/v1/signals", json=[event(0), big, event(2)], headers=auth(web_key))
    assert r.status_code == 207, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == ["accepted", "rejected", "accepted"]
    assert results[1]["rule"] == "event_too_large"


def test_bus_unavailable_is_503_and_nothing_published(
    client: TestClient, hw: Application, web_key: str
) -> None:
    real = hw.bus.publish

    def down(_messages: Any) -> None:
        raise BackendUnavailableError("bus is down")

    hw.bus.publish = down  # type: ignore[method-assign]
    r = client.post("/v1/signals", json=[event(1)], headers=auth(web_key))
    hw.bus.publish = real  # type: ignore[method-assign]
    assert "bus is down" in problem(r, 503, "backend-unavailable")["detail"]
    assert r.headers["Retry-After"] == "1"
    assert published(hw) == []
    # The producer retries the whole batch: it is accepted, not treated as a duplicate.
    r = client.post("/v1/signals", json=[event(1)], headers=auth(web_key))
    assert r.json()["accepted"] == 1
