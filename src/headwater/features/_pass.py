# cython: language_level=3, annotation_typing=False
"""The feature pass: a user's events applied to its state, every declared kind at once.

Per event, before any kind: the idempotency check against the user's recent ids (only
for an event not after the watermark: a re-sent event carries its original time), the
earliest time, and the watermark that bounds lateness; then every kind the event's
type feeds, in declaration order (``_kinds``). Each kind touches only its own value,
so applying them event by event leaves what applying them kind by kind leaves, and a
user's batch costs one call however many kinds there are.

Compiled with ``_kinds`` where a C compiler is found (C types in ``_pass.pxd``), run as
written where not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import _kinds

if TYPE_CHECKING:
    from headwater.features.kinds import SignalView
    from headwater.features.signals import SignalBatch

try:
    import cython
except ImportError:  # not compiled, and Cython is not installed where this runs
    COMPILED = False
else:
    COMPILED = cython.compiled

IDS = "_ids"  # recent event ids of the user: a re-delivered event is not applied twice
WATERMARK = "_t"  # latest event time seen for the user (ms): the base of lateness
LATE = "_late"  # events beyond the lateness bound (kept out of bucketed features)
FIRST = "_first"  # earliest event time in the row (ms): proves a row postdates an erasure
RECENT_IDS = 32
SCAN_IDS = 48  # above this many recent ids, duplicates are looked up in a set
EXACT_US = 1 << 53  # integers below this are exact as doubles


def days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm)."""
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def event_ms(when: datetime) -> int:
    """``int(when.timestamp() * 1000)``; compiled, without a Python call for UTC times."""
    if COMPILED and type(when) is datetime:
        dt = when
        if dt.tzinfo is UTC:
            us = (
                days_from_civil(dt.year, dt.month, dt.day) * 86400
                + dt.hour * 3600
                + dt.minute * 60
                + dt.second
            ) * 1_000_000 + dt.microsecond
            if -EXACT_US < us < EXACT_US:
                # timestamp() divides the exact microseconds by 10**6 (correctly
                # rounded, as this division of two exact doubles is), then * 1000
                # and truncation toward zero, as int() does.
                seconds = us / 1e6
                return int(seconds * 1000.0)
    return int(when.timestamp() * 1000)


class FeaturePass:
    """Declared features (kind objects, in declaration order) applied in one pass."""

    def __init__(self, kinds: Sequence[_kinds.Kind]) -> None:
        self.kinds = list(kinds)
        for slot, kind in enumerate(self.kinds):
            kind.slot = slot
        self.by_type: dict[str, tuple[list[_kinds.Kind], list[_kinds.Kind]]] = {}

    def fed_by(self, etype: str) -> tuple[list[_kinds.Kind], list[_kinds.Kind]]:
        """The kinds an event type feeds, in declaration order: those an event on time
        feeds, and those a late one feeds (the kinds that do not skip late events)."""
        fed = self.by_type.get(etype)
        if fed is None:
            kinds = [k for k in self.kinds if k.types is None or etype in k.types]
            fed = (kinds, [k for k in kinds if not k.skips_late])
            if len(self.by_type) < 10_000:  # event types are few; never grow unbounded
                self.by_type[etype] = fed
        return fed

    def apply(
        self, state: dict[str, Any], signals: Iterable[SignalView], bound: int
    ) -> tuple[int, int, int]:
        """One user's signals in bus order applied to its state, skipping re-delivered
        event ids; ``bound`` is the lateness bound (ms). ``(applied, duplicates, late)``."""
        walk = Walk(self, state, bound)
        ev = walk.ev
        for sig in signals:
            ev.item = sig.item_id
            ev.surface = sig.surface
            ev.raw = sig.payload
            walk.step(sig.event_id, event_ms(sig.timestamp), sig.event_type)
        return walk.finish()

    def apply_batch(
        self, state: dict[str, Any], batch: SignalBatch, start: int, stop: int, bound: int
    ) -> tuple[int, int, int]:
        """:meth:`apply` to the events ``start`` up to ``stop`` of ``batch``'s columns
        (one user's, in bus order): no object per event."""
        walk = Walk(self, state, bound)
        ev = walk.ev
        event_ids = batch.event_ids
        types = batch.types
        items = batch.items
        surfaces = batch.surfaces
        times = batch.times
        payloads = batch.payloads
        for i in range(start, stop):
            ev.item = items[i]
            ev.surface = surfaces[i]
            ev.raw = payloads[i]
            walk.step(event_ids[i], times[i], types[i])
        return walk.finish()

    def apply_rows(
        self,
        batch: SignalBatch,
        rows: Mapping[str, bytes],
        codec: tuple[Callable[[bytes | None], dict[str, Any]], Callable[[dict[str, Any]], bytes]],
        bound: int,
        out: dict[str, bytes],
    ) -> tuple[int, int, int]:
        """:meth:`apply_batch` for every user of ``batch`` in turn: the user's stored row
        (in ``rows``; None for a new user) decoded, its events applied, the row encoded
        into ``out`` (``codec``: the row's decode, which takes None too, and its encode).
        The counts summed: one call per batch, not per user."""
        decode, encode = codec
        users = batch.users
        starts = batch.starts
        applied = 0
        duplicates = 0
        late = 0
        for k in range(len(users)):
            user = users[k]
            data = rows.get(user)
            state = decode(data)
            counts = self.apply_batch(state, batch, starts[k], starts[k + 1], bound)
            applied += counts[0]
            duplicates += counts[1]
            late += counts[2]
            out[user] = encode(state)
        return applied, duplicates, late


