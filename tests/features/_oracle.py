"""The features computed the obvious way, straight from the list of published events.

Tests compare the streaming consumer's rows with this: no buckets to prune, no rows,
no positions, no replays.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from headwater.contract.signal import Signal

HOUR, MINUTE = 3_600_000, 60_000


def ms(sig: Signal) -> int:
    return int(sig.timestamp.timestamp() * 1000)


def expected(signals: list[Signal], now: int, lateness_ms: int) -> dict[str, dict[str, Any]]:
    """Per user: the features a read at ``now`` must return (events in bus order)."""
    by_user: dict[str, list[Signal]] = defaultdict(list)
    seen: set[str] = set()
    for s in signals:
        if s.event_id not in seen:  # a re-sent event counts once
            seen.add(s.event_id)
            by_user[s.user_id].append(s)
    return {user: _features(events, now, lateness_ms) for user, events in by_user.items()}


def _features(events: list[Signal], now: int, lateness_ms: int) -> dict[str, Any]:
    counts: dict[str, int] = defaultdict(int)
    windows: dict[str, dict[str, int]] = {
        "1h": defaultdict(int),
        "24h": defaultdict(int),
        "7d": defaultdict(int),
    }
    recent: dict[str, dict[str, int]] = defaultdict(dict)
    surfaces: dict[str, int] = {}
    ratings: list[int] = []
    last_purchase: Signal | None = None
    newest = 0
    for s in events:
        ts = ms(s)
        late = ts < newest - lateness_ms
        newest = max(newest, ts)
        counts[s.event_type] += 1
        if not late:
            if now // MINUTE - 60 < ts // MINUTE <= now // MINUTE:
                windows["1h"][s.event_type] += 1
            for label, hours in (("24h", 24), ("7d", 168)):
                if now // HOUR - hours < ts // HOUR <= now // HOUR:
                    windows[label][s.event_type] += 1
            surfaces[s.surface] = max(surfaces.get(s.surface, 0), ts)
        kind = {
            "view": "recently_viewed",
            "click": "recently_clicked",
            "save": "recently_saved",
        }.get(s.event_type)
        if kind and s.item_id is not None:
            recent[kind][s.item_id] = max(recent[kind].get(s.item_id, 0), ts)
        if s.event_type == "rating":
            ratings.append(s.payload["rating"])
        if s.event_type == "purchase" and (last_purchase is None or ts >= ms(last_purchase)):
            last_purchase = s
    out: dict[str, Any] = {
        "counts": dict(counts),
        "window_counts": {k: dict(v) for k, v in windows.items()},
        "last_event_at_ms": newest,
        "active_surfaces_24h": sorted(k for k, t in surfaces.items() if t > now - 86_400_000),
        "rating": {
            "count": len(ratings),
            "mean": round(sum(ratings) / len(ratings), 6) if ratings else None,
        },
        "last_purchase_item": last_purchase.item_id if last_purchase else None,
    }
    for kind in ("recently_viewed", "recently_clicked", "recently_saved"):
        items = sorted(recent[kind].items(), key=lambda kv: -kv[1])[:20]
        out[kind] = [i for i, _ in items]
    return out


def actual(features: dict[str, Any]) -> dict[str, Any]:
    """The same shape from an API answer's features."""
    from datetime import datetime

    last = features["last_event_at"]
    return {
        "counts": features["counts"],
        "window_counts": features["window_counts"],
        "last_event_at_ms": int(datetime.fromisoformat(last).timestamp() * 1000) if last else 0,
        "active_surfaces_24h": features["active_surfaces_24h"],
        "rating": features["rating"],
        "last_purchase_item": (features["last_purchase"] or {}).get("item_id"),
        **{
            k: [x["item_id"] for x in features[k]]
            for k in ("recently_viewed", "recently_clicked", "recently_saved")
        },
    }
