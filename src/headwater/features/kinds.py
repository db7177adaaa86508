"""How each feature kind updates a user's state and reads it back.

State values are plain lists, dicts and numbers so that a row encodes to MessagePack
in one C call. Updates take the event time in milliseconds (``ts``) and whether the
event is later than the lateness bound (``late``); bucketed, time-relative kinds skip
late events (they are counted instead), all-time kinds take every event.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from headwater.contract.signal import Signal
from headwater.features.spec import FeatureSpec

__all__ = ["Reader", "Updater", "reader_for", "updater_for"]

Updater = Callable[[dict[str, Any], Signal, int, bool], None]
Reader = Callable[[Any, int], Any]

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
#: Minute buckets cover the last hour; hour buckets cover the last 7 days.
MINUTES_KEPT = 61
HOURS_KEPT = 24 * 7 + 1


def iso(ms: int) -> str:
    """RFC 3339 UTC text of epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _count(spec: FeatureSpec) -> Updater:
    name = spec.name

    def update(state: dict[str, Any], sig: Signal, _ts: int, _late: bool) -> None:
        counts = state.get(name)
        if counts is None:
            counts = state[name] = {}
        etype = sig.event_type
        counts[etype] = counts.get(etype, 0) + 1

    return update


def _window_count(spec: FeatureSpec) -> Updater:
    name = spec.name

    def update(state: dict[str, Any], sig: Signal, ts: int, late: bool) -> None:
        if late:
            return
        per_type = state.get(name)
        if per_type is None:
            per_type = state[name] = {}
        buckets: list[dict[int, int]] | None = per_type.get(sig.event_type)
        if buckets is None:
            buckets = [{}, {}]
            per_type[sig.event_type] = buckets
        minutes, hours = buckets
        minute = ts // MINUTE_MS
        hour = ts // HOUR_MS
        minutes[minute] = minutes.get(minute, 0) + 1
        hours[hour] = hours.get(hour, 0) + 1
        # Prune rarely: only when a bucket map holds twice its span, so the cost of a
        # prune is spread over at least a span's worth of events.
        if len(minutes) > 2 * MINUTES_KEPT:
            newest = max(minutes)
            for key in [k for k in minutes if k <= newest - MINUTES_KEPT]:
                del minutes[key]
        if len(hours) > 2 * HOURS_KEPT:
            newest = max(hours)
            for key in [k for k in hours if k <= newest - HOURS_KEPT]:
                del hours[key]

    return update


def _recent_items(spec: FeatureSpec) -> Updater:
    name, size = spec.name, spec.size
    remove = tuple(spec.remove_when.items())

    def update(state: dict[str, Any], sig: Signal, ts: int, _late: bool) -> None:
        item = sig.item_id
        if item is None:
            return
        pair = state.get(name)
        if pair is None:
            pair = state[name] = [[], []]
        items, times = pair  # parallel lists, newest first: membership is a C-level scan
        if item in items:
            i = items.index(item)
            if times[i] > ts:
                return  # a newer event for this item is already here
            del items[i]
            del times[i]
        if remove and all(sig.payload.get(k) == v for k, v in remove):
            return
        if not times or ts >= times[0]:
            items.insert(0, item)
            times.insert(0, ts)
        else:
            pos = 1
            while pos < len(times) and times[pos] > ts:
                pos += 1
            if pos >= size:
                return
            items.insert(pos, item)
            times.insert(pos, ts)
        if len(items) > size:
            items.pop()
            times.pop()

    return update


def _last_event(spec: FeatureSpec) -> Updater:
    name, fields = spec.name, spec.fields

    def update(state: dict[str, Any], sig: Signal, ts: int, _late: bool) -> None:
        current = state.get(name)
        if current is not None and current[0] > ts:
            return
        payload = sig.payload
        state[name] = [ts, sig.item_id, {f: payload[f] for f in fields if f in payload}]

    return update


