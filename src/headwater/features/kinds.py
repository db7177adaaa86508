"""What each feature kind keeps in a user's state, and how it reads it back.

State values are plain lists, dicts and numbers so that a row encodes to MessagePack
in one C call. The updates themselves are compiled from the declared features into
one pass over a user's events (``headwater.features.fused``); bucketed, time-relative
kinds (``SKIPS_LATE``) leave out events beyond the lateness bound (they are counted
instead), all-time kinds take every event.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from itertools import repeat
from typing import Any, Protocol

import msgspec

from headwater.features.spec import FeatureSpec

try:
    from headwater.features import _native
except ImportError:  # installed where no C compiler was found: the Python forms below
    _native = None  # type: ignore[assignment]
#: True when the compiled forms (``_native.pyx``) are built and importable.
NATIVE = _native is not None

__all__ = [
    "NATIVE",
    "SKIPS_LATE",
    "Reader",
    "SignalView",
    "payload_of",
    "prune_buckets",
    "reader_for",
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


def _iso_python(ms: int) -> str:
    # Reads print up to sixty of these per user: the date and time up to the minute come
    # from a small cache, seconds and milliseconds are formatted directly.
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


#: RFC 3339 UTC text of epoch milliseconds, compiled when ``_native`` is built (both
#: print what datetime prints: a property test checks them against it).
iso: Callable[[int], str] = _iso_python
if NATIVE:
    _native.use_slow_iso(_iso_slow)
    iso = _native.iso_ms


def prune_buckets(buckets: dict[int, int], kept: int) -> None:
    """Drop the buckets more than ``kept`` before the newest."""
    # Called only when a bucket map holds twice its span, so the cost of a prune is
    # spread over at least a span's worth of events.
    newest = max(buckets)
    for key in [k for k in buckets if k <= newest - kept]:
        del buckets[key]


def _label(seconds: float) -> str:
    # 1h, 24h, 7d: days only from two days up, as people name these windows.
    if seconds >= 2 * 86_400 and seconds % 86_400 == 0:
        return f"{int(seconds // 86_400)}d"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _read_window(spec: FeatureSpec) -> Reader:
    if not NATIVE or len(spec.windows_s) > _native.MAX_WINDOWS:
        return _read_window_python(spec)
    labels = tuple(_label(w) for w in spec.windows_s)
    spans = tuple(int(w * 1000) for w in spec.windows_s)
    by_minute = tuple(w <= 3600 for w in spec.windows_s)
    read = _native.read_windows
    return lambda value, now: read(value, now, labels, spans, by_minute, MINUTE_MS, HOUR_MS)


def _read_window_python(spec: FeatureSpec) -> Reader:
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
    if NATIVE:
        return lambda value, _now: _native.read_recent(value)

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
