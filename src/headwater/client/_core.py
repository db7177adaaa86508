"""What the sync and asyncio clients share: the queue, what an answer means for its
batch, the pace of the background sender, callbacks and reports.

Only sending differs between them (a blocking or an awaited POST, a thread or a task,
a blocking or an awaited sleep); every decision lives here once.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from headwater.client._batching import (
    Delivered,
    Outcome,
    PublishReport,
    Refused,
    RejectedEvent,
    RetryPolicy,
    Split,
    Transient,
    batches,
    build_event,
    classify,
)
from headwater.client._queue import EventQueue
from headwater.client._spool import Spool
from headwater.errors import (
    PublishFailedError,
    PublishForbiddenError,
    PublishUnauthorizedError,
)
from headwater.wire import new_event_ids

__all__ = ["Answer", "ClientCore", "Pace"]

log = logging.getLogger("headwater.client")

#: One attempt's answer: status (None when the request failed in transit), body,
#: the Retry-After header, and the transport error.
Answer = tuple[int | None, bytes, str | None, str]

_T = TypeVar("_T")
_REFUSALS: dict[int, type[PublishFailedError]] = {
    401: PublishUnauthorizedError,
    403: PublishForbiddenError,
}


class Pace:
    """When the background sender sends: a full batch at once, a partial one when the
    flush interval is up, nothing while it backs off after a failure."""

    def __init__(self, batch_size: int, interval: float) -> None:
        self.batch_size = batch_size
        self.interval = interval
        self.due = time.monotonic() + interval
        self.retry_at = 0.0
        self.failures = 0

    def wait(self, queued: int, now: float) -> float:
        """Seconds to wait before the next send (0: send now)."""
        if now < self.retry_at:
            return self.retry_at - now
        if queued >= self.batch_size or (queued and now >= self.due):
            return 0.0
        if now >= self.due:
            self.due = now + self.interval
        return self.due - now


class ClientCore:
    """The queue, batch outcomes, retries, callbacks and reports of a producer client."""

    def __init__(
        self,
        *,
        batch_size: int,
        max_batch_bytes: int,
        retry: RetryPolicy | None,
        on_rejection: Callable[[RejectedEvent], None] | None,
        on_overflow: Callable[[list[dict[str, Any]]], None] | None,
        on_error: Callable[[PublishFailedError], None] | None,
        max_queue_events: int,
        flush_interval: float,
        close_timeout: float,
        spool: str | Path | None,
    ) -> None:
        if batch_size < 1 or flush_interval <= 0 or close_timeout < 0:
            raise ValueError("batch_size >= 1, flush_interval > 0 and close_timeout >= 0")
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.retry = retry or RetryPolicy()
        self.on_rejection = on_rejection
        self.on_overflow = on_overflow
        self.on_error = on_error
        self.flush_interval = flush_interval
        self.close_timeout = close_timeout
        self._queue = EventQueue(max_queue_events, Spool(spool) if spool is not None else None)
        #: Events a previous client left in the spool, queued again at start.
        self.restored = self._queue.restore()
        self._pace = Pace(batch_size, flush_interval)
        if self.restored:
            self._pace.due = time.monotonic()
        self._limit = batch_size
        self._closed = False
        #: Everything the gateway answered for, background sends included.
        self.totals = PublishReport()

    @property
    def queued(self) -> int:
        """Events not yet answered for by the gateway (queued or in flight)."""
        return len(self._queue)

    @property
    def overflowed(self) -> int:
        """Events refused because the queue was full (each was given to ``on_overflow``)."""
        return self._queue.overflowed

    def pending(self) -> list[dict[str, Any]]:
        """The events waiting to be sent, oldest first."""
        return self._queue.snapshot()

    # -- queueing ---------------------------------------------------------------------

    def _tracked(
        self,
        event_type: str,
        user_id: str,
        surface: str,
        *,
        item_id: str | None,
        payload: dict[str, Any] | None,
        fields: dict[str, Any],
    ) -> tuple[str, bool]:
        """Queue one new event; its id, and whether a full batch now waits."""
        event = build_event(
            event_type=event_type,
            user_id=user_id,
            surface=surface,
            item_id=item_id,
            payload=payload,
            **fields,
        )
        return str(event["event_id"]), self._enqueue([event])

    def _enqueue(self, events: Sequence[dict[str, Any]]) -> bool:
        """Queue events, reporting those that do not fit; whether a full batch waits."""
        if self._closed:
            raise RuntimeError("the client is closed")
        # An event given without an id gets one now, kept through every retry: the
        # gateway de-duplicates a re-send only by it.
        missing = sum("event_id" not in e for e in events)
        if missing == len(events):  # the usual call: none has one
            events = [
                {**e, "event_id": i} for e, i in zip(events, new_event_ids(missing), strict=True)
            ]
        elif missing:
            ids = iter(new_event_ids(missing))
            events = [e if "event_id" in e else {**e, "event_id": next(ids)} for e in events]
        over = self._queue.put(events)
        if over:
            log.warning(
                "producer queue full (%d events): %d events not queued, first %s",
                self._queue.max_events,
                len(over),
                over[0].get("event_id"),
            )
            self._call(self.on_overflow, over)
        return len(self._queue) >= self.batch_size

    def _next_batch(self) -> tuple[list[dict[str, Any]], bytes] | None:
        """The next batch from the head of the queue, now in flight, and its body."""
        taken = self._queue.take(self._limit)
        if not taken:
            return None
        encoded = self._queue.encoded(taken)
        batch, body = next(batches(taken, len(taken), self.max_batch_bytes, encoded))
        if len(batch) < len(taken):
            self._queue.requeue(taken[len(batch) :])  # past the byte limit: next time
        return batch, body

    # -- answers ----------------------------------------------------------------------

    def _settle(self, batch: list[dict[str, Any]], answer: Answer) -> Outcome:
        """What an answer means for a batch in flight. A delivered batch leaves the queue
        (and the spool); a split one goes back to it; a failed one stays in flight for
        the caller to retry or requeue."""
        status, content, retry_after, error = answer
        outcome = classify(status, content, retry_after, batch, error)
        if isinstance(outcome, Split):
            if len(batch) > 1:
                self._limit = max(1, len(batch) // 2)
                self._queue.requeue(batch)
                return outcome
            # Alone and still refused: this event is the reason, and it is final.
            event = batch[0]
            refusal = RejectedEvent(
                event_id=event.get("event_id"),
                field="",
                rule=f"http_{outcome.status}",
                message=f"{outcome.kind}: {outcome.message}" if outcome.kind else outcome.message,
                event=dict(event),
            )
            outcome = Delivered(PublishReport(rejected=[refusal], batches=1))
        if isinstance(outcome, Delivered):
            self._limit = self.batch_size
            self._queue.done(batch)
            self.totals.merge(outcome.report)
            for rejected in outcome.report.rejected:
                self._call(self.on_rejection, rejected)
        return outcome

    def _give_up(
        self, outcome: Transient | Refused, attempts: int, report: PublishReport
    ) -> PublishFailedError:
        """The error of a flush that stopped: every event still queued, carried."""
        events = self._queue.snapshot()
        where = "queued and in the spool" if self._queue.spool is not None else "queued"
        rest = f"{len(events)} events stay {where} and are resent in the background"
        if isinstance(outcome, Refused):
            cls = _REFUSALS.get(outcome.status, PublishFailedError)
            kind = f" {outcome.kind}" if outcome.kind else ""
            message = f"HTTP {outcome.status}{kind}: {outcome.message}; {rest}"
        else:
            cls = PublishFailedError
            message = f"gave up after {attempts} attempts ({outcome.what}); {rest}"
        return cls(
            message,
            events=events,
            rejected=report.rejected,
            accepted=report.accepted,
            duplicates=report.duplicates,
        )

    def _delay(self, outcome: Transient | Refused, attempt: int) -> float:
        if isinstance(outcome, Refused):
            return self.retry.cap_s  # a key or a grant is fixed by people: no hurry
        return self.retry.delay(attempt, outcome.retry_after)

    def _stops(self, outcome: Outcome, attempt: int, deadline: float | None) -> float | None:
        """For a flush: the pause before the next attempt, or None to give up now."""
        if not isinstance(outcome, Transient) or attempt > self.retry.max_retries:
            return None
        delay = self._delay(outcome, attempt)
        if deadline is not None and time.monotonic() + delay > deadline:
            return None
        return delay

    def _paced(self, outcome: Outcome, batch: list[dict[str, Any]]) -> None:
        """After a background send: requeue a failed batch and back off, or carry on."""
        pace = self._pace
        now = time.monotonic()
        if isinstance(outcome, Delivered):
            pace.failures = 0
            if len(self._queue) < self.batch_size:
                pace.due = now + pace.interval
        elif isinstance(outcome, Transient | Refused):
            self._queue.requeue(batch)
            pace.failures += 1
            pace.retry_at = now + self._delay(outcome, pace.failures)
            # Told once per run of failures: when a flush would have given up.
            first = 1 if isinstance(outcome, Refused) else self.retry.max_retries + 1
            if pace.failures == first:
                self._call(self.on_error, self._give_up(outcome, pace.failures, PublishReport()))

    def _drain(self, post: Callable[[bytes], Answer], deadline: float | None) -> PublishReport:
        """Send what is queued now, blocking; raise PublishFailedError when a batch cannot
        be delivered within the retries (or by ``deadline``): its events stay queued."""
        report = PublishReport()
        target = len(self._queue)
        while target > 0 and (taken := self._next_batch()) is not None:
            batch, body = taken
            for attempt in itertools.count(1):
                try:
                    outcome = self._settle(batch, post(body))
                except BaseException:
                    self._queue.requeue(batch)
                    raise
                if not isinstance(outcome, Transient | Refused):
                    break
                pause = self._stops(outcome, attempt, deadline)
                if pause is None:
                    self._queue.requeue(batch)
                    raise self._give_up(outcome, attempt, report)
                time.sleep(pause)
            if isinstance(outcome, Delivered):
                target -= len(batch)
                self._count(report, outcome.report, attempt - 1)
        return report

    def _count(self, report: PublishReport, delivered: PublishReport, retries: int) -> None:
        report.merge(delivered)
        report.retries += retries
        self.totals.retries += retries

    def _left_over(self, error: PublishFailedError) -> None:
        """At exit nobody can catch an error: log what was not delivered."""
        kept = "they stay in the spool" if self._queue.spool is not None else "they are lost"
        log.error(
            "producer client exiting with %d events undelivered (%s): %s",
            len(error.events),
            kept,
            error,
        )

    def exit_flush(self) -> None:
        """At interpreter exit, for a client not closed: send what is queued within the
        close timeout, and log what could not be sent; never raise."""

    def _close_spool(self) -> None:
        if self._queue.spool is not None:
            self._queue.spool.close()

    @staticmethod
    def _call(callback: Callable[[_T], None] | None, arg: _T) -> None:
        if callback is None:
            return
        try:
            callback(arg)
        except Exception:  # a user's callback must not stop the sender
            log.exception("producer client callback %r failed", callback)


_open_clients: weakref.WeakSet[ClientCore] = weakref.WeakSet()
_registry_lock = threading.Lock()


def register_exit(client: ClientCore) -> None:
    """Flush ``client`` at exit unless it is closed before."""
    with _registry_lock:
        _open_clients.add(client)


def unregister_exit(client: ClientCore) -> None:
    """``client`` was closed: nothing to do at exit."""
    with _registry_lock:
        _open_clients.discard(client)


@atexit.register
def _flush_open_clients() -> None:
    with _registry_lock:
        clients = list(_open_clients)
    for client in clients:
        try:
            client.exit_flush()
        except Exception:  # exiting: log, and let the other clients flush
            log.exception("producer client failed to flush at exit")
