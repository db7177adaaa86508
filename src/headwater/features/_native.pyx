# cython: language_level=3, wraparound=False
"""The feature pass compiled to C: the declared features applied to a user's events.

It does, event by event and feature by feature, exactly what the Python function
that ``headwater.features.fused`` generates does (a property test runs both against a
plain per-event engine): the idempotency check against the user's recent ids, the
watermark and the lateness bound, then every feature that the event's type feeds.
State stays plain lists, dicts and ints, so rows keep one stored form whichever pass
wrote them. Integer division of event times floors, as Python's does.

The read side's hot spots are here too: event times printed as RFC 3339 text, and the
recent-items and window-count answers (``kinds`` keeps their Python forms as the
fallback, and property tests hold the two to each other and to ``datetime``).
"""

from cpython.datetime cimport (
    datetime,
    datetime_day,
    datetime_hour,
    datetime_microsecond,
    datetime_minute,
    datetime_month,
    datetime_second,
    datetime_tzinfo,
    datetime_year,
    import_datetime,
)

import datetime as _dt

import_datetime()

cdef object _UTC = _dt.timezone.utc

# The feature kinds, in the order of ``KIND_CODES`` (fused.py passes the codes).
cdef enum:
    K_COUNT = 0
    K_WINDOW = 1
    K_RECENT = 2
    K_LAST_EVENT = 3
    K_MEAN = 4
    K_LAST_TIME = 5
    K_SURFACES = 6

KIND_CODES = {
    "count": K_COUNT,
    "window_count": K_WINDOW,
    "recent_items": K_RECENT,
    "last_event": K_LAST_EVENT,
    "mean": K_MEAN,
    "last_time": K_LAST_TIME,
    "active_surfaces": K_SURFACES,
}

cdef long long _EXACT_US = 1LL << 53  # integers below this are exact as doubles


cdef inline long long _days_from_civil(long long y, long long m, long long d):
    # Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    cdef long long era, yoe, doy, doe
    if m <= 2:
        y -= 1
    era = y // 400  # floors, as Python's // does (cdivision is off)
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef inline long long _ms(object when) except? -1:
    """``int(when.timestamp() * 1000)``, computed without Python calls for UTC times."""
    cdef datetime dt
    cdef long long us
    cdef double seconds
    if type(when) is datetime:
        dt = <datetime>when
        if datetime_tzinfo(dt) is _UTC:
            us = (
                (
                    _days_from_civil(datetime_year(dt), datetime_month(dt), datetime_day(dt))
                    * 86400
                    + datetime_hour(dt) * 3600
                    + datetime_minute(dt) * 60
                    + datetime_second(dt)
                )
                * 1000000
                + datetime_microsecond(dt)
            )
            if -_EXACT_US < us < _EXACT_US:
                # timestamp() divides the exact microseconds by 10**6 (correctly
                # rounded, as this division of two exact doubles is), then * 1000
                # and truncation toward zero, as int() does.
                seconds = <double>us / 1e6
                return <long long>(seconds * 1000.0)
    return int(when.timestamp() * 1000)


cdef class _Feature:
    cdef int kind
    cdef object name
    cdef object types  # frozenset of event types, or None for every type
    cdef bint skips_late
    cdef Py_ssize_t size
    cdef object field
    cdef tuple fields
    cdef tuple remove_keys
    cdef tuple remove_values
    cdef Py_ssize_t slot


