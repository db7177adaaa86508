# cython: language_level=3, annotation_typing=False
"""Every feature kind, written once: what it keeps, how an event updates it, how it reads.

Each kind is one class: ``update(value, event)`` returns the feature's stored value
after one event (``value`` is None while the row holds none) and ``read(value, now)``
turns a stored value into the API's answer at ``now``. A new kind is a class here, a
line in ``KINDS`` and a name in ``spec.Kind``; its C types in ``_kinds.pxd`` make it
faster compiled, but it works without them. State values are plain lists, dicts and
ints, so a row encodes to MessagePack in one C call and keeps one stored form whichever
form of the engine wrote it.

This module and ``_pass`` are both forms of the engine. Where a C compiler is found at
install, setup.py compiles them with Cython in pure-Python mode: the ``.pxd`` files
beside them give the C types (annotations are for mypy only) and Cython's
``cdivision`` stays off, so integer division floors as Python's does. Without a
compiler they run as written. ``kinds`` picks the form; a property test holds both to
a plain per-event reference engine in tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from headwater._time import format_ms

if TYPE_CHECKING:
    from headwater.features.spec import FeatureSpec

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
#: Minute buckets cover the last hour; hour buckets cover the last 7 days.
MINUTES_KEPT = 61
HOURS_KEPT = 24 * 7 + 1

_decode_payload = msgspec.msgpack.Decoder(dict[str, Any]).decode


# A bucketed count keeps its buckets in one flat list, newest first: the newest bucket's
# key and count, then for each older bucket the gap down from the bucket before it and
# its count: ``[key, n, gap, n, gap, n, ...]``. Gaps and counts are mostly below 257,
# which Python keeps as shared objects: decoding a row allocates one list for the
# buckets, not an int per key, and MessagePack stores each in a byte. A row written
# before holds ``{key: n}`` maps; ``bucket_list`` turns one into a list when it is
# next updated, and the reads take either.


def bucket_list(buckets: dict[int, int]) -> list[int]:
    """The flat list (above) of a ``{key: n}`` map."""
    out: list[int] = []
    previous = 0
    for key in sorted(buckets, reverse=True):
        out.append(key if not out else previous - key)
        out.append(buckets[key])
        previous = key
    return out


def bump(buckets: list[int], key: int, kept: int) -> None:
    """Count one event in bucket ``key``; once more than ``2 * kept`` buckets are held,
    drop those more than ``kept`` before the newest."""
    n = len(buckets)
    if n == 0:
        buckets.append(key)
        buckets.append(1)
        return
    newest = buckets[0]
    if key == newest:  # the usual case: events arrive in time order
        buckets[1] += 1
        return
    if key > newest:
        buckets[0] = key - newest
        buckets.insert(0, 1)
        buckets.insert(0, key)
    else:
        at = newest
        i = 2
        while i < n:
            older = at - buckets[i]
            if older == key:
                buckets[i + 1] += 1
                return
            if older < key:  # between the bucket at ``at`` and this older one
                buckets[i] = key - older
                buckets.insert(i, 1)
                buckets.insert(i, at - key)
                break
            at = older
            i += 2
        else:
            buckets.append(at - key)
            buckets.append(1)
    if len(buckets) > 4 * kept:
        # Pruned only past twice the span: the cost of a prune is spread over at least
        # a span's worth of new buckets.
        newest = buckets[0]
        at = newest
        for i in range(2, len(buckets), 2):
            at -= buckets[i]
            if at <= newest - kept:
                del buckets[i:]
                break


def window_label(seconds: float) -> str:
    """How a window is named in answers: 1h, 24h, 7d (days only from two days up)."""
    if seconds >= 2 * 86_400 and seconds % 86_400 == 0:
        return f"{int(seconds // 86_400)}d"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# Reads print dozens of times per user. ``format_ms`` defines the text; these pieces of
# its own output (fixed width: 17 characters name the minute, 2 the second, the rest
# the millisecond and Z) let the compiled form assemble it without a Python call.
_HEADS: dict[int, str] = {}  # minute since the epoch -> "YYYY-MM-DDTHH:MM:"
_SECONDS = [format_ms(s * 1000)[17:19] for s in range(60)]
_MILLIS = [format_ms(m)[19:] for m in range(1000)]


def time_text(ms: int) -> str:
    """``format_ms(ms)``: epoch milliseconds as fixed-width RFC 3339 UTC text."""
    minute = ms // MINUTE_MS
    rest = ms - minute * MINUTE_MS
    head = _HEADS.get(minute)
    if head is None:
        head = format_ms(minute * MINUTE_MS)[:17]
        if len(_HEADS) >= 100_000:
            _HEADS.clear()
        _HEADS[minute] = head
    second = _SECONDS[rest // 1000]
    milli = _MILLIS[rest % 1000]
    return f"{head}{second}{milli}"


class Event:
    """One event as the kinds see it; the pass refills one object for every event."""

    def __init__(self) -> None:
        self.ts = 0
        self.etype = ""
        self.item: str | None = None
        self.surface = ""
        #: The payload as the signal holds it: a dict, or its MessagePack bytes.
        self.raw: Any = None
        self.decoded: dict[str, Any] | None = None

    def payload(self) -> dict[str, Any]:
        """The event's payload, decoded at most once however many kinds read it."""
        if self.decoded is None:
            raw = self.raw
            self.decoded = raw if isinstance(raw, dict) else _decode_payload(raw)
        return self.decoded


