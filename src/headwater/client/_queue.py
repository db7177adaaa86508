"""The bounded queue of events waiting to be sent, with the spool behind it.

Every event is counted from the moment it is queued until the gateway answered for it
(accepted, duplicate, or refused for good): those in flight count against the bound
too, so a batch that failed always finds its place back at the head of the queue.

Each event is encoded once, when it is queued (an event that cannot be sent is refused
then), and its JSON is kept until the gateway answered for it: every attempt sends what
was queued, and the body is not encoded again.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from itertools import repeat
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
        #: Each event queued or in flight and its JSON, by the identity of its dict (held
        #: here too, so the identity is not reused while the entry is here).
        self._encoded: dict[int, tuple[dict[str, Any], bytes]] = {}
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
        encode = msgspec.json.encode
        encoded = [encode(event) for event in events]  # one that cannot be sent: refused now
        with self._lock:
            room = max(0, self.max_events - len(self._queued) - self._in_flight)
            kept, over = list(events[:room]), list(events[room:])
            if self.spool is not None and kept:
                self.spool.add(kept)  # under the lock: the spool keeps the queue's order
            self._queued.extend(kept)
            # Pairs made by zip and map, not a generator: no Python frame per event.
            self._encoded.update(zip(map(id, kept), zip(kept, encoded, strict=False), strict=True))
            self.overflowed += len(over)
        return over

    def encoded(self, batch: Sequence[dict[str, Any]]) -> list[bytes]:
        """The JSON of each event of a batch taken from the queue, as it was queued."""
        with self._lock:
            found = list(map(self._encoded.get, map(id, batch)))
        # Encoded now: an event restored from the spool, or the same dict queued twice and
        # answered for once.
        return [
            entry[1] if entry is not None and entry[0] is e else msgspec.json.encode(e)
            for entry, e in zip(found, batch, strict=True)
        ]

    def take(self, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` events from the head, now in flight."""
        with self._lock:
            n = min(limit, len(self._queued))
            popleft = self._queued.popleft
            batch = [popleft() for _ in range(n)]
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
            # Each pop made by map and run by an empty deque: no Python loop per event.
            deque(map(self._encoded.pop, map(id, batch), repeat(None)), maxlen=0)

    def snapshot(self) -> list[dict[str, Any]]:
        """The events queued now (not those in flight), oldest first."""
        with self._lock:
            return list(self._queued)
