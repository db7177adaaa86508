"""The consumer runtime: the one place that moves a consumer's position on the bus.

One unit of progress: poll a batch, hand it to the handler, wait until the handler's
store write is durable, then commit the position. A crash anywhere before the commit
replays the batch, and handlers are idempotent by event id, so nothing is lost and
nothing counts twice.

A record whose handler fails ``max_attempts`` times goes to the dead-letter store and
the consumer moves on. A backend that is unavailable is not the record's fault: the
runtime backs off and retries without dead-lettering and without committing.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TypeVar

import msgspec

from headwater.bus.base import (
    KIND_ERASURE,
    Bus,
    BusConsumer,
    KindConsumer,
    Record,
    committed_positions,
    in_partitions,
)
from headwater.bus.dead_letters import DeadLetterStore
from headwater.erasure.events import Confirmation
from headwater.erasure.ledger import ErasureLedger
from headwater.erasure.tombstones import TombstoneFilter
from headwater.errors import (
    BackendUnavailableError,
    FencedError,
    MissingDeletionHandlerError,
    WaitingForError,
)
from headwater.metrics import FENCED_BATCHES, RESURRECTIONS_BLOCKED
from headwater.runtime.consumer import Consumer
from headwater.runtime.erasure_runs import ErasureRuns, StoppingError, poll_phases
from headwater.runtime.membership import Membership
from headwater.runtime.presence import ConsumerPresence

__all__ = ["ERASURE_LINGER_S", "ConsumerRuntime", "RuntimeStats"]

log = logging.getLogger("headwater.runtime")

#: How often a consumer asks again while it waits for another component (``WaitingForError``);
#: an ask is cheap (the archive ledger reads only the files committed since the last one).
WAITING_POLL_S = 0.2
_T = TypeVar("_T")


class RuntimeStats(msgspec.Struct):
    """Counters a runtime keeps for the API and metrics."""

    records: int = 0
    batches: int = 0
    erased_user_events_dropped: int = 0
    dead_lettered: int = 0
    erasures: int = 0
    retries: int = 0
    unavailable_waits: int = 0
    fenced_batches: int = 0
    last_commit_at: float = 0.0


#: How often, at most, an erasure participant that skips every signal polls (seconds).
ERASURE_LINGER_S = 0.25


class ConsumerRuntime:
    """Runs one handler as a member of a consumer group."""

    def __init__(
        self,
        bus: Bus,
        group: str,
        handler: Consumer,
        *,
        dead_letters: DeadLetterStore | None = None,
        max_attempts: int = 3,
        batch_size: int = 500,
        poll_timeout: float = 0.5,
        linger_s: float = 0.0,
        member: str | None = None,
        backoff: tuple[float, float] = (0.05, 5.0),
        on_confirmation: Callable[[Confirmation], None] | None = None,
        closers: Sequence[Callable[[], None]] = (),
        ledger: ErasureLedger | None = None,
        tombstones: TombstoneFilter | None = None,
        presence: ConsumerPresence | None = None,
    ) -> None:
        if not isinstance(handler, Consumer):
            raise MissingDeletionHandlerError(
                f"consumer {handler!r} is not a headwater Consumer: every consumer stores "
                "user data and must take part in erasure (implement Consumer.erase)"
            )
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.bus = bus
        self.group = group
        self.handler = handler
        self.dead_letters = dead_letters
        self.max_attempts = max_attempts
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        # After a batch smaller than batch_size, ``run`` polls again only once linger_s
        # has passed since the last poll began: a consumer off the freshness path (an
        # erasure participant) reads fewer, larger batches and leaves the core to others.
        self.linger_s = linger_s
        self.backoff = backoff
        self.on_confirmation = on_confirmation
        self.stats = RuntimeStats()
        self._closers = list(closers)
        self.tombstones = tombstones
        self.participants = handler.participants()
        if ledger is not None:
            # Registering is what makes every new erasure request wait for this store.
            for participant in self.participants:
                ledger.register_participant(participant)
            if on_confirmation is None:
                self.on_confirmation = lambda c: self._record(ledger, c)
        # The settings (max_attempts, backoff, on_confirmation) are read from the runtime
        # at each use: its user may set them after construction.
        self._erasure_runs = ErasureRuns(
            handler,
            self.participants,
            stats=self.stats,
            tombstones=tombstones,
            settings=self,
            call=self._call,
            dead_letter=self._dead_letter,
        )
        self.stop_event = threading.Event()
        self.presence = presence
        self.member = member or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.membership = Membership(group, self.member, handler)
        self._joins = 0
        # The member of a handler that acts on some kinds of records only: it says how
        # far each poll read past the others.
        self._kind_member: KindConsumer | None = None
        self._consumer: BusConsumer = self._join()

    def _join(self) -> BusConsumer:
        # A member that rejoins takes a new name: no backend mistakes it for the old one.
        self._joins += 1
        name = self.member if self._joins == 1 else f"{self.member}-{self._joins}"
        kinds = self.handler.kinds
        if kinds is None:
            return self.bus.consumer(self.group, member=name)
        self._kind_member = self.bus.kind_consumer(self.group, kinds, member=name)
        return self._kind_member

    def step(self) -> int:
        """One unit of progress; the number of records it covered (0 when idle)."""
        records = self._consumer.poll(self.batch_size, self.poll_timeout)
        assigned = self._consumer.assignment()
        # Records of a partition the bus moved away while they were read are left to its
        # new owner, which reads them from the committed position.
        records = in_partitions(records, assigned)
        if self._kind_member is None:
            positions = committed_positions(records)
        else:
            # Past the records of other kinds too (none of them is the handler's).
            covered = self._kind_member.covered().items()
            positions = {part: offset for part, offset in covered if part in assigned}
        try:
            self._call(lambda: self.membership.sync(assigned))
            self._beat()
            if not positions:
                # Caught up: let the handler record that its partitions are current.
                self._call(lambda: self.handler.on_idle(assigned))
                return 0
            if records:
                self._process(records)
        except FencedError as exc:
            self._fenced(exc, len(records))
            return 0
        # Only now, with every record applied or dead-lettered durably, does the position move.
        self._consumer.commit(positions)
        self.stats.records += len(records)
        self.stats.batches += 1
        self.stats.last_commit_at = time.time()
        return len(records)

    def run(self, *, install_signal_handlers: bool = True, idle_exit: bool = False) -> None:
        """Process until stopped (SIGTERM/SIGINT or ``stop()``): the batch in hand finishes
        and commits first. ``idle_exit`` returns once a poll finds nothing (for batch jobs)."""
        previous = self._install_signals() if install_signal_handlers else {}
        log.info(
            "consumer started",
            extra={"consumer": self.handler.name, "group": self.group, "member": self.member},
        )
        try:
            while not self.stop_event.is_set():
                began = time.monotonic()
                try:
                    n = self.step()
                except StoppingError:
                    break
                # Idle means caught up, not merely an empty poll: a new member of a
                # Kafka group reads nothing until the group has assigned it partitions.
                if n == 0 and idle_exit and self._caught_up():
                    break
                if self.linger_s and n < self.batch_size:
                    self.stop_event.wait(self.linger_s - (time.monotonic() - began))
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.close()

    def _beat(self, *, force: bool = False) -> None:
        presence = self.presence
        if presence is not None:
            self._call(
                lambda: presence.beat(
                    member=self.member,
                    group=self.group,
                    consumer=self.handler.name,
                    partitions=self.membership.held,
                    records=self.stats.records,
                    fenced_batches=self.stats.fenced_batches,
                    last_commit=self.stats.last_commit_at,
                    force=force,
                )
            )

    def _fenced(self, exc: FencedError, records: int) -> None:
        """Another member claimed partitions of this batch: drop it (nothing of it was
        written), let go of every partition and rejoin the group, so that reading starts
        again from the committed positions of whatever the bus assigns now."""
        self.stats.fenced_batches += 1
        FENCED_BATCHES.labels(self.group).inc()
        log.warning(
            "fenced",
            extra={
                "consumer": self.handler.name,
                "group": self.group,
                "member": self.member,
                "partitions": list(exc.partitions),
                "records_dropped": records,
                "reason": str(exc),
            },
        )
        self.membership.revoke(set(self.membership.held))
        self._consumer.close()
        self._consumer = self._join()

    def _record(self, ledger: ErasureLedger, confirmation: Confirmation) -> None:
        self._call(lambda: ledger.confirm(confirmation))

    def _caught_up(self) -> bool:
        return sum(p.lag_events for p in self.bus.lag(self.group)) == 0

    def stop(self) -> None:
        """Ask ``run`` to finish its batch, commit and return."""
        self.stop_event.set()

    def close(self) -> None:
        """Leave the consumer group and release what the runtime was given to close."""
        if self.membership.held:
            self.membership.revoke(set(self.membership.held))
        self._consumer.close()
        if self.presence is not None:
            try:
                self.presence.leave(self.member)
            except Exception:  # noqa: BLE001 - its row expires anyway; stopping goes on
                log.warning("could not remove %s from the consumer list", self.member)
        log.info(
            "consumer stopped",
            extra={
                "consumer": self.handler.name,
                "group": self.group,
                "member": self.member,
                "records": self.stats.records,
                "fenced_batches": self.stats.fenced_batches,
            },
        )
        while self._closers:
            self._closers.pop()()

    def assignment(self) -> set[int]:
        """The partitions this member reads now."""
        return self._consumer.assignment()

    def _install_signals(self) -> dict[int, signal.Handlers | Callable[..., object] | int | None]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, signal.Handlers | Callable[..., object] | int | None] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, lambda *_: self.stop_event.set())
        return previous

    # -- processing ------------------------------------------------------------

    def _process(self, records: Sequence[Record]) -> None:
        tombstones = self.tombstones
        if tombstones is not None:
            tombstones.refresh()
        dropped: list[Record] = []
        for phase in poll_phases(records):
            if phase is records:  # the common poll: no erasure among the records
                segment, erasures = phase, []
            else:
                segment = [r for r in phase if r.kind != KIND_ERASURE]
                erasures = [r for r in phase if r.kind == KIND_ERASURE]
            if tombstones is not None and segment:
                # An erased user's events from before the erasure, late or replayed:
                # never let them bring the data back.
                segment, gone = tombstones.split(segment)
                if gone:
                    self.stats.erased_user_events_dropped += len(gone)
                    RESURRECTIONS_BLOCKED.labels(self.handler.name).inc(len(gone))
                    dropped += gone
            if segment:
                self._apply(segment)
            if erasures:
                self._erasure_runs.apply(erasures)
        if dropped:
            # The store that holds the records themselves (the bus log) removes them too.
            self._call(lambda: self.handler.purge_dropped(dropped))

    def _apply(self, segment: Sequence[Record]) -> None:
        try:
            self._call(lambda: self.handler.handle(segment))
        except (StoppingError, FencedError):
            raise
        except Exception:  # noqa: BLE001 - any handler error: find the record that causes it
            for record in segment:
                self._apply_one(record)

    def _apply_one(self, record: Record) -> None:
        error = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                self._call(lambda: self.handler.handle([record]))
            except (StoppingError, FencedError):
                raise
            except Exception as exc:  # noqa: BLE001 - the record goes to the dead letters
                error = f"{type(exc).__name__}: {exc}"
                self.stats.retries += 1
                if attempt < self.max_attempts:
                    time.sleep(min(self.backoff[1], self.backoff[0] * 2 ** (attempt - 1)))
                continue
            return
        self._dead_letter(record, error)

    def _call(self, fn: Callable[[], _T]) -> _T:
        delay = self.backoff[0]
        while True:
            try:
                return fn()
            except WaitingForError as exc:
                # A normal wait for another component: poll it often, without alarm.
                self.stats.unavailable_waits += 1
                log.debug("%s: waiting: %s", self.handler.name, exc)
                if self.stop_event.wait(min(delay, WAITING_POLL_S)):
                    raise StoppingError from exc
                delay = min(self.backoff[1], delay * 2)
            except BackendUnavailableError as exc:
                # The store is down, not the record bad: wait, never dead-letter, never commit.
                self.stats.unavailable_waits += 1
                log.warning(
                    "%s: backend unavailable, retrying in %.2fs: %s", self.handler.name, delay, exc
                )
                if self.stop_event.wait(delay):
                    raise StoppingError from exc
                delay = min(self.backoff[1], delay * 2)

    def _dead_letter(self, record: Record, error: str) -> None:
        self.stats.dead_lettered += 1
        log.error(
            "%s: record %s:%s dead-lettered after %d attempts: %s",
            self.group,
            record.partition,
            record.offset,
            self.max_attempts,
            error,
        )
        if self.dead_letters is not None:
            self._call(
                lambda: self.dead_letters.put(  # type: ignore[union-attr]
                    self.group, record, error, self.max_attempts
                )
            )
