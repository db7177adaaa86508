"""What the server and the Python clients share: the id generator and the answer types.

The producer SDK (``headwater.client``) imports this module and nothing else of the
server, so an application that only publishes needs httpx and msgspec alone.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import msgspec

__all__ = ["UserFeatures", "new_event_id"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_id_lock = threading.Lock()
_last: list[int] = [0, 0]


def new_event_id(prefix: str = "") -> str:
    """A ULID: 48-bit milliseconds then 80 random bits, sortable by time, unique without
    coordination (monotonic within one process and millisecond)."""
    with _id_lock:
        ms = int(time.time() * 1000)
        # Within one millisecond, count up from the last value: ids stay ordered.
        rand = _last[1] + 1 if ms == _last[0] else int.from_bytes(os.urandom(10), "big")
        _last[0], _last[1] = ms, rand
    value = (ms << 80) | (rand & ((1 << 80) - 1))
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return prefix + "".join(reversed(chars))


class UserFeatures(msgspec.Struct):
    """One user's features with their freshness, as the API answers them (and as the
    read client decodes them)."""

    user_id: str
    features: dict[str, Any]
    as_of: str | None
    age_s: float | None
    stale: bool
    stale_features: list[str]
    budgets_s: dict[str, float] = {}
    found: bool = True
    #: The user's row of the last batch run: declared batch features (affinities) and
    #: the batch's aggregates, by name; empty when the user had none.
    batch: dict[str, Any] = {}
    #: The end of that run's window.
    batch_as_of: str | None = None
    #: Each feature's definition version (the version of the features file that last
    #: changed how it is computed).
    versions: dict[str, int] = {}
    #: Features being recomputed from the archive after a change: left out of
    #: ``features`` until their backfill is handed over, never answered empty.
    backfilling: list[str] = []
    #: The version of the feature definitions that answered.
    definitions_version: int = 1
