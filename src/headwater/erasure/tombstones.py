"""Tombstones: erased users, so late or replayed events from before an erasure are dropped.

Every consumer runtime holds one filter. It learns of an erasure from the erasure
event in its own stream (a user's later records come after it, in the same partition)
and from the ledger, which it reads at start (after a restart, or for records replayed
from the dead-letter store) and then every ``refresh_s`` for the tombstones added since
(``tombstone_log``: a read that finds none costs one index lookup, however many there are).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from headwater.bus.base import Record, keys_of
from headwater.contract.signal import decode_signal
from headwater.erasure.ledger import ErasureLedger
from headwater.erasure.subject import SubjectHasher

__all__ = ["TombstoneFilter"]


class TombstoneFilter:
    """Decides whether a signal record belongs to an erased user and predates the erasure."""

    def __init__(
        self, ledger: ErasureLedger | None, hasher: SubjectHasher, *, refresh_s: float = 2.0
    ) -> None:
        self.ledger = ledger
        self.hasher = hasher
        self.refresh_s = refresh_s
        self._erased: dict[str, int] = {}
        self._loaded_at = 0.0
        #: The highest tombstone number read from the ledger (None before the first read).
        self._read_up_to: int | None = None
        self.dropped = 0
        self.refresh()

    def refresh(self, *, force: bool = False) -> None:
        """Read the tombstones added to the ledger since the last read (at most every
        ``refresh_s`` unless forced); the first read takes them all."""
        now = time.monotonic()
        if self.ledger is None or (not force and now - self._loaded_at < self.refresh_s):
            return
        self._loaded_at = now
        found, self._read_up_to = self.ledger.tombstones(self._read_up_to)
        erased = self._erased
        for subject, at in found.items():
            if at > erased.get(subject, 0):  # an erasure time only moves later
                erased[subject] = at

    @property
    def erased_at(self) -> dict[str, int]:
        """subject hash -> erasure time (ms) of the erased users known so far."""
        return self._erased

    def add(self, user_id: str, erased_at_ms: int) -> None:
        """Record an erasure seen in the stream."""
        subject = self.hasher(user_id)
        self._erased[subject] = max(erased_at_ms, self._erased.get(subject, 0))

    def drops(self, record: Record) -> bool:
        """True for a signal of an erased user timestamped at or before its erasure."""
        if not self._erased:
            return False  # the common case costs one truth test
        erased_at = self._erased.get(self.hasher(record.key))
        return erased_at is not None and self._before(record, erased_at)

    def erased_among(self, users: Iterable[str]) -> dict[str, int]:
        """The erasure time (ms) of each of ``users`` (distinct user ids) that is erased;
        each is hashed and looked up once."""
        erased = self._erased
        hasher = self.hasher
        hits: dict[str, int] = {}
        for user in users:
            at = erased.get(hasher(user))
            if at is not None:
                hits[user] = at
        return hits

    def split(self, records: Sequence[Record]) -> tuple[Sequence[Record], list[Record]]:
        """``records`` (signals) as those to apply and those :meth:`drops` would drop, in
        order. Each user of the batch is hashed and looked up once, however many of its
        records there are; a batch of which none is dropped is handed back as it is."""
        if not self._erased:
            return records, []
        hits = self.erased_among(keys_of(records))
        if not hits:
            return records, []
        kept: list[Record] = []
        dropped: list[Record] = []
        for record in records:
            at = hits.get(record.key)
            (dropped if at is not None and self._before(record, at) else kept).append(record)
        return (kept, dropped) if dropped else (records, [])

    def _before(self, record: Record, erased_at: int) -> bool:
        """True (and counted) when the signal is timestamped at or before ``erased_at``."""
        ts = int(decode_signal(record.value).timestamp.timestamp() * 1000)
        if ts <= erased_at:
            self.dropped += 1
            return True
        return False
