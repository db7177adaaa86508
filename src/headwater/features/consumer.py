"""The streaming feature consumer: bus records in, user feature rows out, within seconds.

Per batch it coalesces records by user, loads each touched row once, applies the
user's signals in bus order, and writes every row together with the group's
positions in one atomic write. A replay after a crash skips records below the stored
positions, and each row remembers its recent event ids, so nothing is counted twice.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from headwater.bus.base import Record
from headwater.contract.signal import Signal, decode_signal
from headwater.erasure.events import Confirmation, ErasureEvent
from headwater.features.engine import FeatureEngine
from headwater.metrics import FEATURE_LATE_EVENTS, FRESHNESS_SECONDS
from headwater.online.base import OnlineStore, Position
from headwater.slo import SLO_NAMESPACE, SloRecorder

__all__ = ["USER_NAMESPACE", "FeatureConsumer"]

USER_NAMESPACE = "user"
log = logging.getLogger("headwater.features")


class FeatureConsumer:
    """Keeps each user's streaming features in the online store."""

    name = "online-features"

    def __init__(
        self,
        store: OnlineStore,
        engine: FeatureEngine | None = None,
        *,
        group: str = "features",
        idle_interval_s: float = 0.2,
        record_freshness: bool = True,
    ) -> None:
        self.store = store
        self.engine = engine or FeatureEngine()
        self.group = group
        self.idle_interval_s = idle_interval_s
        self.record_freshness = record_freshness
        self.applied = 0
        self.skipped_replays = 0
        self.slo: SloRecorder | None = (
            SloRecorder(lambda: self.engine.budgets_s) if record_freshness else None
        )
        self._slo_flushed = 0.0
        self._last_idle = 0.0

    def handle(self, records: Sequence[Record]) -> None:
        """Apply signal records (idempotently) and write rows with positions."""
        # The batch allocates many short-lived containers and creates no cycles: the
        # cyclic collector would only rescan every live row, again and again.
        enabled = gc.isenabled()
        gc.disable()
        try:
            self._handle(records)
        finally:
            if enabled:
                gc.enable()

    def _handle(self, records: Sequence[Record]) -> None:
        stored = self.store.positions(self.group)
        by_user: dict[str, list[Signal]] = {}
        moved: dict[int, Position] = {}
        skipped = 0
        for r in records:
            pos = stored.get(r.partition)
            if pos is not None and r.offset < pos.next_offset:
                skipped += 1  # applied before a crash; its position was stored with the row
                continue
            sig = decode_signal(r.value)
            bucket = by_user.get(sig.user_id)
            if bucket is None:
                by_user[sig.user_id] = [sig]
            else:
                bucket.append(sig)
            moved[r.partition] = Position(r.offset + 1, r.timestamp_ms)
        self.skipped_replays += skipped
        if not moved:
            return
        engine = self.engine
        late_before = engine.late_events
        rows = self.store.get(USER_NAMESPACE, list(by_user))
        out: dict[str, bytes] = {}
        for user, signals in by_user.items():
            state = engine.decode(rows.get(user))
            self.applied += engine.apply(state, signals)
            out[user] = engine.encode(state)
        self.store.put(USER_NAMESPACE, out, group=self.group, positions=moved)
        if engine.late_events != late_before:
            FEATURE_LATE_EVENTS.labels("any").inc(engine.late_events - late_before)
        if self.record_freshness:
            self._observe(by_user)

    def _observe(self, by_user: dict[str, list[Signal]]) -> None:
        # Readable now: the write above committed. Publish accepted at received_at.
        now = time.time()
        per_type: dict[str, list[float]] = {}
        slo = self.slo
        requests: set[str] = set()
        for signals in by_user.values():
            for sig in signals:
                requests.add(sig.request_id)
                if sig.received_at is not None:
                    age = max(0.0, now - sig.received_at.timestamp())
                    per_type.setdefault(sig.event_type, []).append(age)
                    if slo is not None:
                        slo.observe(sig.producer, sig.event_type, age, now)
        for etype, ages in per_type.items():
            hist = FRESHNESS_SECONDS.labels(etype)
            for age in ages:
                hist.observe(age)
        requests.discard("")
        log.info(
            "applied",
            extra={
                "consumer": self.name,
                "users": len(by_user),
                "events": {t: len(a) for t, a in per_type.items()},
                "request_ids": sorted(requests)[:50],
                "request_count": len(requests),
            },
        )
        self._flush_slo()

    def _flush_slo(self, *, force: bool = False) -> None:
        # Once a second is plenty for minute-grained SLO counts.
        if self.slo is None or (not force and time.monotonic() - self._slo_flushed < 1.0):
            return
        self._slo_flushed = time.monotonic()
        rows = self.slo.rows()
        if rows:
            self.store.put(SLO_NAMESPACE, rows)
        self.slo.prune(self.store)

    def on_idle(self, partitions: set[int]) -> None:
        """Caught up on ``partitions``: everything appended until now is applied."""
        now = time.monotonic()
        if not partitions or now - self._last_idle < self.idle_interval_s:
            return
        self._last_idle = now
        self._flush_slo(force=True)
        stored = self.store.positions(self.group)
        as_of = int(time.time() * 1000)
        marks = {
            p: Position(stored[p].next_offset if p in stored else 0, as_of) for p in partitions
        }
        self.store.put(USER_NAMESPACE, {}, group=self.group, positions=marks)

    def erase(self, event: ErasureEvent) -> Confirmation:
        """Delete the user's feature row and verify that none of it predates the erasure.

        A row that holds only activity after the erasure (the user came back, and the
        ingestion policy accepts it) is kept: a re-sent erasure must not delete it.
        """
        erased_at = int(event.requested_at.timestamp() * 1000)
        row = self.store.get(USER_NAMESPACE, [event.user_id]).get(event.user_id)
        earliest = self.engine.earliest(self.engine.decode(row)) if row else None
        removed = 0
        if row is not None and (earliest is None or earliest <= erased_at):
            removed = self.store.delete(USER_NAMESPACE, [event.user_id])
        after = self.store.get(USER_NAMESPACE, [event.user_id]).get(event.user_id)
        after_first = self.engine.earliest(self.engine.decode(after)) if after else None
        remaining = 0 if after is None or (after_first or 0) > erased_at else 1
        return Confirmation(
            request_id=event.request_id,
            participant=self.name,
            store=self.store.url,
            method="delete row",
            rows_removed=removed,
            rows_remaining=remaining,
            verified_at=datetime.now(UTC),
            ok=remaining == 0,
            evidence={
                "namespace": USER_NAMESPACE,
                "scan": "row lookup after delete; a remaining row must start after the erasure",
                "row_after": "absent" if after is None else "only post-erasure activity",
            },
        )
