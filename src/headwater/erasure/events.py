"""What travels for an erasure: the request event on the bus, and each store's confirmation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

__all__ = ["Confirmation", "ErasureEvent", "decode_erasure", "encode_erasure"]


class ErasureEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Erase ``user_id`` from every store: published on the bus keyed by the user id.

    ``requested_at`` orders it after the user's earlier signals: a signal whose
    timestamp is not after it, arriving late or replayed, is dropped.
    ``participants`` names who must confirm (empty: every participant); a retry to
    one overdue participant names only that one. ``rebuild`` is set on a retry after
    the independent verification found the user in that participant's store once it
    had confirmed: the store rebuilds its files (a SQLite ``VACUUM``) whatever its own
    search finds, since the verification also searches ids (the user's event ids) that
    the store no longer knows once it deleted their rows.
    """

    request_id: str
    user_id: str
    requested_at: datetime
    attempt: int = 1
    participants: tuple[str, ...] = ()
    rebuild: bool = False

    def addressed_to(self, participant: str) -> bool:
        """True when this event asks ``participant`` to act."""
        return not self.participants or participant in self.participants


class Confirmation(msgspec.Struct, frozen=True, kw_only=True):
    """A participant's proof that it erased a user from its store.

    ``rows_removed`` counts what the erasure deleted; ``rows_remaining`` is what the
    participant's own verification scan found afterwards (0 for a confirmation; None
    where the store cannot be scanned, e.g. a Kafka log that only ages out, whose
    evidence then says by when the data is gone). ``ok`` is False when the erasure or
    its verification failed; the orchestrator then retries.
    ``evidence`` carries store-specific facts (keys scanned, versions, vacuum times).
    """

    request_id: str
    participant: str
    store: str
    method: str
    rows_removed: int
    rows_remaining: int | None  # None: the store cannot be scanned (see evidence)
    verified_at: datetime
    evidence: dict[str, Any] = {}
    ok: bool = True
    error: str = ""
    #: The ids of the user's events the store held before this attempt erased them (the
    #: archive knows them all): the ledger keeps them sealed until completion, for the
    #: independent verification to search every store for; never part of the evidence.
    event_ids: tuple[str, ...] = ()


_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder(ErasureEvent)


def encode_erasure(event: ErasureEvent) -> bytes:
    """Bytes of an erasure event as the bus carries it."""
    return _ENC.encode(event)


def decode_erasure(data: bytes) -> ErasureEvent:
    """An erasure event from bus bytes."""
    return _DEC.decode(data)
