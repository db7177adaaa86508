"""The publish path behind ``POST /v1/signals``, independent of HTTP.

Validate against the current contract, check the key's scope, drop event ids already
accepted within the idempotency window, stamp the envelope (producer, received_at,
schema_version), publish durably, then remember the ids. Nothing rejected reaches
the bus; a bus failure publishes nothing on the embedded bus and leaves the batch
safe to retry on every bus (consumers are idempotent by event id).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

import msgspec

from headwater.access.keys import ProducerKey
from headwater.bus.base import Bus, Message
from headwater.contract._compiled import TypedSignal
from headwater.contract.registry import ContractRegistry
from headwater.contract.signal import encode_signal
from headwater.contract.validator import BatchResult, Limits, SignalValidator
from headwater.dedupe.base import IdempotencyWindow
from headwater.errors import PermissionDeniedError

__all__ = ["EventResult", "IngestOutcome", "Ingestor"]


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
    received_at: datetime
    results: list[EventResult]

    @property
    def status_code(self) -> int:
        """200 when every event was accepted (or already was), 207 when some were rejected."""
        return 207 if self.rejected else 200


class Ingestor:
    """Turns producer batches into durable, deduplicated signals on the bus."""

    def __init__(self, registry: ContractRegistry, bus: Bus, window: IdempotencyWindow, *,
                 limits: Limits | None = None, refresh_s: float = 1.0,
                 on_published: Callable[[list[TypedSignal], datetime], None] | None = None,
                 ) -> None:
        self.registry = registry
        self.bus = bus
        self.window = window
        self.limits = limits or Limits()
        self.refresh_s = refresh_s
        self.on_published = on_published
        self._lock = threading.Lock()
        self._revision = -1
        self._checked = 0.0
        self._validator = SignalValidator([], self.limits)

    def validator(self) -> SignalValidator:
        """The validator for the current contract (rebuilt when a version is registered)."""
        now = time.monotonic()
        if now - self._checked < self.refresh_s:
            return self._validator
        with self._lock:
            self._checked = now
            revision = self.registry.revision()
            if revision != self._revision:
                self._validator = SignalValidator(self.registry.current(), self.limits)
                self._revision = revision
        return self._validator

    def ingest(self, body: bytes, key: ProducerKey, *, ndjson: bool = False) -> IngestOutcome:
        """Validate, check scope, deduplicate and publish one batch."""
        received_at = datetime.now(UTC)
        validator = self.validator()
        if ndjson:
            result = validator.validate_ndjson(body, now=received_at)
        else:
            result = validator.validate_json(body, now=received_at)
        _check_scope(result, key)
        fresh, duplicate_index = self._deduplicate(result)
        if fresh:
            for event in fresh:
                event.producer = key.team
                event.received_at = received_at
                event.schema_version = type(event).schema_version_of_type
            self.bus.publish([Message(e.user_id, encode_signal(e)) for e in fresh])
            self.window.remember([(e.event_id, e.user_id) for e in fresh])
            if self.on_published is not None:
                self.on_published(fresh, received_at)
        return _outcome(result, duplicate_index, key.team, received_at)

    def _deduplicate(self, result: BatchResult) -> tuple[list[TypedSignal], set[int]]:
        accepted = result.accepted
        if not accepted:
            return [], set()
        already = self.window.seen([e.event_id for e in accepted])
        fresh: list[TypedSignal] = []
        duplicate_index: set[int] = set()
        in_batch: set[str] = set()
        for index, event in zip(result.accepted_indices, accepted, strict=True):
            if event.event_id in already or event.event_id in in_batch:
                duplicate_index.add(index)
            else:
                in_batch.add(event.event_id)
                fresh.append(event)
        return fresh, duplicate_index


def _type_name(event: TypedSignal) -> str:
    return str(type(event).__struct_config__.tag)


def _check_scope(result: BatchResult, key: ProducerKey) -> None:
    if "*" in key.event_types and "*" in key.surfaces:
        return
    refused: list[str] = []
    for index, event in zip(result.accepted_indices, result.accepted, strict=True):
        etype = _type_name(event)
        if not key.allows_type(etype):
            refused.append(f"#{index} ({event.event_id}): event_type {etype!r} not allowed")
        elif not key.allows_surface(str(event.surface)):  # type: ignore[attr-defined]
            refused.append(f"#{index} ({event.event_id}): surface "
                           f"{event.surface!r} not allowed")  # type: ignore[attr-defined]
    if refused:
        raise PermissionDeniedError(
            f"key {key.key_id} of team {key.team} may publish event types "
            f"{list(key.event_types)} on surfaces {list(key.surfaces)}; refused: "
            + "; ".join(refused[:20]) + (" ..." if len(refused) > 20 else ""))


def _outcome(result: BatchResult, duplicate_index: set[int], producer: str,
             received_at: datetime) -> IngestOutcome:
    results: list[EventResult] = []
    for index, item in result.outcomes():
        if isinstance(item, TypedSignal):
            status: Literal["accepted", "duplicate"] = (
                "duplicate" if index in duplicate_index else "accepted")
            results.append(EventResult(index=index, status=status, event_id=item.event_id))
        else:
            results.append(EventResult(
                index=index, status="rejected", event_id=item.event_id, field=item.field,
                rule=item.rule, message=item.message,
                violations=[{"field": v.field, "rule": v.rule, "message": v.message}
                            for v in item.violations]))
    return IngestOutcome(
        accepted=len(result.accepted) - len(duplicate_index), duplicates=len(duplicate_index),
        rejected=len(result.rejections), producer=producer, received_at=received_at,
        results=results)
