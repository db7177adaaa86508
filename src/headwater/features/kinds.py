"""How each feature kind updates a user's state and reads it back.

State values are plain lists, dicts and numbers so that a row encodes to MessagePack
in one C call. An update takes one user's new events of the feature's types, in bus
order, with their times in milliseconds: one call per user and feature per batch,
not one per event, so the state's containers are looked up once. Bucketed,
time-relative kinds (``SKIPS_LATE``) are given only the events within the lateness
bound (late ones are counted instead); all-time kinds take every event.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from itertools import repeat
from typing import Any, Protocol

import msgspec

from headwater.features.spec import FeatureSpec

__all__ = [
    "SKIPS_LATE",
    "Reader",
    "SignalView",
    "Updater",
    "payload_of",
    "reader_for",
    "updater_for",
]


class SignalView(Protocol):
    """What features read of a signal: a ``Signal``, or the consumer's form of it whose
    payload stays encoded until a feature needs it (most events never need it)."""

    @property
    def event_id(self) -> str: ...
    @property
    def event_type(self) -> str: ...
    @property
    def surface(self) -> str: ...
    @property
    def timestamp(self) -> datetime: ...
    @property
    def item_id(self) -> str | None: ...
    @property
    def payload(self) -> dict[str, Any] | msgspec.Raw: ...


_decode_payload = msgspec.msgpack.Decoder(dict[str, Any]).decode


def payload_of(sig: SignalView) -> dict[str, Any]:
    """The signal's payload, decoded if it is still encoded."""
    payload = sig.payload
    return payload if isinstance(payload, dict) else _decode_payload(payload)


#: ``update(state, signals, times_ms)``: one user's events for one feature, in bus order.
Updater = Callable[[dict[str, Any], list[SignalView], list[int]], None]
Reader = Callable[[Any, int], Any]

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
#: Minute buckets cover the last hour; hour buckets cover the last 7 days.
MINUTES_KEPT = 61
HOURS_KEPT = 24 * 7 + 1
#: Kinds that leave out events beyond the lateness bound.
SKIPS_LATE = frozenset({"window_count", "active_surfaces"})


