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

__all__ = [
    "PROBLEM_JSON",
    "FeatureBatch",
    "Problem",
    "ProblemItem",
    "UserFeatures",
    "new_event_id",
    "new_event_ids",
    "read_problem",
]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_id_lock = threading.Lock()
_last: list[int] = [0, 0]
#: Random bytes drawn from the OS a page at a time and spent 10 at a time: one system
#: call per 409 ids instead of one each (a call releases the GIL, and taking it back
#: can wait a whole switch interval behind another thread). Emptied in a forked
#: child, so a child never repeats its parent's bytes.
_RANDOM_PAGE = 4096
_random = bytearray()


def _empty_random() -> None:
    _random.clear()


os.register_at_fork(after_in_child=_empty_random)


def new_event_id(prefix: str = "") -> str:
    """A ULID: 48-bit milliseconds then 80 random bits, sortable by time, unique without
    coordination (monotonic within one process and millisecond)."""
    ms, rand = _take(1)
    return prefix + _ms_text(ms) + _random_text(rand)


def new_event_ids(count: int, prefix: str = "") -> list[str]:
    """``count`` ULIDs at once, in order: one clock reading for all of them, their random
    parts counted up from one draw, as the ids of one millisecond are. A batch's ids
    share all but their last few characters, so each costs about a sixth of one
    ``new_event_id``."""
    if count <= 0:
        return []
    ms, first = _take(count)
    return _id_texts(prefix, ms, first, count)


def _id_texts(prefix: str, ms: int, first: int, count: int) -> list[str]:
    """The texts of ``count`` ids of millisecond ``ms`` from random part ``first`` on."""
    head = prefix + _ms_text(ms)
    pairs = _PAIRS
    out: list[str] = []
    high = -1
    stem = ""
    for rand in range(first, first + count):
        if rand >> 10 != high:  # the first 24 characters change once in 1,024 ids
            high = rand >> 10
            stem = head + _random_text(rand)[:14]
        out.append(stem + pairs[rand & 1023])
    return out


def _take(count: int) -> tuple[int, int]:
    """The millisecond and the first of ``count`` random parts for new ids."""
    with _id_lock:
        ms = int(time.time() * 1000)
        # Within one millisecond, count up from the last value: ids stay ordered.
        if ms == _last[0]:
            rand = _last[1] + 1
        else:
            if len(_random) < 10:
                _random[:] = os.urandom(_RANDOM_PAGE)
            rand = int.from_bytes(_random[-10:], "big")
            del _random[-10:]
        _last[0], _last[1] = ms, rand + count - 1
    return ms, rand


#: The 1,024 pairs of Crockford characters, by the 10 bits they encode.
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
#: The last millisecond seen and its text (every id of that millisecond starts with it),
#: replaced as one tuple: a thread never reads one's time with another's text.
_ms_cache: list[tuple[int, str]] = [(-1, "")]


def _ms_text(ms: int) -> str:
    """The first 10 characters of a ULID: its 48-bit time (50 bits, the top 2 zero)."""
    cached_ms, text = _ms_cache[0]
    if ms != cached_ms:
        p = _PAIRS
        text = (
            p[ms >> 40 & 1023] + p[ms >> 30 & 1023] + p[ms >> 20 & 1023] + p[ms >> 10 & 1023]
        ) + p[ms & 1023]
        _ms_cache[0] = (ms, text)
    return text


def _random_text(rand: int) -> str:
    """The last 16 characters of a ULID: its 80 random bits (wrapped past 80 bits)."""
    p = _PAIRS
    return (
        p[rand >> 70 & 1023]
        + p[rand >> 60 & 1023]
        + p[rand >> 50 & 1023]
        + p[rand >> 40 & 1023]
        + p[rand >> 30 & 1023]
        + p[rand >> 20 & 1023]
        + p[rand >> 10 & 1023]
        + p[rand & 1023]
    )


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


class FeatureBatch(msgspec.Struct):
    """The answer of a batch read: each user's features, in the order asked."""

    users: list[UserFeatures]


#: The media type of every error answer (RFC 9457).
PROBLEM_JSON = "application/problem+json"


class ProblemItem(msgspec.Struct, omit_defaults=True):
    """One thing wrong with a request: the field and the rule it broke, in words; the
    event (batch index, ``event_id``, type) or the versions when there are some."""

    rule: str
    message: str
    field: str | None = None
    index: int | None = None
    event_id: str | None = None
    event_type: str | None = None
    from_version: int | None = None
    to_version: int | None = None


class Problem(msgspec.Struct, omit_defaults=True):
    """Every error answer of the API, RFC 9457 ``application/problem+json``.

    ``type`` is a stable URI per kind of error (``https://headwater.dev/problems/<kind>``,
    listed in docs/problems.md), ``title`` its summary, ``detail`` this occurrence in
    words, ``instance`` the path asked. ``errors`` names each field and rule broken (and
    the event, at publish); ``request_id`` is the id the gateway logged the request under.
    """

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str | None = None
    errors: list[ProblemItem] = []

    @property
    def kind(self) -> str:
        """The last segment of ``type`` (``rate-limited``), ``about:blank`` as is."""
        return self.type.rsplit("/", 1)[-1]


_problem = msgspec.json.Decoder(Problem)


def read_problem(status: int, body: bytes) -> Problem:
    """The error answer in ``body``; a body that is not a problem document (a proxy's
    page, or a gateway older than the problem documents, whose errors were
    ``{"error", "message"}``) is read as well as it can be, never raised on."""
    try:
        return _problem.decode(body)
    except msgspec.DecodeError:
        pass
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        kind = str(doc.get("error") or "about:blank")
        return Problem(type=kind, title=kind, status=status, detail=doc["message"])
    text = body[:500].decode(errors="replace")
    return Problem(type="about:blank", title=f"HTTP {status}", status=status, detail=text)