class Walk:
    """One user's events applied to its row: the row's recent ids, watermark and
    earliest time, kept while the events pass and stored by :meth:`finish`."""

    def __init__(self, features: FeaturePass, state: dict[str, Any], bound: int) -> None:
        self.features = features
        self.state = state
        self.bound = bound
        ids = state.get(IDS)
        if ids is None:
            ids = state[IDS] = []
        self.ids: list[str] = ids
        self.watermark: int = state.get(WATERMARK, 0)
        self.first: int = state.get(FIRST, 0)
        self.seen: set[str] | None = None
        self.applied = 0
        self.duplicates = 0
        self.lates = 0
        self.values: list[Any] = [state.get(k.name) for k in features.kinds]
        #: The event the kinds read: the caller sets its item, surface and payload.
        self.ev = _kinds.Event()

    def step(self, eid: str, ts: int, etype: str) -> bool:
        """Apply one event (``ev`` holds its item, surface and payload) unless its id
        was applied before (False); one beyond the lateness bound feeds only the
        all-time kinds."""
        ids = self.ids
        watermark = self.watermark
        if ts <= watermark:
            seen = self.seen
            if seen is None and len(ids) > SCAN_IDS:
                seen = self.seen = set(ids)
            if eid in (ids if seen is None else seen):
                self.duplicates += 1
                return False
        ids.append(eid)
        if self.seen is not None:
            self.seen.add(eid)
        if ts < self.first or not self.first:
            self.first = ts
        late = ts < watermark - self.bound
        if late:
            self.lates += 1
        elif ts > watermark:
            self.watermark = ts
        self.applied += 1
        ev = self.ev
        ev.ts = ts
        ev.etype = etype
        ev.decoded = None
        features = self.features
        fed = features.by_type.get(etype)
        if fed is None:
            fed = features.fed_by(etype)
        values = self.values
        state = self.state
        for kind in fed[1] if late else fed[0]:
            value = values[kind.slot]
            new = kind.update(value, ev)
            if new is not value:  # most updates change a container in place
                values[kind.slot] = state[kind.name] = new
        return True

    def finish(self) -> tuple[int, int, int]:
        """Store the row's bookkeeping; ``(applied, duplicates, late)``."""
        state = self.state
        ids = self.ids
        if len(ids) > RECENT_IDS:
            del ids[: len(ids) - RECENT_IDS]
        state[WATERMARK] = self.watermark
        state[FIRST] = self.first
        if self.lates:
            state[LATE] = state.get(LATE, 0) + self.lates
        return self.applied, self.duplicates, self.lates