def _iso_slow(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


_MINUTE_HEADS: dict[int, str] = {}  # minute -> "YYYY-MM-DDTHH:MM:"
_SECONDS = [f"{s:02d}" for s in range(60)]
_MILLIS = ["Z"] + [f".{m:03d}000Z" for m in range(1, 1000)]  # isoformat omits zero micros
#: Up to 2**32 s from the epoch (years 1834 to 2106), ms / 1000 as a float is within a
#: quarter microsecond, so datetime rounds it to the exact millisecond the fast path
#: prints; farther out it does not, and those take datetime's path.
_ISO_FAST_MS = 2**32 * 1000


def iso(ms: int) -> str:
    """RFC 3339 UTC text of epoch milliseconds.

    Reads print up to sixty of these per user: the date and time up to the minute come
    from a small cache, seconds and milliseconds are formatted directly.
    """
    if not -_ISO_FAST_MS < ms < _ISO_FAST_MS:
        return _iso_slow(ms)
    minute, rest = divmod(ms, MINUTE_MS)
    head = _MINUTE_HEADS.get(minute)
    if head is None:
        try:
            head = datetime.fromtimestamp(minute * 60, UTC).isoformat()[:-8]
        except (OverflowError, OSError, ValueError):
            return _iso_slow(ms)  # outside datetime's range: its own error
        if len(_MINUTE_HEADS) >= 100_000:
            _MINUTE_HEADS.clear()
        _MINUTE_HEADS[minute] = head
    second, milli = divmod(rest, 1000)
    return head + _SECONDS[second] + _MILLIS[milli]


def _count(spec: FeatureSpec) -> Updater:
    name = spec.name

    def update(state: dict[str, Any], sigs: list[SignalView], _tss: list[int]) -> None:
        counts = state.get(name)
        if counts is None:
            counts = state[name] = {}
        for sig in sigs:
            etype = sig.event_type
            counts[etype] = counts.get(etype, 0) + 1

    return update


def _prune(buckets: dict[int, int], kept: int) -> None:
    # Called only when a bucket map holds twice its span, so the cost of a prune is
    # spread over at least a span's worth of events.
    newest = max(buckets)
    for key in [k for k in buckets if k <= newest - kept]:
        del buckets[key]


def _window_count(spec: FeatureSpec) -> Updater:
    name = spec.name
    most_minutes, most_hours = 2 * MINUTES_KEPT, 2 * HOURS_KEPT

    def update(state: dict[str, Any], sigs: list[SignalView], tss: list[int]) -> None:
        per_type = state.get(name)
        if per_type is None:
            per_type = state[name] = {}
        last_type = None
        minutes: dict[int, int] = {}
        hours: dict[int, int] = {}
        for sig, ts in zip(sigs, tss, strict=True):
            etype = sig.event_type
            if etype != last_type:
                buckets: list[dict[int, int]] | None = per_type.get(etype)
                if buckets is None:
                    minutes, hours = per_type[etype] = [{}, {}]
                else:
                    minutes, hours = buckets
                last_type = etype
            minute = ts // MINUTE_MS
            hour = ts // HOUR_MS
            minutes[minute] = minutes.get(minute, 0) + 1
            hours[hour] = hours.get(hour, 0) + 1
            if len(minutes) > most_minutes:
                _prune(minutes, MINUTES_KEPT)
            if len(hours) > most_hours:
                _prune(hours, HOURS_KEPT)

    return update


def _recent_items(spec: FeatureSpec) -> Updater:
    name, size = spec.name, spec.size
    remove = tuple(spec.remove_when.items())

    def update(state: dict[str, Any], sigs: list[SignalView], tss: list[int]) -> None:
        pair = state.get(name)
        for sig, ts in zip(sigs, tss, strict=True):
            item = sig.item_id
            if item is None:
                continue
            if pair is None:
                pair = state[name] = [[], []]
            items, times = pair  # parallel lists, newest first: membership is a C-level scan
            if item in items:
                i = items.index(item)
                if times[i] > ts:
                    continue  # a newer event for this item is already here
                del items[i]
                del times[i]
            if remove and all(payload_of(sig).get(k) == v for k, v in remove):
                continue
            if not times or ts >= times[0]:
                items.insert(0, item)
                times.insert(0, ts)
            else:
                pos = 1
                while pos < len(times) and times[pos] > ts:
                    pos += 1
                if pos >= size:
                    continue
                items.insert(pos, item)
                times.insert(pos, ts)
            if len(items) > size:
                items.pop()
                times.pop()

    return update


def _last_event(spec: FeatureSpec) -> Updater:
    name, fields = spec.name, spec.fields

    def update(state: dict[str, Any], sigs: list[SignalView], tss: list[int]) -> None:
        current = state.get(name)
        for sig, ts in zip(sigs, tss, strict=True):
            if current is not None and current[0] > ts:
                continue
            payload = payload_of(sig)
            current = state[name] = [
                ts,
                sig.item_id,
                {f: payload[f] for f in fields if f in payload},
            ]

    return update


def _mean(spec: FeatureSpec) -> Updater:
    name, field = spec.name, spec.field

    def update(state: dict[str, Any], sigs: list[SignalView], _tss: list[int]) -> None:
        acc = state.get(name)
        for sig in sigs:
            value = payload_of(sig).get(field)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if acc is None:
                acc = state[name] = [value, 1]
            else:
                acc[0] += value
                acc[1] += 1

    return update


def _last_time(spec: FeatureSpec) -> Updater:
    name = spec.name

    def update(state: dict[str, Any], _sigs: list[SignalView], tss: list[int]) -> None:
        newest = max(tss)
        if newest > state.get(name, 0):
            state[name] = newest

    return update


def _active_surfaces(spec: FeatureSpec) -> Updater:
    name = spec.name

    def update(state: dict[str, Any], sigs: list[SignalView], tss: list[int]) -> None:
        surfaces = state.get(name)
        if surfaces is None:
            surfaces = state[name] = {}
        for sig, ts in zip(sigs, tss, strict=True):
            surface = sig.surface
            if ts > surfaces.get(surface, 0):
                surfaces[surface] = ts

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
        # (label, first bucket out, last bucket in, minute buckets?) for this read time
        bounds = [
            (label, (now - int(w * 1000)) // MINUTE_MS, now // MINUTE_MS, True)
            if w <= 3600
            else (label, (now - int(w * 1000)) // HOUR_MS, now // HOUR_MS, False)
            for label, w in windows
        ]
        for etype, (minutes, hours) in (value or {}).items():
            spans = (
                (min(minutes), max(minutes)) if minutes else None,
                (min(hours), max(hours)) if hours else None,
            )
            for label, lo, hi, by_minute in bounds:
                src, span = (minutes, spans[0]) if by_minute else (hours, spans[1])
                if span is None or span[1] <= lo or span[0] > hi:
                    continue
                if lo < span[0] and span[1] <= hi:
                    n = sum(src.values())  # every bucket is in the window: a C-level sum
                elif hi - lo <= len(src):
                    n = sum(map(src.get, range(lo + 1, hi + 1), repeat(0)))  # look each up
                else:
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
