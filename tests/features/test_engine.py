"""Feature kinds, one by one: counts, windows, recency, lateness, duplicates, staleness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from headwater.contract.signal import Signal
from headwater.features.engine import FeatureEngine

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def sig(
    i: int,
    etype: str = "view",
    *,
    item: str | None = "i1",
    ago: float = 0,
    surface: str = "web",
    payload: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> Signal:
    return Signal(
        event_id=event_id or f"e{i}",
        event_type=etype,
        user_id="u",
        surface=surface,
        timestamp=NOW - timedelta(seconds=ago),
        payload=payload or {},
        item_id=item,
    )


def run(
    *signals: Signal, lateness_ms: int = 3_600_000, budgets: dict[str, float] | None = None
) -> dict[str, Any]:
    engine = FeatureEngine(lateness_ms=lateness_ms, budgets_s=budgets)
    state = engine.decode(engine.encode({}))
    engine.apply(state, signals)
    state = engine.decode(engine.encode(state))  # as stored and read back
    return engine.read("u", state, now_ms=NOW_MS, as_of_ms=NOW_MS).features


def test_counts_and_windows() -> None:
    f = run(
        sig(1, ago=30),
        sig(2, ago=2 * 3600),
        sig(3, ago=3 * 86400),
        sig(4, "click", ago=10),
        sig(5, ago=9 * 86400),
        lateness_ms=30 * 86_400_000,
    )
    assert f["counts"] == {"view": 4, "click": 1}
    assert f["window_counts"]["1h"] == {"view": 1, "click": 1}
    assert f["window_counts"]["24h"] == {"view": 2, "click": 1}
    assert f["window_counts"]["7d"] == {"view": 3, "click": 1}


def test_windows_roll_with_read_time() -> None:
    engine = FeatureEngine()
    state: dict[str, Any] = {}
    engine.apply(state, [sig(1, ago=0)])
    later = engine.read("u", state, now_ms=NOW_MS + 2 * 3_600_000, as_of_ms=NOW_MS)
    assert later.features["window_counts"]["1h"] == {}
    assert later.features["window_counts"]["24h"] == {"view": 1}


def test_recently_viewed_is_distinct_newest_first_and_bounded() -> None:
    views = [sig(i, item=f"i{i % 25}", ago=100 - i) for i in range(60)]
    f = run(*views)
    items = [x["item_id"] for x in f["recently_viewed"]]
    assert len(items) == 20
    assert len(set(items)) == 20
    assert items[0] == "i9"  # event 59
    out_of_order = run(sig(1, item="a", ago=5), sig(2, item="b", ago=50), sig(3, item="a", ago=80))
    assert [x["item_id"] for x in out_of_order["recently_viewed"]] == ["a", "b"]


def test_saved_items_can_be_removed() -> None:
    f = run(
        sig(1, "save", item="a", ago=30, payload={"action": "add"}),
        sig(2, "save", item="b", ago=20, payload={"action": "add"}),
        sig(3, "save", item="a", ago=10, payload={"action": "remove"}),
    )
    assert [x["item_id"] for x in f["recently_saved"]] == ["b"]


def test_last_purchase_rating_last_time_surfaces() -> None:
    f = run(
        sig(
            1,
            "purchase",
            ago=300,
            payload={"order_id": "o1", "price": 5.0, "currency": "USD", "quantity": 1},
        ),
        sig(
            2,
            "purchase",
            item="i2",
            ago=100,
            surface="ios",
            payload={"order_id": "o2", "price": 7.5, "currency": "EUR", "quantity": 2},
        ),
        sig(3, "rating", ago=50, payload={"rating": 4}),
        sig(4, "rating", ago=40, payload={"rating": 5}),
        sig(5, "search", item=None, ago=2 * 86400, surface="search", payload={"query": "x"}),
    )
    assert f["last_purchase"]["item_id"] == "i2"
    assert f["last_purchase"]["order_id"] == "o2"
    assert f["last_purchase"]["price"] == 7.5
    assert f["rating"] == {"mean": 4.5, "count": 2}
    assert f["last_event_at"] == "2026-11-25T11:59:20.000Z"  # fixed width: ms always there
    assert f["active_surfaces_24h"] == ["ios", "web"]


def test_duplicates_are_applied_once() -> None:
    first = sig(1, ago=10)
    f = run(first, sig(2, ago=5), first, sig(1, ago=10, event_id="e1"))
    assert f["counts"] == {"view": 2}


def test_late_events_are_counted_not_windowed() -> None:
    engine = FeatureEngine(lateness_ms=60_000)
    state: dict[str, Any] = {}
    engine.apply(state, [sig(1, ago=0), sig(2, ago=600)])  # 10 minutes behind the newest
    assert engine.late_events == 1
    f = engine.read("u", state, now_ms=NOW_MS, as_of_ms=NOW_MS).features
    assert f["counts"] == {"view": 2}
    assert f["window_counts"]["1h"] == {"view": 1}


def test_stale_when_as_of_is_older_than_the_budget() -> None:
    engine = FeatureEngine(budgets_s={"view": 60.0, "rating": 600.0, "click": 60.0})
    state: dict[str, Any] = {}
    engine.apply(state, [sig(1)])
    fresh = engine.read("u", state, now_ms=NOW_MS, as_of_ms=NOW_MS - 30_000)
    assert not fresh.stale
    assert fresh.age_s == 30.0
    late = engine.read("u", state, now_ms=NOW_MS, as_of_ms=NOW_MS - 120_000)
    assert late.stale
    assert "recently_viewed" in late.stale_features
    assert "rating" not in late.stale_features  # its budget is 10 minutes
    unknown = engine.read("u", state, now_ms=NOW_MS, as_of_ms=None)
    assert unknown.stale
    assert unknown.as_of is None


def test_selecting_features() -> None:
    engine = FeatureEngine()
    answer = engine.read("u", {}, now_ms=NOW_MS, as_of_ms=NOW_MS, select=["counts"])
    assert list(answer.features) == ["counts"]
    assert answer.found is False
