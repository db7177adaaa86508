"""The features computed the plain way, for tests only: the one reference the engine is
held to, in both its forms (compiled and Python).

Updates run one call per event and feature (the feature engine as it was before it
was batched and compiled); reads turn each stored value into the API's answer in the
most direct way, times printed by ``datetime``. ``expected`` gives, from the list of
published events, what a read of every user must answer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from headwater.contract.signal import Signal
from headwater.features.spec import DEFAULT_FEATURES, FeatureSpec

Updater = Callable[[dict[str, Any], Signal, int, bool], None]

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
MINUTES_KEPT = 61
HOURS_KEPT = 24 * 7 + 1
RECENT_IDS = 32


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


class ReferenceEngine:
    """The original per-event ``FeatureEngine.apply``."""

    def __init__(
        self, specs: Sequence[FeatureSpec] = DEFAULT_FEATURES, *, lateness_ms: int
    ) -> None:
        self.specs = tuple(specs)
        self.lateness_ms = lateness_ms
        self._updaters: dict[str, list[Updater]] = {}
        self._any = [(s, updater_for(s)) for s in self.specs]
        self.late_events = 0
        self.duplicates = 0

    def _for_type(self, event_type: str) -> list[Updater]:
        found = self._updaters.get(event_type)
        if found is None:
            found = self._updaters[event_type] = [u for s, u in self._any if s.feeds_on(event_type)]
        return found

    def apply(self, state: dict[str, Any], signals: Iterable[Signal]) -> int:
        ids: list[str] | None = state.get("_ids")
        if ids is None:
            ids = state["_ids"] = []
        watermark: int = state.get("_t", 0)
        first: int = state.get("_first", 0)
        bound = self.lateness_ms
        applied = late_count = 0
        for sig in signals:
            eid = sig.event_id
            ts = int(sig.timestamp.timestamp() * 1000)
            if ts <= watermark and eid in ids:
                self.duplicates += 1
                continue
            ids.append(eid)
            if ts < first or not first:
                first = ts
            late = ts < watermark - bound
            if late:
                late_count += 1
            elif ts > watermark:
                watermark = ts
            for update in self._for_type(sig.event_type):
                update(state, sig, ts, late)
            applied += 1
        if len(ids) > RECENT_IDS:
            del ids[: len(ids) - RECENT_IDS]
        state["_t"] = watermark
        state["_first"] = first
        if late_count:
            state["_late"] = state.get("_late", 0) + late_count
            self.late_events += late_count
        return applied


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def text(ms: int) -> str:
    """Epoch milliseconds as the API prints a time: RFC 3339 UTC, always milliseconds."""
    moment = EPOCH + timedelta(milliseconds=ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def label(seconds: float) -> str:
    """A window's name in answers: whole days from two days up, else hours, minutes."""
    if seconds >= 2 * 86_400 and seconds % 86_400 == 0:
        return f"{int(seconds) // 86_400}d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds) // 3600}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds) // 60}m"
    return f"{seconds:g}s"


def read(spec: FeatureSpec, value: Any, now: int) -> Any:
    """One feature's stored value as the API answers it at ``now``."""
    if spec.kind == "count":
        return dict(value or {})
    if spec.kind == "window_count":
        out: dict[str, dict[str, int]] = {}
        for w in spec.windows_s:
            # Up to an hour: minute buckets; longer: hour buckets. Bucket k is in the
            # window when (now - w) // unit < k <= now // unit.
            index, unit = (0, MINUTE_MS) if w <= 3600 else (1, HOUR_MS)
            lo, hi = (now - int(w * 1000)) // unit, now // unit
            sums = {
                etype: sum(n for k, n in buckets[index].items() if lo < k <= hi)
                for etype, buckets in (value or {}).items()
            }
            out[label(w)] = {etype: n for etype, n in sums.items() if n}
        return out
    if spec.kind == "recent_items":
        items, times = value or ([], [])
        return [{"item_id": i, "at": text(t)} for i, t in zip(items, times, strict=True)]
    if spec.kind == "last_event":
        if value is None:
            return None
        ts, item, fields = value
        return {"item_id": item, "at": text(ts), **fields}
    if spec.kind == "mean":
        if not value:
            return {"mean": None, "count": 0}
        return {"mean": round(value[0] / value[1], 6), "count": value[1]}
    if spec.kind == "last_time":
        return text(value) if value else None
    assert spec.kind == "active_surfaces", spec.kind
    cutoff = now - int(spec.window_s * 1000)
    return sorted(s for s, t in (value or {}).items() if t > cutoff)


def read_all(specs: Sequence[FeatureSpec], state: dict[str, Any], now: int) -> dict[str, Any]:
    """Every feature of ``specs`` read from one user's state."""
    return {s.name: read(s, state.get(s.name), now) for s in specs}


def expected(
    signals: Iterable[Signal],
    now: int,
    lateness_ms: int,
    specs: Sequence[FeatureSpec] = DEFAULT_FEATURES,
) -> dict[str, dict[str, Any]]:
    """Per user: the features a read at ``now`` must return, from the events in bus order
    (a re-sent event counts once, however the consumer batched or replayed them)."""
    by_user: dict[str, list[Signal]] = defaultdict(list)
    for s in signals:
        by_user[s.user_id].append(s)
    engine = ReferenceEngine(specs, lateness_ms=lateness_ms)
    out = {}
    for user, events in by_user.items():
        state: dict[str, Any] = {}
        engine.apply(state, events)
        out[user] = read_all(specs, state, now)
    return out