class Kind:
    """One declared feature: its update (applied by the pass) and its read."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.name = spec.name
        self.types = None if "*" in spec.event_types else frozenset(spec.event_types)
        self.skips_late = False  # bucketed, time-relative kinds skip late events
        self.slot = 0  # where the pass keeps this feature's value (set by the pass)

    def update(self, value: Any, ev: Event) -> Any:
        """The stored value after ``ev`` (``value`` is None when the row has none)."""
        raise NotImplementedError

    def read(self, value: Any, now: int) -> Any:
        """The stored value (None when absent) as the API answers it at ``now`` (ms)."""
        raise NotImplementedError


class Count(Kind):
    """All-time events per type: ``{type: n}``."""

    def update(self, value: Any, ev: Event) -> Any:
        counts = {} if value is None else value
        etype = ev.etype
        counts[etype] = counts.get(etype, 0) + 1
        return counts

    def read(self, value: Any, _now: int) -> Any:
        return dict(value or {})


class WindowCount(Kind):
    """Events per type in rolling windows ending at the read: per type, minute and hour
    buckets ``[minutes, hours]``, each a flat list (``bump``). A window up to an hour
    long sums minute buckets, a longer one hour buckets; a bucket ``k`` is in when
    ``lo < k <= hi``."""

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__(spec)
        self.skips_late = True  # time-relative: an event beyond the bound is only counted
        self.labels = tuple(window_label(w) for w in spec.windows_s)
        self.spans = tuple(int(w * 1000) for w in spec.windows_s)
        self.by_minute = tuple(w <= 3600 for w in spec.windows_s)

    def update(self, value: Any, ev: Event) -> Any:
        per_type: dict[str, list[Any]] = {} if value is None else value
        etype = ev.etype
        pair = per_type.get(etype)
        if pair is None:
            pair = per_type[etype] = [[], []]
        minutes = pair[0]
        hours = pair[1]
        if type(minutes) is not list:  # a row written with bucket maps
            minutes = pair[0] = bucket_list(minutes)
        if type(hours) is not list:
            hours = pair[1] = bucket_list(hours)
        ts = ev.ts
        bump(minutes, ts // MINUTE_MS, MINUTES_KEPT)
        bump(hours, ts // HOUR_MS, HOURS_KEPT)
        return per_type

    def read(self, value: Any, now: int) -> Any:
        out: dict[str, dict[str, int]] = {}
        for w in range(len(self.labels)):
            index = 0 if self.by_minute[w] else 1  # which buckets: minutes or hours
            unit = MINUTE_MS if index == 0 else HOUR_MS
            lo = (now - self.spans[w]) // unit
            hi = now // unit
            answer = out.setdefault(self.labels[w], {})
            for etype, pair in (value or {}).items():
                buckets = pair[index]
                n = 0
                if type(buckets) is list:
                    k = 0
                    for i in range(0, len(buckets), 2):
                        k = buckets[0] if i == 0 else k - buckets[i]
                        if k <= lo:
                            break  # newest first: the rest are older still
                        if k <= hi:
                            n += buckets[i + 1]
                else:
                    for k, c in buckets.items():
                        if lo < k <= hi:
                            n += c
                if n:
                    answer[etype] = n
        return out


class RecentItems(Kind):
    """The last ``size`` distinct items, most recent first: ``[[item, ...], [ms, ...]]``.
    An event whose payload matches ``remove_when`` takes its item out."""

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__(spec)
        self.size = spec.size
        self.remove_keys = tuple(spec.remove_when)
        self.remove_values = tuple(spec.remove_when.values())

    def update(self, value: Any, ev: Event) -> Any:
        item = ev.item
        if item is None:
            return value
        pair = [[], []] if value is None else value
        items = pair[0]
        times = pair[1]
        ts = ev.ts
        if item in items:
            j = items.index(item)
            if times[j] > ts:
                return pair  # a later event of this item is already there
            del items[j]
            del times[j]
        if self.remove_keys and self.removes(ev.payload()):
            return pair  # removed: out of the list, not put back
        count = len(times)
        pos = 0
        if count and ts < times[0]:
            pos = 1
            while pos < count and times[pos] > ts:
                pos += 1
            if pos >= self.size:
                return pair  # older than every item kept
        items.insert(pos, item)
        times.insert(pos, ts)
        if len(items) > self.size:
            items.pop()
            times.pop()
        return pair

    def removes(self, payload: dict[str, Any]) -> bool:
        """True when the payload has every ``remove_when`` value."""
        for i in range(len(self.remove_keys)):
            if payload.get(self.remove_keys[i]) != self.remove_values[i]:
                return False
        return True

    def read(self, value: Any, _now: int) -> Any:
        if not value:
            return []
        items = value[0]
        times = value[1]
        if len(items) != len(times):
            raise ValueError("recent items and their times differ in length")
        return [{"item_id": items[i], "at": time_text(times[i])} for i in range(len(items))]


class LastEvent(Kind):
    """The latest event's time, item and chosen payload ``fields``: ``[ms, item, {...}]``."""

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__(spec)
        self.fields = spec.fields

    def update(self, value: Any, ev: Event) -> Any:
        if value is not None and value[0] > ev.ts:
            return value
        payload = ev.payload()
        return [ev.ts, ev.item, {f: payload[f] for f in self.fields if f in payload}]

    def read(self, value: Any, _now: int) -> Any:
        if value is None:
            return None
        return {"item_id": value[1], "at": time_text(value[0]), **value[2]}