cdef class CompiledFeatures:
    """``apply(state, signals, lateness_ms) -> (applied, duplicates, late)``."""

    cdef list _features
    cdef dict _by_type  # event type -> the features it feeds, in declaration order
    cdef object _payload_of
    cdef object _prune
    cdef object _ids_key, _watermark_key, _first_key, _late_key
    cdef Py_ssize_t _recent_ids, _scan_ids
    cdef long long _minute_ms, _hour_ms
    cdef Py_ssize_t _minutes_kept, _hours_kept

    def __init__(
        self,
        features,
        *,
        payload_of,
        prune,
        ids_key,
        watermark_key,
        first_key,
        late_key,
        recent_ids,
        scan_ids,
        minute_ms,
        hour_ms,
        minutes_kept,
        hours_kept,
    ):
        cdef _Feature f
        self._features = []
        for slot, (kind, name, types, skips_late, size, field, fields, rkeys, rvalues) in enumerate(
            features
        ):
            f = _Feature()
            f.kind = kind
            f.name = name
            f.types = types
            f.skips_late = skips_late
            f.size = size
            f.field = field
            f.fields = tuple(fields)
            f.remove_keys = tuple(rkeys)
            f.remove_values = tuple(rvalues)
            f.slot = slot
            self._features.append(f)
        self._by_type = {}
        self._payload_of = payload_of
        self._prune = prune
        self._ids_key = ids_key
        self._watermark_key = watermark_key
        self._first_key = first_key
        self._late_key = late_key
        self._recent_ids = recent_ids
        self._scan_ids = scan_ids
        self._minute_ms = minute_ms
        self._hour_ms = hour_ms
        self._minutes_kept = minutes_kept
        self._hours_kept = hours_kept

    cdef list _fed_by(self, object etype):
        cdef list fed = self._by_type.get(etype)
        cdef _Feature f
        if fed is None:
            fed = []
            for f in self._features:
                if f.types is None or etype in f.types:
                    fed.append(f)
            if len(self._by_type) < 10_000:  # event types are few; never grow unbounded
                self._by_type[etype] = fed
        return fed

    def __call__(self, dict state, signals, long long bound):
        cdef list ids = state.get(self._ids_key)
        cdef long long watermark = state.get(self._watermark_key, 0)
        cdef long long first = state.get(self._first_key, 0)
        cdef object seen = None
        cdef Py_ssize_t applied = 0, duplicates = 0, lates = 0
        cdef list values = [state.get(f.name) for f in self._features]
        cdef long long ts
        cdef bint late
        cdef object eid, etype, payload, v
        cdef _Feature f
        if ids is None:
            ids = state[self._ids_key] = []
        for sig in signals:
            eid = sig.event_id
            ts = _ms(sig.timestamp)
            if ts <= watermark:
                if seen is None and len(ids) > self._scan_ids:
                    seen = set(ids)
                if eid in (ids if seen is None else seen):
                    duplicates += 1
                    continue
            ids.append(eid)
            if seen is not None:
                seen.add(eid)
            if ts < first or not first:
                first = ts
            late = ts < watermark - bound
            if late:
                lates += 1
            elif ts > watermark:
                watermark = ts
            applied += 1
            etype = sig.event_type
            payload = None
            for f in self._fed_by(etype):
                if late and f.skips_late:
                    continue
                if f.kind == K_COUNT:
                    v = values[f.slot]
                    if v is None:
                        v = values[f.slot] = state[f.name] = {}
                    (<dict?>v)[etype] = (<dict?>v).get(etype, 0) + 1
                elif f.kind == K_WINDOW:
                    v = values[f.slot]
                    if v is None:
                        v = values[f.slot] = state[f.name] = {}
                    self._window(<dict?>v, etype, ts)
                elif f.kind == K_RECENT:
                    item = sig.item_id
                    if item is None:
                        continue
                    v = values[f.slot]
                    if v is None:
                        v = values[f.slot] = state[f.name] = [[], []]
                    if not _take_out(<list?>v, item, ts):
                        continue  # a later event of this item is already there
                    if f.remove_keys:
                        if payload is None:
                            payload = self._payload_of(sig)
                        if _matches(<dict?>payload, f.remove_keys, f.remove_values):
                            continue  # removed: out of the list, not put back
                    _put_in(<list>v, item, ts, f.size)
                elif f.kind == K_LAST_EVENT:
                    v = values[f.slot]
                    if v is None or (<list?>v)[0] <= ts:
                        if payload is None:
                            payload = self._payload_of(sig)
                        v = values[f.slot] = state[f.name] = [
                            ts,
                            sig.item_id,
                            {k: (<dict?>payload)[k] for k in f.fields if k in <dict?>payload},
                        ]
                elif f.kind == K_MEAN:
                    if payload is None:
                        payload = self._payload_of(sig)
                    x = (<dict?>payload).get(f.field)
                    if not isinstance(x, bool) and isinstance(x, (int, float)):
                        v = values[f.slot]
                        if v is None:
                            v = values[f.slot] = state[f.name] = [x, 1]
                        else:
                            (<list?>v)[0] += x
                            (<list>v)[1] += 1
                elif f.kind == K_LAST_TIME:
                    v = values[f.slot]
                    if ts > (0 if v is None else v):
                        values[f.slot] = ts
                elif f.kind == K_SURFACES:
                    v = values[f.slot]
                    if v is None:
                        v = values[f.slot] = state[f.name] = {}
                    surface = sig.surface
                    if ts > (<dict?>v).get(surface, 0):
                        (<dict?>v)[surface] = ts
        for f in self._features:
            # Written once per call, not per event (an unchanged time is written back).
            if f.kind == K_LAST_TIME and values[f.slot] is not None:
                state[f.name] = values[f.slot]
        if len(ids) > self._recent_ids:
            del ids[: len(ids) - self._recent_ids]
        state[self._watermark_key] = watermark
        state[self._first_key] = first
        if lates:
            state[self._late_key] = state.get(self._late_key, 0) + lates
        return applied, duplicates, lates

    cdef _window(self, dict counts, object etype, long long ts):
        cdef list pair = counts.get(etype)
        cdef dict minutes, hours
        cdef long long minute = ts // self._minute_ms
        cdef long long hour = ts // self._hour_ms
        if pair is None:
            pair = counts[etype] = [{}, {}]
        minutes = pair[0]
        hours = pair[1]
        minutes[minute] = minutes.get(minute, 0) + 1
        hours[hour] = hours.get(hour, 0) + 1
        if len(minutes) > 2 * self._minutes_kept:
            self._prune(minutes, self._minutes_kept)
        if len(hours) > 2 * self._hours_kept:
            self._prune(hours, self._hours_kept)


