"""The streaming feature consumer: bus records in, user feature rows out, within seconds.

Per batch it coalesces records by user, loads each touched row once, applies the
user's signals in bus order, and writes every row together with the group's
positions in one atomic write. A replay after a crash skips records below the stored
positions, and each row remembers its recent event ids, so nothing is counted twice.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime

import msgspec

from headwater._gc import collector_paused
from headwater.bus.base import Record
from headwater.contract.definition import DEFAULT_FRESHNESS_BUDGET_S
from headwater.erasure.events import Confirmation, ErasureEvent
from headwater.erasure.ledger import Participant
from headwater.erasure.participant import DEFAULT_CONFIRM_WITHIN_S
from headwater.features.engine import FeatureEngine
from headwater.features.following import DefinitionFollower
from headwater.features.handover import TailReader
from headwater.features.live import LiveDefinitions
from headwater.features.signals import Run, SignalBatch, decode_batch, decode_stream_signal
from headwater.features.versions import USER_NAMESPACE
from headwater.metrics import FEATURE_LATE_EVENTS, FRESHNESS_SECONDS
from headwater.online.base import OnlineStore, Position
from headwater.runtime.consumer import Consumer
from headwater.slo import SLO_NAMESPACE, SloRecorder

__all__ = ["BATCH_SIZE", "LINGER_S", "USER_NAMESPACE", "FeatureConsumer"]

#: Records per batch at most. A caught-up consumer reads what has arrived since its last
#: batch, so the cap matters when it catches up: a bigger batch shares each user row
#: and each B-tree page among more events. bench/bench_features.py, 1,035,395 signals
#: over 100,000 users (BENCHMARKS.md, "The feature reader's batch in place"): see there
#: for events/s and peak RSS at 75,000 and 100,000 (the 200 MB target holds at 100,000
#: since the reader stopped copying each event's fields and sizing its table of users by
#: the batch's events).
BATCH_SIZE = 100_000
#: After a batch smaller than BATCH_SIZE the next poll waits until this long (seconds)
#: after the last one began. Each batch pays a row read, a write and two commits
#: whatever its size; at 20,000 events/s on the embedded stack's one core, batches at
#: least 50 ms apart gave freshness p99 around 410 ms against 430-500 ms unspaced
#: (BENCHMARKS.md), and add at most 50 ms to an event that arrives on an idle consumer.
LINGER_S = 0.05
log = logging.getLogger("headwater.features")


class FeatureConsumer(Consumer):
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
        confirm_within_s: float = DEFAULT_CONFIRM_WITHIN_S,
        definitions: LiveDefinitions | None = None,
        tail: TailReader | None = None,
        partition_of: Callable[[str], int] | None = None,
        dropped: Callable[[Record], bool] | None = None,
    ) -> None:
        self.store = store
        #: The control plane's feature definitions, followed without a restart.
        self.definitions = definitions
        self.follower = (
            DefinitionFollower(
                definitions,
                store,
                group=group,
                decode=decode_stream_signal,
                tail=tail,
                partition_of=partition_of,
                dropped=dropped,
            )
            if definitions is not None
            else None
        )
        self.confirm_within_s = confirm_within_s
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
        #: The generation claimed for each partition held (``on_assigned``).
        self.fence: dict[int, int] = {}

    def participants(self) -> list[Participant]:
        """The online store's user rows."""
        return [Participant(self.name, self.store.url, self.confirm_within_s)]

    def on_assigned(self, partitions: set[int]) -> dict[int, int]:
        """Claim the partitions in the online store: a previous owner's row writes for
        them are refused from now on."""
        claimed = self.store.claim(self.group, sorted(partitions))
        self.fence.update(claimed)
        if self.follower is not None:
            # Another member may have taken a backfill over on these: know it now.
            self.follower.live.refresh(force=True)
        return claimed

    def on_revoked(self, partitions: set[int]) -> None:
        """No longer ours: stop writing for them."""
        for p in partitions:
            self.fence.pop(p, None)

    def _fence_of(self, partitions: Iterable[int]) -> dict[int, int]:
        missing = [p for p in partitions if p not in self.fence]
        if missing:
            # Read before the runtime saw the assignment (a direct handle() call): claim now.
            self.fence.update(self.store.claim(self.group, missing))
        return {p: self.fence[p] for p in partitions}

    def handle(self, records: Sequence[Record]) -> None:
        """Apply signal records (idempotently) and write rows with positions."""
        # The batch allocates many short-lived containers and creates no cycles: the
        # cyclic collector would only rescan every live row, again and again.
        with collector_paused():
            self._handle(records)

    @property
    def namespace(self) -> str:
        """The namespace the user rows are written to (another after a rebuild)."""
        return self.follower.namespace if self.follower is not None else USER_NAMESPACE

    @property
    def previous(self) -> str | None:
        """The namespace written too while a rebuild waits for other members' switch."""
        return self.follower.previous if self.follower is not None else None

    def _follow(self, stored: Mapping[int, Position]) -> None:
        """A new version, a completed backfill or a staged run to take over: applied from
        the next record of every partition on (see ``following``)."""
        if self.follower is not None:
            self.engine = self.follower.follow(
                self.engine, stored, held=set(self.fence), fence_of=self._fence_of
            )

    def _handle(self, records: Sequence[Record]) -> None:
        stored = self.store.positions(self.group)
        self._follow(stored)
        # The batch in columns, each user's events together (``signals``). Freshness:
        # the events of one publish request share its receive time, producer and id,
        # and lie next to each other on each partition; a request's events are counted
        # per event type as they are read, and its age observed once after the write.
        batch = decode_batch(
            records, {p: pos.next_offset for p, pos in stored.items()}, runs=self.record_freshness
        )
        self.skipped_replays += batch.skipped
        if not batch.last:
            return
        moved = {p: Position(r.offset + 1, r.timestamp_ms) for p, r in batch.last.items()}
        engine = self.engine
        late_before = engine.late_events
        rebuilt = self.follower.rebuilt if self.follower is not None else {}
        if rebuilt:
            self._handle_rebuilt(records, batch, moved, rebuilt)
        else:
            self._write(records, batch, moved)
        if engine.late_events != late_before:
            FEATURE_LATE_EVENTS.labels("any").inc(engine.late_events - late_before)
        if batch.runs is not None:
            self._observe(batch.runs, len(batch.users))

    def _write(
        self, records: Sequence[Record], batch: SignalBatch, moved: Mapping[int, Position]
    ) -> None:
        """Apply the batch to its users' rows and write them with the positions."""
        engine = self.engine
        rows = self.store.get(self.namespace, batch.users)
        out: dict[str, bytes] = {}
        if self.follower is not None and self.follower.overrides:
            part = {r.key: r.partition for r in records}
            self.applied += self._apply_per_partition(part, batch, rows, out)
        else:
            self.applied += engine.apply_rows(batch, rows, out)
        if self.previous is not None:
            self.store.put(self.previous, out, group=self.group, fence=self._fence_of(moved))
        self.store.put(
            self.namespace, out, group=self.group, positions=moved, fence=self._fence_of(moved)
        )

    def _handle_rebuilt(
        self,
        records: Sequence[Record],
        batch: SignalBatch,
        moved: Mapping[int, Position],
        rebuilt: Mapping[int, str],
    ) -> None:
        """A batch while some partitions held are already in a rebuild's namespace
        (another member took them over) and this member has not switched: their users'
        rows are read from that namespace and written there with their positions, and
        mirrored to the old namespace, which holds the other partitions' rows and
        positions. Each partition's rows and position are written together."""
        part = {r.key: r.partition for r in records}
        users_by_ns: dict[str, list[str]] = {}
        for user in batch.users:
            users_by_ns.setdefault(rebuilt.get(part[user], self.namespace), []).append(user)
        rows: dict[str, bytes] = {}
        for namespace, users in users_by_ns.items():
            rows.update(self.store.get(namespace, users))
        out: dict[str, bytes] = {}
        self.applied += self._apply_per_partition(part, batch, rows, out)
        for namespace, users in users_by_ns.items():
            if namespace == self.namespace:
                continue
            parts = {p: pos for p, pos in moved.items() if rebuilt.get(p) == namespace}
            self.store.put(
                namespace,
                {u: out[u] for u in users},
                group=self.group,
                positions=parts,
                fence=self._fence_of(parts),
            )
        own = {p: pos for p, pos in moved.items() if p not in rebuilt}
        self.store.put(
            self.namespace, out, group=self.group, positions=own, fence=self._fence_of(moved)
        )

    def _apply_per_partition(
        self,
        part: Mapping[str, int],
        batch: SignalBatch,
        rows: Mapping[str, bytes],
        out: dict[str, bytes],
    ) -> int:
        """The batch's users applied each with its partition's engine (``part``: each
        user's partition), while a backfill is handed over on some of this consumer's
        partitions and not on others."""
        assert self.follower is not None
        starts = batch.starts
        applied = 0
        for k, user in enumerate(batch.users):
            engine = self.follower.engine_for(part[user], self.engine)
            state = engine.decode(rows.get(user))
            late = engine.late_events
            applied += engine.apply_batch(state, batch, starts[k], starts[k + 1])
            if engine is not self.engine and engine.late_events != late:
                FEATURE_LATE_EVENTS.labels("any").inc(engine.late_events - late)
            out[user] = engine.encode(state)
        return applied

    def _observe(self, runs: list[Run], users: int) -> None:
        # Readable now: the write above committed. Publish accepted at received_at.
        now = time.time()
        ages = _BatchAges(self.slo.budgets() if self.slo is not None else {})
        requests: set[str] = set()
        for producer, received_at, request, types in runs:
            requests.add(request)
            if received_at is not None:
                ages.add(producer, max(0.0, now - received_at), types)
        per_type = ages.record(self.slo, now)
        requests.discard("")
        log.info(
            "applied",
            extra={
                "consumer": self.name,
                "users": users,
                "events": per_type,
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
        self._follow(stored)
        as_of = int(time.time() * 1000)
        marks = {
            p: Position(stored[p].next_offset if p in stored else 0, as_of) for p in partitions
        }
        self.store.put(
            self.namespace, {}, group=self.group, positions=marks, fence=self._fence_of(marks)
        )

    def erase(self, event: ErasureEvent) -> list[Confirmation]:
        """Erase one user: :meth:`erase_many` of one."""
        return self.erase_many([event])

    def erase_many(self, events: Sequence[ErasureEvent]) -> list[Confirmation]:
        """Delete each user's feature row, verify that none of it predates the erasure,
        then scrub the store's files once for the run (write-ahead log, freed pages).

        A row that holds only activity after the erasure (the user came back, and the
        ingestion policy accepts it) is kept: a re-sent erasure must not delete it.
        """
        found = [self._erase_row(event) for event in events]
        # A staged backfill or a rebuild's other namespace holds the user's values too.
        users = [event.user_id for event in events]
        others = self.follower.other_namespaces() if self.follower is not None else set()
        for namespace in others:
            self.store.delete(namespace, users)
        # A resent erasure (the verification found a copy, or the store was late) also
        # makes sure the store's files hold no old copy of the rows: see OnlineStore.scrub.
        scrubbed = self.store.scrub(
            erased=users if any(e.attempt > 1 for e in events) else (),
            rebuild=any(e.rebuild for e in events),
        )
        return [
            msgspec.structs.replace(c, evidence={**(c.evidence or {}), "scrub": scrubbed})
            for c in found
        ]

    def _erase_row(self, event: ErasureEvent) -> Confirmation:
        erased_at = int(event.requested_at.timestamp() * 1000)
        row = self.store.get(self.namespace, [event.user_id]).get(event.user_id)
        earliest = self.engine.earliest(self.engine.decode(row)) if row else None
        removed = 0
        if row is not None and (earliest is None or earliest <= erased_at):
            removed = self.store.delete(self.namespace, [event.user_id])
        after = self.store.get(self.namespace, [event.user_id]).get(event.user_id)
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
                "namespace": self.namespace,
                "scan": "row lookup after delete; a remaining row must start after the erasure",
                "row_after": "absent" if after is None else "only post-erasure activity",
            },
        )


