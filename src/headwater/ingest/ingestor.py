"""The publish path behind ``POST /v1/signals``, independent of HTTP.

Validate against the current contract, check the key's scope, drop event ids already
accepted within the idempotency window, stamp the envelope (producer, received_at,
schema_version), publish durably, then remember the ids. Nothing rejected reaches
the bus; a bus failure publishes nothing on the embedded bus and leaves the batch
safe to retry on every bus (consumers are idempotent by event id).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from headwater._jsonguard import JsonShape, check_json, check_ndjson
from headwater._time import format_time
from headwater.access.keys import ALL, ApiKey
from headwater.bus.base import Bus, Message
from headwater.contract._compiled import TypedSignal
from headwater.contract.definition import RegisteredEventType
from headwater.contract.signal import encode_map_record, encode_record
from headwater.contract.validator import BatchResult, Limits, Rejection, SignalValidator
from headwater.dedupe.base import Claim, IdempotencyWindow, Pending
from headwater.errors import PermissionDeniedError
from headwater.ingest.claims import LEASE_S, settle
from headwater.ingest.erased import ErasedUsers
from headwater.ingest.stats import IngestStats
from headwater.ingest.writer import IngestWriter, Send
from headwater.metrics import EVENTS_ACCEPTED, EVENTS_REJECTED
from headwater.registry.contracts import ContractRegistry
from headwater.wire import new_event_id

try:  # compiled (setup.py): a batch's records written in one pass
    from headwater.ingest._records import encode_records

    _COMPILED_RECORDS = True
except ImportError:  # pragma: no cover - installed without a C compiler
    _COMPILED_RECORDS = False

__all__ = ["EventResult", "IngestOutcome", "Ingestor", "PreparedBatch"]

log = logging.getLogger("headwater.ingest")


class EventResult(msgspec.Struct, omit_defaults=True):
    """One event's outcome as the producer receives it."""

    index: int
    status: Literal["accepted", "duplicate", "rejected"]
    event_id: str | None = None
    field: str | None = None
    rule: str | None = None
    message: str | None = None
    violations: list[dict[str, str]] | None = None


class IngestOutcome(msgspec.Struct):
    """The answer to one publish: counts and a result per event, in batch order."""

    accepted: int
    duplicates: int
    rejected: int
    producer: str
    received_at: str  # RFC 3339, fixed width
    results: list[EventResult]

    @property
    def status_code(self) -> int:
        """200 when every event was accepted (or already was), 207 when some were rejected."""
        return 207 if self.rejected else 200


class PreparedBatch:
    """A validated, encoded batch waiting for its durable write."""

    __slots__ = (
        "claimed",
        "duplicate_index",
        "entries",
        "events",
        "fresh",
        "indices",
        "messages",
        "pending",
        "producer",
        "received_at",
        "request_id",
        "result",
        "token",
        "waiting",
    )

    def __init__(
        self,
        result: BatchResult,
        fresh: list[TypedSignal],
        duplicate_index: set[int],
        messages: list[Message],
        *,
        producer: str,
        received_at: datetime,
        request_id: str = "",
        token: str = "",
    ) -> None:
        self.result = result
        self.fresh = fresh
        self.duplicate_index = duplicate_index
        self.messages = messages
        self.producer = producer
        self.received_at = received_at
        self.request_id = request_id
        #: The claim token of this send in the idempotency window.
        self.token = token
        #: The events to claim and publish (each id once) and their index in the body;
        #: ``messages`` and ``entries`` (event id, user id) follow their order.
        self.events: list[TypedSignal] = []
        self.indices: list[int] = []
        self.entries: list[tuple[str, str]] = []
        #: True once ``entries`` are claimed under ``token`` (taken over while settling).
        self.claimed = False
        #: Ids another send claimed and has not confirmed, and their events with index.
        self.pending: dict[str, Pending] = {}
        self.waiting: dict[str, tuple[int, TypedSignal]] = {}


