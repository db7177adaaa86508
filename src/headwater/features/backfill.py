"""Backfill: feature values computed for every user from the archive, by the stream's pass.

One pinned snapshot of the Delta archive gives the rows and, in the same version, the
archive consumer's bus position per partition (its Delta transaction ids): the rows
are exactly the archived records below those positions. Each user's rows, in event
time order, go through ``FeatureEngine.apply``, the compiled pass the stream runs,
with only the features being backfilled; the states are staged in a namespace of the
online store, and the run is marked ``staged`` with the positions. The feature consumer
then replays the bus from those positions up to its own and takes the values over
(``handover``). Erased users' rows (tombstones) are left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from headwater.features.backfills import BackfillLedger, BackfillRun, RunKind
from headwater.features.engine import FeatureEngine
from headwater.features.spec import FeatureSpec
from headwater.features.versions import FeatureVersions
from headwater.online.base import OnlineStore

if TYPE_CHECKING:
    from headwater.archive.table import ArchiveTable

__all__ = ["ArchivedSignal", "Backfill", "archived_states", "feeding_types", "read_archive"]

log = logging.getLogger("headwater.features")

#: The archive's columns a feature reads.
COLUMNS = ("event_id", "event_type", "user_id", "item_id", "surface", "timestamp", "payload")
#: Kinds that read the payload (or a spec with a removal rule): the JSON is decoded for them.
_PAYLOAD_KINDS = frozenset({"mean", "last_event"})
_ROWS_PER_WRITE = 5_000
_decode_json = msgspec.json.Decoder(dict[str, Any]).decode
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ArchivedSignal(msgspec.Struct, frozen=True, gc=False):
    """An archived row as the feature pass reads a signal."""

    event_id: str
    event_type: str
    surface: str
    timestamp: datetime
    item_id: str | None
    payload: dict[str, Any]


def reads_payload(specs: tuple[FeatureSpec, ...]) -> bool:
    """True when a feature of ``specs`` reads payload fields."""
    return any(s.kind in _PAYLOAD_KINDS or s.remove_when for s in specs)


def read_archive(
    table: ArchiveTable,
    *,
    group: str,
    partitions: int,
    with_payload: bool,
    event_types: Sequence[str] | None = None,
) -> tuple[pa.Table, dict[int, int], int]:
    """One pinned version of the archive: its rows (of ``event_types`` only, if given),
    the bus position per partition up to which they hold every archived record of
    ``group`` (the archive consumer), and the number of rows the version holds."""
    from headwater.archive.consumer import position_id

    snapshot = table.snapshot()
    ids = {p: position_id(group, p) for p in range(partitions)}
    recorded = table.transaction_versions(list(ids.values()), snapshot)
    positions = {p: recorded[a] or 0 for p, a in ids.items()}
    columns = [c for c in COLUMNS if with_payload or c != "payload"]
    data = table.read(columns, snapshot=snapshot, event_types=event_types)
    rows = sum(
        int(n or 0)
        for n in snapshot.get_add_actions(flatten=True).column("num_records").to_pylist()
    )
    return data, positions, rows


def feeding_types(specs: tuple[FeatureSpec, ...]) -> list[str] | None:
    """The event types that feed one of ``specs`` (None: every type). The rows of other
    types change none of their values: in event time order no row is beyond the
    lateness bound, so none depends on the rows of other types either."""
    types = {t for s in specs for t in s.event_types}
    return None if "*" in types else sorted(types)


def archived_states(
    data: pa.Table,
    engine: FeatureEngine,
    *,
    erased: Callable[[str], int | None] = lambda _user: None,
    chunk_rows: int = 65_536,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each user's state after all of its rows, applied in event time order (ties in
    archive order) through ``engine``; an erased user's rows up to its erasure time
    (``erased(user) -> ms``) are left out, and a user left with none is not yielded.
    Users come in the order of their first event, as the stream first wrote them: the
    SQLite online store lays rows in the order first written, so a store written from
    here keeps the active users on shared pages (``online/sqlite.py``)."""
    if data.num_rows == 0:
        return
    users = data.column("user_id")
    firsts = (
        data.select(["user_id", "timestamp"]).group_by("user_id").aggregate([("timestamp", "min")])
    )
    first = pc.take(
        firsts.column("timestamp_min"), pc.index_in(users, value_set=firsts.column("user_id"))
    )
    order = pc.sort_indices(
        pa.table({"first": first, "user_id": users, "timestamp": data.column("timestamp")}),
        sort_keys=[("first", "ascending"), ("user_id", "ascending"), ("timestamp", "ascending")],
    )
    with_payload = "payload" in data.column_names
    apply = engine.apply
    user: str | None = None
    events: list[ArchivedSignal] = []
    # The sorted rows taken a chunk at a time: never a second copy of the whole snapshot.
    for start in range(0, data.num_rows, chunk_rows):
        batch = data.take(order.slice(start, chunk_rows)).combine_chunks()
        cols = {n: batch.column(n).to_pylist() for n in batch.schema.names if n != "timestamp"}
        # Microseconds, then one datetime each: Arrow's own conversion of a time zone
        # aware column goes through zoneinfo, about 8 times slower.
        micros = batch.column("timestamp").cast(pa.int64()).to_pylist()
        cols["timestamp"] = [_EPOCH + timedelta(microseconds=us) for us in micros]
        payloads = cols["payload"] if with_payload else None
        for i, (uid, eid, etype, item, surface, ts) in enumerate(
            zip(
                cols["user_id"],
                cols["event_id"],
                cols["event_type"],
                cols["item_id"],
                cols["surface"],
                cols["timestamp"],
                strict=True,
            )
        ):
            if uid != user:
                if user is not None:
                    state = _fold(apply, user, events, erased)
                    if state is not None:
                        yield user, state
                user, events = uid, []
            text = payloads[i] if payloads is not None else None
            payload = _decode_json(text) if text else {}
            events.append(ArchivedSignal(eid, etype, surface, ts, item, payload))
    if user is not None:
        state = _fold(apply, user, events, erased)
        if state is not None:
            yield user, state