class _BatchAges:
    """The ages of one batch's events, gathered as the freshness histogram and the SLO
    counts keep them and recorded once: per type, events and age sums per histogram
    bucket; per (producer, type), events, events within the budget, oldest age."""

    def __init__(self, budgets: Mapping[str, float]) -> None:
        self.budgets = budgets
        self.bounds = FRESHNESS_SECONDS.upper_bounds
        self.counts: dict[str, list[int]] = {}
        self.sums: dict[str, list[float]] = {}
        self.slo: dict[tuple[str, str], list[float]] = {}

    def add(self, producer: str, age: float, types: Mapping[str, int]) -> None:
        """Events of ``producer`` (per type), all readable ``age`` seconds after acceptance."""
        bucket = bisect_left(self.bounds, age)
        for etype, n in types.items():
            counts = self.counts.get(etype)
            if counts is None:
                counts = self.counts[etype] = [0] * len(self.bounds)
                self.sums[etype] = [0.0] * len(self.bounds)
            counts[bucket] += n
            self.sums[etype][bucket] += age * n
            acc = self.slo.get((producer, etype))
            if acc is None:
                acc = self.slo[producer, etype] = [0, 0, 0.0]
            acc[0] += n
            if age <= self.budgets.get(etype, DEFAULT_FRESHNESS_BUDGET_S):
                acc[1] += n
            acc[2] = max(acc[2], age)

    def record(self, slo: SloRecorder | None, now: float) -> dict[str, int]:
        """Into the histogram and ``slo``; the events per type."""
        FRESHNESS_SECONDS.observe_many(
            ((etype,), counts, self.sums[etype]) for etype, counts in self.counts.items()
        )
        if slo is not None:
            for (producer, etype), (total, within, oldest) in self.slo.items():
                slo.observe_counts(
                    producer, etype, now=now, total=int(total), within=int(within), oldest=oldest
                )
        return {etype: sum(counts) for etype, counts in self.counts.items()}