cdef inline bint _matches(dict payload, tuple keys, tuple values) except -1:
    cdef Py_ssize_t i
    for i in range(len(keys)):
        if not (payload.get(keys[i]) == values[i]):
            return False
    return True


cdef inline bint _take_out(list pair, object item, long long ts) except -1:
    """Remove the item's entry, unless it is later than ``ts``: then False."""
    cdef list items = pair[0]
    cdef list times = pair[1]
    cdef Py_ssize_t j
    if item in items:
        j = items.index(item)
        if times[j] > ts:
            return False
        del items[j]
        del times[j]
    return True


cdef inline int _put_in(list pair, object item, long long ts, Py_ssize_t size) except -1:
    """Insert the item at its place by time, most recent first, keeping ``size``."""
    cdef list items = pair[0]
    cdef list times = pair[1]
    cdef Py_ssize_t pos, count = len(times)
    if count == 0 or ts >= times[0]:
        pos = 0
    else:
        pos = 1
        while pos < count and times[pos] > ts:
            pos += 1
        if pos >= size:
            return 0
    items.insert(pos, item)
    times.insert(pos, ts)
    if len(items) > size:
        items.pop()
        times.pop()
    return 0


# ---- Reading: the text of event times -------------------------------------------------

#: Up to 2**32 s from the epoch (years 1834 to 2106) every time prints with a 4-digit
#: year; other times go to datetime (``use_slow_iso``).
cdef long long _FAST_MS = (1LL << 32) * 1000

cdef char _DIGITS[200]
for _i in range(100):
    _DIGITS[2 * _i] = 48 + _i // 10
    _DIGITS[2 * _i + 1] = 48 + _i % 10


cdef inline void _two(char *at, long long value) noexcept:
    at[0] = _DIGITS[2 * value]
    at[1] = _DIGITS[2 * value + 1]


