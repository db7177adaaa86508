"""One writer for every group of concurrent sends: claim, publish durably, confirm.

Every gateway request must claim its events' ids in the idempotency window, publish the
ones it won durably, and confirm its token; on the embedded stack the claim and the
confirmation are SQLite transactions and the publish is an fsync. One writer thread
takes every send waiting in its queue and does each step once for all of them:

1. one claim of every send's ids (``IdempotencyWindow.claim_many``: one transaction on
   SQLite), each send under its own token;
2. one bus write of the events each send won (one transaction and one fsync on the
   embedded bus);
3. one confirmation of every send's token (``confirm_many``).

Each send then learns its own claim: which ids it published, which were accepted
before (duplicates), which another send holds (the caller waits for those off the
event loop, ``claims.settle``, and sends what it takes over as an already claimed send).

A failure fails every send of the group. A failed claim leaves no claim behind (every
send's ids are released under its token); a failed publish releases the ids each send
won, so a retry claims them at once; on the SQLite bus nothing of the group was written.
A failed confirmation leaves the events on the bus under unconfirmed claims: a retry
finds them held, and once the lease is over asks the bus, as after a gateway crash.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future

from headwater.bus.base import Bus, Message
from headwater.dedupe.base import Claim, IdempotencyWindow

__all__ = ["IngestWriter", "Send"]

log = logging.getLogger("headwater.ingest")


class Send:
    """One request's part of a group: its encoded events and their ``(event id, user
    id)``, in the same order, under one claim token."""

    __slots__ = ("claimed", "done", "entries", "messages", "token")

    def __init__(
        self,
        messages: Sequence[Message],
        entries: Sequence[tuple[str, str]],
        token: str,
        *,
        claimed: bool = False,
    ) -> None:
        if len(messages) != len(entries):
            raise ValueError(f"{len(messages)} messages for {len(entries)} entries")
        self.messages = messages
        self.entries = entries
        self.token = token
        #: True when the ids are already claimed under ``token`` (taken over while
        #: settling): they are published and confirmed without a claim.
        self.claimed = claimed
        #: Completes once the send's events are durable and its token confirmed, with
        #: the claim (every id ``mine`` for a send already claimed).
        self.done: Future[Claim] = Future()


class IngestWriter:
    """The writer thread behind every publish of one ingestor."""

    def __init__(self, bus: Bus, window: IdempotencyWindow, *, max_messages: int = 20_000) -> None:
        self.bus = bus
        self.window = window
        self.max_messages = max_messages
        self._queue: queue.SimpleQueue[Send | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="headwater-ingest", daemon=True)
        self._thread.start()

    def submit(self, send: Send) -> Future[Claim]:
        """Queue a send; the future completes once its events are durable and confirmed
        (asyncio callers await it with ``asyncio.wrap_future``, holding no thread)."""
        if self._closed:
            raise RuntimeError("ingest writer is closed")
        self._queue.put(send)
        return send.done

    def write(self, send: Send) -> Claim:
        """``submit`` and wait (raises what the window or the bus raised)."""
        return self.submit(send).result()

    def _run(self) -> None:
        while True:
            send = self._queue.get()
            if send is None:
                return
            group = [send]
            size = len(send.messages)
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
                size += len(nxt.messages)
            self._write(group)

    def _write(self, group: list[Send]) -> None:
        try:
            claims = self._claim(group)
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
            self._release([(s, [e for e, _ in s.entries]) for s in group])
            self._fail(group, exc)
            return
        won = [_won(s, claim) for s, claim in zip(group, claims, strict=True)]
        merged: list[Message] = []
        for s, mine in zip(group, won, strict=True):
            merged.extend(
                s.messages if len(mine) == len(s.messages) else [s.messages[i] for i in mine]
            )
        try:
            if merged:
                self.bus.publish(merged)
        except BaseException as exc:  # noqa: BLE001
            self._release(
                [(s, [s.entries[i][0] for i in mine]) for s, mine in zip(group, won, strict=True)]
            )
            self._fail(group, exc)
            return
        try:
            self.window.confirm_many([s.token for s in group if s.entries])
        except BaseException as exc:  # noqa: BLE001
            self._fail(group, exc)
            return
        for s, claim in zip(group, claims, strict=True):
            s.done.set_result(claim)

    def _claim(self, group: list[Send]) -> list[Claim]:
        to_claim = [(s.entries, s.token) for s in group if not s.claimed]
        found = iter(self.window.claim_many(to_claim) if to_claim else [])
        return [
            next(found) if not s.claimed else Claim(mine={e for e, _ in s.entries}) for s in group
        ]

    def _release(self, held: list[tuple[Send, list[str]]]) -> None:
        """Let a retry claim at once the ids these sends held (each only while the send's
        token still holds it: an id another send holds is left alone)."""
        for s, event_ids in held:
            if not event_ids:
                continue
            try:
                self.window.release(s.token, event_ids)
            except Exception:
                # The claim then waits out its lease, and the next send asks the bus.
                log.exception("cannot release claims after a failed write")

    @staticmethod
    def _fail(group: list[Send], exc: BaseException) -> None:
        for s in group:
            s.done.set_exception(exc)

    def close(self) -> None:
        """Finish queued sends and stop the writer thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()


def _won(send: Send, claim: Claim) -> Sequence[int]:
    """The indices of the send's entries the claim made its own. The usual send claims
    every one: its ids are distinct (``Ingestor.prepare`` drops a repeat) and ``mine``
    holds only ids of the send, so as many ids as entries are all of them."""
    if len(claim.mine) == len(send.entries):
        return range(len(send.entries))
    return [i for i, (event_id, _) in enumerate(send.entries) if event_id in claim.mine]