def _fold(
    apply: Callable[[dict[str, Any], list[ArchivedSignal]], int],
    user: str,
    events: list[ArchivedSignal],
    erased: Callable[[str], int | None],
) -> dict[str, Any] | None:
    erased_at = erased(user)
    if erased_at is not None:
        events = [e for e in events if int(e.timestamp.timestamp() * 1000) > erased_at]
        if not events:
            return None
    state: dict[str, Any] = {}
    apply(state, events)
    return state


class Backfill:
    """Computes the current version's backfilling definitions from the archive and
    stages them for the stream to take over."""

    def __init__(
        self,
        versions: FeatureVersions,
        ledger: BackfillLedger,
        table: ArchiveTable,
        store: OnlineStore,
        template: FeatureEngine,
        *,
        partitions: int,
        archive_group: str = "archive",
        erased: Callable[[], Mapping[str, int]] = dict,
        subject: Callable[[str], str] = str,
    ) -> None:
        self.versions = versions
        self.ledger = ledger
        self.table = table
        self.store = store
        self.template = template
        self.partitions = partitions
        self.archive_group = archive_group
        self.erased = erased
        self.subject = subject

    def pending(self) -> dict[str, int]:
        """The backfilling definitions of the current version no run covers yet."""
        current = self.versions.current()
        if current is None:
            return {}
        covered = {
            (n, v)
            for run in self.ledger.runs(("computing", "staged"))
            for n, v in run.features.items()
        }
        return {
            n: current.defined_in[n]
            for n in current.backfilling
            if (n, current.defined_in[n]) not in covered
        }

    def retire_outdated(self) -> list[str]:
        """Staged runs of a definition replaced since: marked failed, staging cleared
        (no consumer takes them over). Their ids."""
        current = self.versions.current()
        if current is None:
            return []
        retired = []
        for run in self.ledger.runs(("staged",)):
            if any(current.defined_in.get(n) != v for n, v in run.features.items()):
                self.ledger.update(run.id, state="failed", progress={"superseded": True})
                for namespace in run.namespaces:
                    self.store.clear(namespace)
                retired.append(run.id)
        return retired

    def run(
        self,
        *,
        kind: RunKind = "backfill",
        progress: Callable[[int, int], None] | None = None,
    ) -> BackfillRun | None:
        """Compute and stage one run: the pending definitions (every feature for a
        rebuild). None when nothing is pending."""
        current = self.versions.current()
        if current is None:
            return None
        self.retire_outdated()
        features = current.defined_in if kind == "rebuild" else self.pending()
        if not features:
            return None
        specs = tuple(s for s in current.specs if s.name in features)
        run = self.ledger.start(kind, current.version, features)
        try:
            return self._compute(run, specs, current.defined_in, progress)
        except BaseException:
            self.ledger.update(run.id, state="failed")
            for namespace in run.namespaces:
                self.store.clear(namespace)
            raise

    def _compute(
        self,
        run: BackfillRun,
        specs: tuple[FeatureSpec, ...],
        defined_in: Mapping[str, int],
        progress: Callable[[int, int], None] | None,
    ) -> BackfillRun:
        started = time.perf_counter()
        data, positions, scanned = read_archive(
            self.table,
            group=self.archive_group,
            partitions=self.partitions,
            with_payload=reads_payload(specs),
            event_types=feeding_types(specs),
        )
        total = len(pc.unique(data.column("user_id"))) if data.num_rows else 0
        engine = self.template.replaced(
            specs=specs, defined_in=defined_in, backfilling=(), version=run.version
        )
        tombstones = dict(self.erased())
        subject = self.subject

        def erased(user: str) -> int | None:
            return tombstones.get(subject(user)) if tombstones else None

        done = 0
        out: dict[str, bytes] = {}
        for user, state in archived_states(data, engine, erased=erased):
            out[user] = engine.encode(state)
            done += 1
            if len(out) >= _ROWS_PER_WRITE:
                self._stage(run, rows=out, done=done, total=total, progress=progress)
                out = {}
        self._stage(run, rows=out, done=done, total=total, progress=progress)
        # An erasure recorded while the run computed: its user is not staged.
        late = [u for u, at in self.erased().items() if tombstones.get(u) != at]
        if late:
            gone = {u for u in self.store.keys(run.staging) if subject(u) in set(late)}
            self.store.delete(run.staging, sorted(gone))
        summary: dict[str, object] = {
            "users_done": done,
            "users_total": total,
            "events": scanned,  # the archived signals of the version
            "events_applied": data.num_rows,  # those of the types feeding the features
            "seconds": round(time.perf_counter() - started, 3),
            "positions": {str(p): o for p, o in positions.items()},
        }
        self.ledger.update(run.id, state="staged", progress=summary, positions=positions)
        log.info("backfill staged", extra={"run": run.id, **summary})
        return msgspec.structs.replace(run, state="staged", positions=positions, progress=summary)

    def _stage(
        self,
        run: BackfillRun,
        *,
        rows: dict[str, bytes],
        done: int,
        total: int,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        if rows:
            self.store.put(run.staging, rows)
        # The gateway's /metrics reads it from here (a gauge per feature).
        self.ledger.update(run.id, progress={"users_done": done, "users_total": total})
        if progress is not None:
            progress(done, total)
