"""The bounded queue of events waiting to be sent, with the spool behind it.

Every event is counted from the moment it is queued until the gateway answered for it
(accepted, duplicate, or refused for good): those in flight count against the bound
too, so a batch that failed always finds its place back at the head of the queue.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

import msgspec

from headwater.client._spool import Spool

__all__ = ["EventQueue"]


class EventQueue:
    """Events in the order they were tracked; thread-safe."""

    def __init__(self, max_events: int, spool: Spool | None) -> None:
        if max_events < 1:
            raise ValueError("max_queue_events must be at least 1")
        self.max_events = max_events
        self.spool = spool
        self._lock = threading.Lock()
        self._queued: deque[dict[str, Any]] = deque()
        self._in_flight = 0
        #: Events refused because the queue was full, since the client started.
        self.overflowed = 0

    def __len__(self) -> int:
        """Events queued or in flight."""
        with self._lock:
            return len(self._queued) + self._in_flight

    def restore(self) -> int:
        """Queue what the spool holds (a previous client's events), past the bound if
        need be: they were accepted once and are never dropped."""
        if self.spool is None:
            return 0
        events = self.spool.load()
        with self._lock:
            self._queued.extend(events)
        return len(events)

    def put(self, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Queue events (spooled first); the ones that did not fit, not queued."""
        for event in events:
            msgspec.json.encode(event)  # an event that cannot be sent is refused now
        with self._lock:
            room = max(0, self.max_events - len(self._queued) - self._in_flight)
            kept, over = list(events[:room]), list(events[room:])
            if self.spool is not None and kept:
                self.spool.add(kept)  # under the lock: the spool keeps the queue's order
            self._queued.extend(kept)
            self.overflowed += len(over)
        return over

    def take(self, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` events from the head, now in flight."""
        with self._lock:
            n = min(limit, len(self._queued))
            batch = [self._queued.popleft() for _ in range(n)]
            self._in_flight += n
        return batch

    def requeue(self, batch: Sequence[dict[str, Any]]) -> None:
        """A batch that was not delivered goes back to the head, in its order."""
        with self._lock:
            self._in_flight -= len(batch)
            self._queued.extendleft(reversed(batch))

    def done(self, batch: Sequence[dict[str, Any]]) -> None:
        """The gateway answered for every event of a batch: forget them."""
        if self.spool is not None:
            self.spool.remove(str(e["event_id"]) for e in batch)
        with self._lock:
            self._in_flight -= len(batch)

    def snapshot(self) -> list[dict[str, Any]]:
        """The events queued now (not those in flight), oldest first."""
        with self._lock:
            return list(self._queued)
