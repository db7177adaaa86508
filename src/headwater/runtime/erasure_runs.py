"""The erasure events of a poll: in which order they are applied, and how.

A poll's signals are applied first and every erasure event among them after, as one
run (``poll_phases``); a signal of a user erased earlier in the poll waits for the
erasure. Every erasure event a consumer reads becomes a tombstone, so that a late or
replayed event of the erased user never brings the data back. The events addressed to
the consumer's own stores go to its handler together: one ``erase_many`` for the
requests that can be erased now, then for the rest, and one ``erase`` per request when
that fails, to find the one at fault. A request whose erasure fails ``max_attempts``
times is confirmed as failed, with its cause, and goes to the dead letters; the
orchestrator sends it again. The runtime (``headwater.runtime.loop``) owns one
``ErasureRuns`` and hands it the erasure events of each phase.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Protocol, TypeVar

import msgspec

from headwater.bus.base import KIND_ERASURE, Record, kinds_of
from headwater.erasure.events import Confirmation, ErasureEvent, decode_erasure
from headwater.erasure.ledger import Participant
from headwater.erasure.tombstones import TombstoneFilter
from headwater.errors import WaitingForError
from headwater.runtime.consumer import Consumer

if TYPE_CHECKING:
    from headwater.runtime.loop import RuntimeStats

__all__ = ["ErasureRuns", "RuntimeSettings", "StoppingError", "WaitingCall", "poll_phases"]

log = logging.getLogger("headwater.runtime")

_T = TypeVar("_T")


class StoppingError(Exception):
    """Stop was requested while waiting for a backend; leave without committing."""


class RuntimeSettings(Protocol):
    """The runtime's settings, read at each use: its user may change them while it runs
    (a job collects the confirmations, a test shortens the backoff)."""

    max_attempts: int
    backoff: tuple[float, float]
    on_confirmation: Callable[[Confirmation], None] | None


class WaitingCall(Protocol):
    """The runtime's call that waits out an unavailable backend or another component,
    and raises ``StoppingError`` when a stop is asked meanwhile."""

    def __call__(self, fn: Callable[[], _T], /) -> _T: ...


def poll_phases(records: Sequence[Record]) -> Iterator[Sequence[Record]]:
    """A poll's records in the order they are applied: signals, then the erasures among them.

    Every erasure of a poll goes into one run (one ``erase_many``: one Delta DELETE, one
    recompute) instead of one per stretch of signals between them, which is what a
    consumer catching up under load would otherwise do. Order within a key holds: a
    signal of a user erased earlier in the same partition, and everything after it in
    that partition, waits for the next phase, after the erasure. Records of other users
    do not depend on the erasure (it removes only its user's data), so applying them
    first changes no result. Bus positions are committed after the last phase.

    A poll without an erasure is one phase: ``records`` itself (the caller may test
    ``phase is records`` to know there is no erasure in it).
    """
    if KIND_ERASURE not in kinds_of(records):
        yield records  # the common poll: signals only, applied as they came
        return
    rest: Sequence[Record] = records
    while rest:
        erased: set[tuple[int, str]] = set()
        blocked: set[int] = set()
        phase: list[Record] = []
        later: list[Record] = []
        for record in rest:
            partition = record.partition
            if partition in blocked:
                later.append(record)
            elif record.kind == KIND_ERASURE:
                erased.add((partition, record.key))
                phase.append(record)
            elif erased and (partition, record.key) in erased:
                blocked.add(partition)
                later.append(record)
            else:
                phase.append(record)
        yield phase
        rest = later


class ErasureRuns:
    """Applies the erasure events of a poll for one handler and its participants."""

    def __init__(
        self,
        handler: Consumer,
        participants: list[Participant],
        *,
        stats: RuntimeStats,
        tombstones: TombstoneFilter | None,
        settings: RuntimeSettings,
        call: WaitingCall,
        dead_letter: Callable[[Record, str], None],
    ) -> None:
        self.handler = handler
        self.participants = participants
        self._names = {p.name for p in participants}
        self.stats = stats
        self.tombstones = tombstones
        self.settings = settings
        self._call = call
        self._dead_letter = dead_letter

    def apply(self, records: list[Record]) -> None:
        """Erasure events in a row: tombstones first, then one ``erase_many`` call for the
        run (one ``erase`` per event if the run fails, to find the one at fault)."""
        run: list[tuple[Record, ErasureEvent]] = []
        for record in records:
            try:
                event = decode_erasure(record.value)
            except msgspec.DecodeError as exc:
                self._dead_letter(record, f"undecodable erasure event: {exc}")
                continue
            if self.tombstones is not None:
                self.tombstones.add(event.user_id, int(event.requested_at.timestamp() * 1000))
            if any(event.addressed_to(name) for name in self._names):
                run.append((record, event))
        while len(run) > 1:
            # The requests that can be erased now go first (a follower's requests do not
            # wait for another one's leader, whichever came first in the poll), then the
            # rest. A user's later request waits behind an earlier one of that user.
            ready = self._call(partial(self._ready, [event for _, event in run]))
            part: list[tuple[Record, ErasureEvent]] = []
            rest: list[tuple[Record, ErasureEvent]] = []
            waiting: set[str] = set()
            for i, (record, event) in enumerate(run):
                if i in ready and event.user_id not in waiting:
                    part.append((record, event))
                else:
                    waiting.add(event.user_id)
                    rest.append((record, event))
            self._erase_part(part)
            run = rest
        for record, event in run:
            self._erase(record, event)

    def _ready(self, events: list[ErasureEvent]) -> set[int]:
        ready = {i for i in self.handler.ready(events) if 0 <= i < len(events)}
        if not ready:
            raise WaitingForError(
                f"{self.handler.name} cannot erase {events[0].request_id} yet: it follows "
                "another store's erasure"
            )
        return ready

    def _erase_part(self, part: list[tuple[Record, ErasureEvent]]) -> None:
        if len(part) > 1:
            events = [event for _, event in part]
            try:
                result = self._call(lambda: self.handler.erase_many(events))
            except StoppingError:
                raise
            except Exception as exc:  # noqa: BLE001 - each event on its own finds the bad one
                log.warning(
                    "%s: erasing %d users together failed (%s), one by one",
                    self.handler.name,
                    len(part),
                    exc,
                )
            else:
                self._confirmed(len(part), result)
                return
        for record, event in part:
            self._erase(record, event)

    def _confirmed(self, erased: int, confirmations: list[Confirmation]) -> None:
        """Count ``erased`` requests done and hand their confirmations on."""
        self.stats.erasures += erased
        on_confirmation = self.settings.on_confirmation
        if on_confirmation is not None:
            for confirmation in confirmations:
                on_confirmation(confirmation)

    def _erase(self, record: Record, event: ErasureEvent) -> None:
        settings = self.settings
        error = ""
        for attempt in range(1, settings.max_attempts + 1):
            try:
                result = self._call(lambda: self.handler.erase(event))
            except StoppingError:
                raise
            except Exception as exc:  # noqa: BLE001 - reported, dead-lettered, retried by the orchestrator
                error = f"{type(exc).__name__}: {exc}"
                self.stats.retries += 1
                if attempt < settings.max_attempts:
                    time.sleep(min(settings.backoff[1], settings.backoff[0] * 2 ** (attempt - 1)))
                continue
            self._confirmed(1, result)
            return
        log.error("erasure %s failed in %s: %s", event.request_id, self.handler.name, error)
        if settings.on_confirmation is not None:
            # The ledger shows the failure and its cause; the orchestrator sends it again.
            now = datetime.now(UTC)
            for p in self.participants:
                if event.addressed_to(p.name):
                    settings.on_confirmation(
                        Confirmation(
                            request_id=event.request_id,
                            participant=p.name,
                            store=p.store,
                            method="failed",
                            rows_removed=0,
                            rows_remaining=None,
                            verified_at=now,
                            ok=False,
                            error=error[:2000],
                        )
                    )
        self._dead_letter(record, error)