cdef str _iso(long long ms):
    # What datetime.fromtimestamp(ms / 1000, UTC).isoformat() prints, "+00:00" as "Z"
    # (no fraction when the millisecond is 0, else six digits), in integer arithmetic.
    cdef char buf[32]
    cdef long long secs = ms // 1000
    cdef long long milli = ms - secs * 1000
    cdef long long days = secs // 86400
    cdef long long sod = secs - days * 86400
    cdef long long z = days + 719468
    cdef long long era = z // 146097
    cdef long long doe = z - era * 146097
    cdef long long yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    cdef long long year = yoe + era * 400
    cdef long long doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    cdef long long mp = (5 * doy + 2) // 153
    cdef long long day = doy - (153 * mp + 2) // 5 + 1
    cdef long long month = mp + 3 if mp < 10 else mp - 9
    cdef Py_ssize_t n
    if month <= 2:
        year += 1
    _two(buf, year // 100)
    _two(buf + 2, year % 100)
    buf[4] = 45  # -
    _two(buf + 5, month)
    buf[7] = 45
    _two(buf + 8, day)
    buf[10] = 84  # T
    _two(buf + 11, sod // 3600)
    buf[13] = 58  # :
    _two(buf + 14, sod // 60 % 60)
    buf[16] = 58
    _two(buf + 17, sod % 60)
    if milli:
        buf[19] = 46  # .
        buf[20] = 48 + milli // 100
        _two(buf + 21, milli % 100)
        buf[23] = 48
        buf[24] = 48
        buf[25] = 48
        buf[26] = 90  # Z
        n = 27
    else:
        buf[19] = 90
        n = 20
    return buf[:n].decode("ascii")


cdef object _slow_iso = None


def use_slow_iso(slow_iso):
    """How times outside ``ISO_FAST_MS`` are printed (``kinds`` gives datetime's way)."""
    global _slow_iso
    _slow_iso = slow_iso


def iso_ms(long long ms):
    """RFC 3339 UTC text of epoch milliseconds."""
    return _iso(ms) if -_FAST_MS < ms < _FAST_MS else _slow_iso(ms)


def read_recent(value):
    """A recent_items state as the API answers it: [{"item_id", "at"}, ...]."""
    if not value:
        return []
    cdef list items = value[0]
    cdef list times = value[1]
    cdef Py_ssize_t i, n = len(items)
    cdef list out = []
    cdef long long t
    if len(times) != n:
        raise ValueError("recent items and their times differ in length")
    for i in range(n):
        t = times[i]
        out.append(
            {"item_id": items[i], "at": _iso(t) if -_FAST_MS < t < _FAST_MS else _slow_iso(t)}
        )
    return out


MAX_WINDOWS = 64


def read_windows(value, long long now, tuple labels, tuple spans_ms, tuple minute_windows,
                 long long minute_ms, long long hour_ms):
    """A window_count state as the API answers it: per window label, events per type in
    the window ending at ``now``. A window up to an hour long counts minute buckets, a
    longer one hour buckets; a bucket ``k`` is in when ``lo < k <= hi``."""
    cdef Py_ssize_t w, n = len(labels)
    cdef long long lo[64]
    cdef long long hi[64]
    cdef long long sums[64]
    cdef bint by_minute[64]
    cdef long long unit, key, count
    cdef dict out = {}
    cdef dict buckets
    if n > MAX_WINDOWS or len(spans_ms) != n or len(minute_windows) != n:
        raise ValueError("read_windows takes up to 64 windows, each a span and a unit")
    for w in range(n):
        by_minute[w] = minute_windows[w]
        unit = minute_ms if by_minute[w] else hour_ms
        lo[w] = (now - <long long>spans_ms[w]) // unit
        hi[w] = now // unit
        out[labels[w]] = {}
    if not value:
        return out
    for etype, pair in (<dict?>value).items():
        for w in range(n):
            sums[w] = 0
        for minutes_or_hours in range(2):
            buckets = pair[minutes_or_hours]
            for k, c in buckets.items():
                key = k
                count = c
                for w in range(n):
                    if by_minute[w] == (minutes_or_hours == 0) and lo[w] < key <= hi[w]:
                        sums[w] += count
        for w in range(n):
            if sums[w]:
                out[labels[w]][etype] = sums[w]
    return out