class Ingestor:
    """Turns producer batches into durable, deduplicated signals on the bus."""

    def __init__(
        self,
        registry: ContractRegistry,
        bus: Bus,
        window: IdempotencyWindow,
        *,
        limits: Limits | None = None,
        refresh_s: float = 1.0,
        erased: ErasedUsers | None = None,
        record_version: int = 2,
    ) -> None:
        self.registry = registry
        self.bus = bus
        self.window = window
        #: Claims, publishes and confirms the concurrent sends together.
        self.writer = IngestWriter(bus, window)
        self.limits = limits or Limits()
        self.refresh_s = refresh_s
        self.erased = erased
        if record_version not in (1, 2):
            raise ValueError(f"a bus record's version is 1 or 2, not {record_version!r}")
        #: The version of the records written (``contract.signal.RECORD_FIELDS``): 1
        #: while consumers of an earlier release still read the bus.
        self.record_version = record_version
        self.stats = IngestStats()
        #: How long another send's claim is trusted before it counts as abandoned.
        self.lease_s = LEASE_S
        self._lock = threading.Lock()
        self._revision = registry.revision()
        current = registry.current()
        self._validator = SignalValidator(current, self.limits)
        self._owners = _owners(current)
        self._checked = time.monotonic()

    def refresh(self) -> None:
        """Pick up newly registered versions now rather than within ``refresh_s``."""
        self._checked = -self.refresh_s
        self.validator()

    def validator(self) -> SignalValidator:
        """The validator for the current contract (rebuilt when a version is registered)."""
        now = time.monotonic()
        if now - self._checked < self.refresh_s:
            return self._validator
        with self._lock:
            # Other threads keep using the current validator until the new one is built.
            revision = self.registry.revision()
            if revision != self._revision:
                current = self.registry.current()
                self._validator = SignalValidator(current, self.limits)
                self._owners = _owners(current)
                self._revision = revision
            self._checked = time.monotonic()
        return self._validator

    def ingest(
        self, body: bytes, key: ApiKey, *, ndjson: bool = False, request_id: str = ""
    ) -> IngestOutcome:
        """Validate, check scope, deduplicate and publish one batch (blocking)."""
        batch = self.prepare(body, key, ndjson=ndjson, request_id=request_id)
        if batch.entries and self.resolve(batch, self.submit(batch).result()):
            self.settle(batch)
            if batch.messages:
                self.submit(batch).result()
        return self.finish(batch)

    def prepare(
        self,
        body: bytes,
        key: ApiKey,
        *,
        ndjson: bool = False,
        request_id: str = "",
        checked: JsonShape | None = None,
    ) -> PreparedBatch:
        """Everything before the durable write: validate, check scope, drop an id given
        twice in the batch, stamp the envelope and encode. Raises before anything is
        claimed or published. ``checked``: what ``check_json`` returned for this JSON
        body where the caller ran it already."""
        received_at = datetime.now(UTC)
        validator = self.validator()
        # A key given twice in an object, or nesting past 64 levels, refuses the whole
        # batch before any event is read: which of two values counts would be a guess.
        if ndjson:
            check_ndjson(body, allow_malformed_lines=True)
            result = validator.validate_ndjson(body, now=received_at)
        else:
            if checked is None:
                checked = check_json(body)
            result = validator.validate_json(body, now=received_at, longest_event=checked.longest)
        _check_scope(result, key, self._owners)
        if self.erased is not None:
            result = self.erased.screen(result)
        batch = PreparedBatch(
            result,
            [],
            set(),
            [],
            producer=key.team,
            received_at=received_at,
            request_id=request_id,
            token=new_event_id("c_"),
        )
        events, indices = result.accepted, result.accepted_indices
        ids = [event.event_id for event in events]
        if len(set(ids)) == len(ids):  # the usual batch: each id once
            batch.events, batch.indices = events, indices
        else:
            in_batch: set[str] = set()
            for index, event, event_id in zip(indices, events, ids, strict=True):
                if event_id in in_batch:
                    batch.duplicate_index.add(index)  # the same id twice in one batch
                else:
                    in_batch.add(event_id)
                    batch.events.append(event)
                    batch.indices.append(index)
        self._encode(batch, batch.events)
        return batch

    def submit(self, batch: PreparedBatch) -> Future[Claim]:
        """The batch to the writer's next group: claimed (unless ``batch.claimed``),
        published and confirmed once the future completes, with its claim."""
        return self.writer.submit(
            Send(batch.messages, batch.entries, batch.token, claimed=batch.claimed)
        )

    def claim(self, batch: PreparedBatch) -> bool:
        """Claim the batch's ids now, outside the writer, and ``resolve`` with what the
        window answered: a send taken step by step (the tests of a gateway that dies
        between claiming, publishing and confirming). Publishing ``batch.messages`` and
        confirming ``batch.token`` are then the caller's."""
        pending = self.resolve(batch, self.window.claim(batch.entries, batch.token))
        batch.claimed = True
        return pending

    def resolve(self, batch: PreparedBatch, claim: Claim) -> bool:
        """Sort the batch's events by what its claim found: published (``fresh``),
        accepted before (duplicates), or held by another send (``pending``: True when
        there are some, to ``settle`` off the event loop)."""
        if len(claim.mine) == len(batch.events):  # the usual send: every id new
            batch.fresh.extend(batch.events)
            return False
        kept = []  # the events this send won: their messages were published
        for i, (index, event) in enumerate(zip(batch.indices, batch.events, strict=True)):
            if event.event_id in claim.mine:
                batch.fresh.append(event)
                kept.append(i)
            elif event.event_id in claim.done:
                batch.duplicate_index.add(index)
            else:
                batch.pending[event.event_id] = claim.pending[event.event_id]
                batch.waiting[event.event_id] = (index, event)
        if len(kept) != len(batch.events):
            batch.messages = [batch.messages[i] for i in kept]
            batch.entries = [batch.entries[i] for i in kept]
        return bool(batch.pending)

    def _encode(self, batch: PreparedBatch, events: list[TypedSignal]) -> None:
        if self.record_version == 1:
            _encode_maps(batch, events)
            return
        # The gateway's hottest loop: compiled where it is built (``ingest/_records.pyx``).
        encode_records(
            events,
            batch.messages,
            batch.entries,
            producer=batch.producer,
            received_at=batch.received_at,
            request_id=batch.request_id,
            encode=encode_record,
            message=Message,
        )

    def settle(self, batch: PreparedBatch) -> None:
        """Resolve the ids another send holds (blocking, up to about a lease): each
        becomes a duplicate, or this send's to publish, claimed under a new token (the
        writer confirmed the first one). Afterwards ``batch.messages`` holds what is
        left to publish (``send``). Called only when ``batch.pending`` is not empty,
        off the event loop."""
        batch.messages, batch.entries = [], []
        if not batch.pending:
            return
        batch.token = new_event_id("c_")
        batch.claimed = True
        entries = [(e, batch.waiting[e][1].user_id) for e in batch.pending]
        settled = settle(
            self.window, self.bus, entries, batch.pending, batch.token, lease_s=self.lease_s
        )
        mine = []
        for event_id, (index, event) in batch.waiting.items():
            if event_id in settled.mine:
                mine.append(event)
            else:
                batch.duplicate_index.add(index)
        batch.fresh.extend(mine)
        self._encode(batch, mine)
        batch.pending = {}
        batch.waiting = {}

    def finish(self, batch: PreparedBatch) -> IngestOutcome:
        """After the durable, confirmed write: count the batch and build the answer."""
        self._account(batch)
        return _outcome(batch.result, batch.duplicate_index, batch.producer, batch.received_at)

    def _account(self, batch: PreparedBatch) -> None:
        producer = batch.producer
        per_type: dict[str, int] = {}
        classes: Counter[type[TypedSignal]] = Counter(map(type, batch.fresh))
        for cls, n in classes.items():
            name = str(cls.__struct_config__.tag)
            per_type[name] = per_type.get(name, 0) + n
        for etype, n in per_type.items():
            EVENTS_ACCEPTED.labels(producer, etype).inc(n)
        rejections = batch.result.rejections
        for (etype, rule), n in Counter(
            (r.event_type or "unknown", r.rule) for r in rejections
        ).items():
            EVENTS_REJECTED.labels(producer, etype, rule).inc(n)
        self.stats.record(
            producer, len(batch.fresh), rejections, definitions=self._validator.definitions
        )
        log.info(
            "publish",
            extra={
                "producer": producer,
                "accepted": len(batch.fresh),
                "duplicates": len(batch.duplicate_index),
                "rejected": len(rejections),
                "event_types": dict(per_type),
                "rejection_rules": dict(Counter(r.rule for r in rejections)),
            },
        )

    def close(self) -> None:
        """Finish queued publishes."""
        self.writer.close()