class Mean(Kind):
    """Sum and count of a numeric payload ``field``: ``[sum, count]``."""

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__(spec)
        self.field = spec.field

    def update(self, value: Any, ev: Event) -> Any:
        x = ev.payload().get(self.field)
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            return value
        if value is None:
            return [x, 1]
        value[0] += x
        value[1] += 1
        return value

    def read(self, value: Any, _now: int) -> Any:
        if not value:
            return {"mean": None, "count": 0}
        return {"mean": round(value[0] / value[1], 6), "count": value[1]}


class LastTime(Kind):
    """The latest event time (ms)."""

    def update(self, value: Any, ev: Event) -> Any:
        ts = ev.ts
        return ts if ts > (0 if value is None else value) else value

    def read(self, value: Any, _now: int) -> Any:
        return time_text(value) if value else None


class ActiveSurfaces(Kind):
    """The surfaces used within ``window_s`` of the read: ``{surface: latest ms}``."""

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__(spec)
        self.skips_late = True  # time-relative: an event beyond the bound is only counted
        self.window = int(spec.window_s * 1000)

    def update(self, value: Any, ev: Event) -> Any:
        surfaces = {} if value is None else value
        surface = ev.surface
        ts = ev.ts
        if ts > surfaces.get(surface, 0):
            surfaces[surface] = ts
        return surfaces

    def read(self, value: Any, now: int) -> Any:
        return sorted([s for s, t in (value or {}).items() if t > now - self.window])


#: Every kind by its name in ``FeatureSpec.kind``: a new kind is a class above and a
#: line here (and a name in ``spec.Kind``).
KINDS: dict[str, type[Kind]] = {
    "count": Count,
    "window_count": WindowCount,
    "recent_items": RecentItems,
    "last_event": LastEvent,
    "mean": Mean,
    "last_time": LastTime,
    "active_surfaces": ActiveSurfaces,
}


def kind_for(spec: FeatureSpec) -> Kind:
    """The kind object of one declared feature."""
    return KINDS[spec.kind](spec)
