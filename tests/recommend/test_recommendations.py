"""GET /v1/users/{user_id}/recommendations over real stores: streaming features from the bus,
batch outputs from a Delta archive; fresh, stale and thin-history answers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from headwater.application import Application
from headwater.batch import ITEM_COVIS, ITEM_POP, USER_BATCH, BatchSettings
from headwater.bus import Message
from headwater.config import Settings
from headwater.contract.signal import Signal, encode_signal
from headwater.gateway.app import create_app
from headwater.online import Position
from tests.archive._history import records, signal
from tests.conftest import server_url

DAY = date(2026, 3, 10)


def _history() -> list[Signal]:
    out: list[Signal] = []
    n = 0
    for u in range(12):  # many users view i1 with i2 and i3, fewer with i4
        for item in ("i1", "i2", "i3") + (("i4",) if u < 4 else ()):
            out.append(signal(n, "view", f"crowd{u}", item, DAY, minute=u))
            n += 1
    for u in range(20):  # popular on web: i9 most; i8 a little
        out.append(signal(n, "view", f"pop{u}", "i9", DAY, minute=1))
        if u < 3:
            out.append(signal(n + 1, "view", f"pop{u}", "i8", DAY - timedelta(days=1)))
        n += 2
    out.append(signal(n, "purchase", "alice", "i2", DAY - timedelta(days=2)))
    out.append(signal(n + 1, "view", "alice", "i4", DAY - timedelta(days=2), minute=1))
    return out


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    for name in ("HEADWATER_BUS_URL", "HEADWATER_CONTROL_URL", "HEADWATER_ARCHIVE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("HEADWATER_ONLINE_URL", raising=False)
    if request.param == "redis":
        prefix = f"t{uuid.uuid4().hex[:10]}"
        monkeypatch.setenv("HEADWATER_ONLINE_URL", f"{server_url('redis')}?prefix={prefix}")
    return Settings.from_env(tmp_path / "hw")


@pytest.fixture
def world(settings: Settings) -> Iterator[tuple[Application, TestClient]]:
    hw = Application(settings)
    hw.register_shipped_contracts()
    hw.open_archive_consumer().handle(records(_history()))
    runner = hw.open_batch_runner(hw.online, batch=BatchSettings(covis_min_support=1))
    runner.run(until=DAY)
    app = create_app(hw)
    reader, _ = hw.keys.create("recommendations", roles=("reader",), kind="service")
    with TestClient(app, headers={"Authorization": f"Bearer {reader}"}) as client:
        yield hw, client
    for ns in ("user", USER_BATCH, ITEM_COVIS, ITEM_POP):
        hw.online.clear(ns)
    hw.close()


def _stream(hw: Application, *events: tuple[str, str, str]) -> None:
    now = datetime.now(UTC)
    sigs = [
        Signal(
            event_id=f"s-{uuid.uuid4().hex}",
            event_type=etype,
            user_id=user,
            surface="web",
            item_id=item,
            received_at=now,
            timestamp=now - timedelta(seconds=len(events) - i),
            payload={"order_id": "o1", "quantity": 1, "price": 5.0, "currency": "USD"}
            if etype == "purchase"
            else {},
        )
        for i, (etype, user, item) in enumerate(events)
    ]
    hw.bus.publish([Message(s.user_id, encode_signal(s)) for s in sigs])
    runtime = hw.consumer("features", batch_size=500)
    while runtime.step():
        pass
    runtime.step()  # idle: the partitions are current, as_of is now
    runtime.close()
    time.sleep(0.06)  # past the reader's positions cache


def _get(client: TestClient, user: str, **params: Any) -> dict[str, Any]:
    r = client.get(f"/v1/users/{user}/recommendations", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_fresh_recent_views_expand_through_covisitation(
    world: tuple[Application, TestClient],
) -> None:
    hw, client = world
    _stream(hw, ("view", "alice", "i1"))
    body = _get(client, "alice", k=5, surface="web")
    assert body["stale"] is False
    assert body["fallback"] is None
    items = [x["item_id"] for x in body["items"]]
    assert items[0] == "i3", "i2 is co-visited more but alice bought it (batch history)"
    assert "i2" not in items
    assert "i1" not in items
    top = body["items"][0]
    assert top["source"] == "covisitation"
    assert top["because_of"] == ["i1"]
    assert "i1" in top["reason"]
    assert "recently" in top["reason"]
    assert body["excluded_purchased"] == 1
    used = body["features_used"]
    assert used["recently_viewed"]["used"] is True
    assert used["recently_viewed"]["as_of"]
    assert used["recently_viewed"]["source"] == "streaming"
    assert used["item_covis"]["as_of"] == "2026-03-11T00:00:00.000Z"
    assert used["user_batch"]["as_of"] == "2026-03-11T00:00:00.000Z"
    # History is thin (few co-visited items): popularity fills the rest, marked as such.
    assert {x["source"] for x in body["items"][1:]} <= {"covisitation", "popularity"}
    assert body["items"][-1]["source"] == "popularity"
    assert used["item_pop"]["used"] is True
    assert used["item_pop"]["note"] == "web:7d"
    assert items == ["i3", "i4", "i9", "i8"], "every web item but the seed and the purchase"


def test_streamed_purchase_is_excluded(world: tuple[Application, TestClient]) -> None:
    hw, client = world
    _stream(hw, ("view", "bob", "i1"), ("purchase", "bob", "i3"))
    body = _get(client, "bob", k=10)
    items = [x["item_id"] for x in body["items"]]
    assert "i3" not in items
    assert "i2" in items
    assert body["features_used"]["last_purchase"]["used"] is True


def test_stale_streaming_features_are_not_served_as_fresh(
    world: tuple[Application, TestClient],
) -> None:
    hw, client = world
    _stream(hw, ("view", "alice", "i1"))
    # The feature consumer stops: positions stay at an old as_of, past every budget.
    old = int((time.time() - 3600) * 1000)
    current = hw.online.positions("features")
    hw.online.put(
        "user",
        {},
        group="features",
        positions={p: Position(pos.next_offset, old) for p, pos in current.items()},
    )
    time.sleep(0.06)
    body = _get(client, "alice", k=5)
    assert body["stale"] is True
    assert body["fallback"] in ("batch_history", "popularity")
    assert any("stale" in note for note in body["notes"])
    used = body["features_used"]
    assert used["recently_viewed"]["used"] is False
    assert used["recently_viewed"]["stale"] is True
    for item in body["items"]:
        assert "recently" not in item["reason"]
        assert "i1" not in item["because_of"], "the stale recent view is not a seed"
    # alice's batch history (i2 bought, i4 viewed, as of the batch) seeds co-visitation.
    assert set(body["items"][0]["because_of"]) == {"i2", "i4"}
    assert "history (batch)" in body["items"][0]["reason"]
    assert body["fallback"] == "batch_history"
    assert "i2" not in [x["item_id"] for x in body["items"]]


def test_new_user_gets_popularity(world: tuple[Application, TestClient]) -> None:
    _services, client = world
    body = _get(client, "stranger", k=3, surface="web")
    assert body["fallback"] == "popularity"
    assert [x["item_id"] for x in body["items"]][:2] == ["i9", "i2"]  # i2: 12 views + a purchase
    assert all(x["source"] == "popularity" for x in body["items"])
    assert body["items"][0]["reason"].startswith("popular on web in the last 7 days")
    other = _get(client, "stranger", k=3, surface="smart-fridge")
    assert other["features_used"]["item_pop"]["note"] == "*:7d"
    assert other["items"][0]["reason"].startswith("popular everywhere")


def test_bad_k_is_refused(world: tuple[Application, TestClient]) -> None:
    _services, client = world
    assert client.get("/v1/users/alice/recommendations", params={"k": 0}).status_code == 422
    assert client.get("/v1/users/alice/recommendations", params={"k": 1000}).status_code == 422