def _type_name(event: TypedSignal) -> str:
    return str(type(event).__struct_config__.tag)


def _owners(current: list[RegisteredEventType]) -> dict[str, str]:
    return {r.name: r.definition.owner for r in current}


def _check_scope(result: BatchResult, key: ApiKey, owners: dict[str, str]) -> None:
    if ALL in key.event_types and ALL in key.surfaces:
        return
    # The types the key may publish, decided once per batch, not once per event.
    allowed = {t for t in owners if key.allows_type(t, owners.get)}
    refused: list[dict[str, Any]] = []
    for index, event in zip(result.accepted_indices, result.accepted, strict=True):
        etype = _type_name(event)
        if etype not in allowed:
            field, value = "event_type", etype
        elif not key.allows_surface(str(event.surface)):  # type: ignore[attr-defined]
            field, value = "surface", str(event.surface)  # type: ignore[attr-defined]
        else:
            continue
        refused.append(
            {
                "index": index,
                "event_id": event.event_id,
                "event_type": etype,
                "field": field,
                "rule": "scope",
                "message": f"{field} {value!r} not allowed",
            }
        )
    if refused:
        raise PermissionDeniedError(
            f"key {key.key_id} of team {key.team} may publish {key.describe_scope()}; refused: "
            + "; ".join(f"#{r['index']} ({r['event_id']}): {r['message']}" for r in refused[:20])
            + (" ..." if len(refused) > 20 else ""),
            refused,
        )