def _mean(spec: FeatureSpec) -> Updater:
    name, field = spec.name, spec.field

    def update(state: dict[str, Any], sig: Signal, _ts: int, _late: bool) -> None:
        value = sig.payload.get(field)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        acc = state.get(name)
        if acc is None:
            state[name] = [value, 1]
        else:
            acc[0] += value
            acc[1] += 1

    return update


def _last_time(spec: FeatureSpec) -> Updater:
    name = spec.name

    def update(state: dict[str, Any], _sig: Signal, ts: int, _late: bool) -> None:
        if ts > state.get(name, 0):
            state[name] = ts

    return update


def _active_surfaces(spec: FeatureSpec) -> Updater:
    name = spec.name

    def update(state: dict[str, Any], sig: Signal, ts: int, late: bool) -> None:
        if late:
            return
        surfaces = state.get(name)
        if surfaces is None:
            surfaces = state[name] = {}
        if ts > surfaces.get(sig.surface, 0):
            surfaces[sig.surface] = ts

    return update


_UPDATERS: dict[str, Callable[[FeatureSpec], Updater]] = {
    "count": _count,
    "window_count": _window_count,
    "recent_items": _recent_items,
    "last_event": _last_event,
    "mean": _mean,
    "last_time": _last_time,
    "active_surfaces": _active_surfaces,
}


def updater_for(spec: FeatureSpec) -> Updater:
    """The update function of a feature."""
    return _UPDATERS[spec.kind](spec)


def _label(seconds: float) -> str:
    # 1h, 24h, 7d: days only from two days up, as people name these windows.
    if seconds >= 2 * 86_400 and seconds % 86_400 == 0:
        return f"{int(seconds // 86_400)}d"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _read_window(spec: FeatureSpec) -> Reader:
    windows = [(_label(w), w) for w in spec.windows_s]

    def read(value: Any, now: int) -> Any:
        out: dict[str, dict[str, int]] = {label: {} for label, _ in windows}
        for etype, (minutes, hours) in (value or {}).items():
            for label, w in windows:
                if w <= 3600:
                    lo, hi, src = (now - int(w * 1000)) // MINUTE_MS, now // MINUTE_MS, minutes
                else:
                    lo, hi, src = (now - int(w * 1000)) // HOUR_MS, now // HOUR_MS, hours
                n = sum(c for k, c in src.items() if lo < k <= hi)
                if n:
                    out[label][etype] = n
        return out

    return read


def _read_recent(_spec: FeatureSpec) -> Reader:
    def read(value: Any, _now: int) -> Any:
        if not value:
            return []
        items, times = value
        return [{"item_id": i, "at": iso(t)} for i, t in zip(items, times, strict=True)]

    return read


def _read_last(_spec: FeatureSpec) -> Reader:
    def read(value: Any, _now: int) -> Any:
        if value is None:
            return None
        ts, item, fields = value
        return {"item_id": item, "at": iso(ts), **fields}

    return read


def _read_mean(_spec: FeatureSpec) -> Reader:
    def read(value: Any, _now: int) -> Any:
        if not value:
            return {"mean": None, "count": 0}
        total, count = value
        return {"mean": round(total / count, 6), "count": count}

    return read


def _read_surfaces(spec: FeatureSpec) -> Reader:
    window = int(spec.window_s * 1000)
    return lambda value, now: sorted(s for s, t in (value or {}).items() if t > now - window)


_READERS: dict[str, Callable[[FeatureSpec], Reader]] = {
    "count": lambda _s: lambda value, _now: dict(value or {}),
    "window_count": _read_window,
    "recent_items": _read_recent,
    "last_event": _read_last,
    "mean": _read_mean,
    "last_time": lambda _s: lambda value, _now: iso(value) if value else None,
    "active_surfaces": _read_surfaces,
}


def reader_for(spec: FeatureSpec) -> Reader:
    """The read function of a feature (turns stored state into the API value)."""
    return _READERS[spec.kind](spec)
