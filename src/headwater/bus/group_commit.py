"""Group commit: concurrent publishes share one durable write.

Every gateway request must wait until its batch is durable, and on the embedded bus
durability is an fsync. A writer thread takes every batch waiting in the queue,
publishes them in one call (one transaction, one fsync), and wakes each caller. A
failure fails every caller of that group; on the SQLite bus nothing of the group was
written, so each can retry.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future

from headwater.bus.base import Bus, Message

__all__ = ["GroupCommitPublisher"]


class GroupCommitPublisher:
    """Publishes through one writer thread that merges concurrent batches."""

    def __init__(self, bus: Bus, *, max_messages: int = 20_000) -> None:
        self.bus = bus
        self.max_messages = max_messages
        self._queue: queue.SimpleQueue[tuple[Sequence[Message], Future[None]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(
            target=self._run, name="headwater-group-commit", daemon=True
        )
        self._closed = False
        self._thread.start()

    def publish(self, messages: Sequence[Message]) -> None:
        """Append messages; returns once they are durable (raises what the bus raised)."""
        if messages:
            self.submit(messages).result()

    def submit(self, messages: Sequence[Message]) -> Future[None]:
        """Queue messages; the future completes once they are durable (asyncio callers
        await it with ``asyncio.wrap_future`` instead of blocking a thread)."""
        if self._closed:
            raise RuntimeError("publisher is closed")
        done: Future[None] = Future()
        self._queue.put((messages, done))
        return done

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            group = [item]
            size = len(item[0])
            # Take whatever else is already waiting, up to the size limit.
            while size < self.max_messages:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                group.append(nxt)
                size += len(nxt[0])
            merged = [m for messages, _ in group for m in messages]
            try:
                self.bus.publish(merged)
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
                for _, done in group:
                    done.set_exception(exc)
            else:
                for _, done in group:
                    done.set_result(None)

    def close(self) -> None:
        """Finish queued publishes and stop the writer thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()