def _encode_maps(batch: PreparedBatch, events: list[TypedSignal]) -> None:
    """Records of version 1, as releases before version 2 wrote them: each event, its
    envelope set, encoded as a map by field name."""
    producer, received_at, request_id = batch.producer, batch.received_at, batch.request_id
    for event in events:
        event.producer = producer
        event.received_at = received_at
        event.schema_version = type(event).schema_version_of_type
        if request_id:
            event.request_id = request_id
        batch.messages.append(Message(event.user_id, encode_map_record(event)))
        batch.entries.append((event.event_id, event.user_id))


def _outcome(
    result: BatchResult, duplicate_index: set[int], producer: str, received_at: datetime
) -> IngestOutcome:
    results: list[EventResult]
    if not result.rejections and not duplicate_index:
        # The common case, built without merging and sorting.
        results = [
            EventResult(index=i, status="accepted", event_id=e.event_id)
            for i, e in enumerate(result.accepted)
        ]
    else:
        results = [_result(index, item, duplicate_index) for index, item in result.outcomes()]
    return IngestOutcome(
        accepted=len(result.accepted) - len(duplicate_index),
        duplicates=len(duplicate_index),
        rejected=len(result.rejections),
        producer=producer,
        received_at=format_time(received_at),
        results=results,
    )


def _result(index: int, item: TypedSignal | Rejection, duplicate_index: set[int]) -> EventResult:
    if isinstance(item, TypedSignal):
        status: Literal["accepted", "duplicate"] = (
            "duplicate" if index in duplicate_index else "accepted"
        )
        return EventResult(index=index, status=status, event_id=item.event_id)
    return EventResult(
        index=index,
        status="rejected",
        event_id=item.event_id,
        field=item.field,
        rule=item.rule,
        message=item.message,
        violations=[
            {"field": v.field, "rule": v.rule, "message": v.message} for v in item.violations
        ],
    )


def _encode_records_py(
    events: list[TypedSignal],
    messages: list[Message],
    entries: list[tuple[str, str]],
    *,
    producer: str,
    received_at: datetime,
    request_id: str,
    encode: Callable[[Any], bytes],
    message: type[Message],
) -> None:
    """Each event's record as a tuple of its fields (``RECORD_FIELDS``' order, a record of
    version 2) encoded by ``encode``: the event itself is left as validated. What
    ``ingest/_records.pyx`` writes in one compiled pass."""
    for event in events:
        kind = type(event)
        user_id = event.user_id
        event_id = event.event_id
        record = (
            event_id,
            kind.__struct_config__.tag,
            user_id,
            event.surface,  # type: ignore[attr-defined]
            event.timestamp,
            event.payload,  # type: ignore[attr-defined]
            event.item_id,  # type: ignore[attr-defined]
            producer,
            received_at,
            kind.schema_version_of_type,
            request_id,
        )
        messages.append(message(user_id, encode(record)))
        entries.append((event_id, user_id))


if not _COMPILED_RECORDS:  # pragma: no cover - installed without a C compiler
    encode_records = _encode_records_py
