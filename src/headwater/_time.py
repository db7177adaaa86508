"""The one way headwater prints a moment: RFC 3339, UTC, milliseconds, ``Z``.

Every time in an answer, an audit, a log line or a stored record has the same width
(``2026-12-02T04:38:09.157Z``, 24 characters), so times sort as strings and a reader
never has to guess whether a fraction is there. Years outside 0001..9999 cannot be
printed this way and raise ``ValueError``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["format_ms", "format_time", "now_ms", "now_text", "parse_time"]

_MINUTE_MS = 60_000
_MINUTE_HEADS: dict[int, str] = {}  # minute since the epoch -> "YYYY-MM-DDTHH:MM:"
_SECONDS = [f"{s:02d}" for s in range(60)]
_MILLIS = [f".{m:03d}Z" for m in range(1000)]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def _head(minute: int) -> str:
    head = _MINUTE_HEADS.get(minute)
    if head is None:
        try:
            moment = datetime.fromtimestamp(minute * 60, UTC)
        except (OverflowError, OSError) as exc:
            raise ValueError(f"{minute * _MINUTE_MS} ms is outside the printable years") from exc
        # isoformat, not strftime: glibc's %Y does not pad years before 1000.
        head = moment.isoformat()[:17]
        if len(_MINUTE_HEADS) >= 100_000:
            _MINUTE_HEADS.clear()
        _MINUTE_HEADS[minute] = head
    return head


def format_ms(ms: int) -> str:
    """Epoch milliseconds as fixed-width RFC 3339 UTC text."""
    # Reads print dozens of these per user: the part up to the minute comes from a
    # small cache, seconds and milliseconds from tables.
    minute, rest = divmod(ms, _MINUTE_MS)
    second, milli = divmod(rest, 1000)
    return _head(minute) + _SECONDS[second] + _MILLIS[milli]


def format_time(moment: datetime) -> str:
    """A timezone-aware datetime as fixed-width RFC 3339 UTC text (truncated to the ms)."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no defined moment; give it a timezone")
    utc = moment.astimezone(UTC)
    return f"{utc.isoformat(timespec='milliseconds')[:23]}Z"


def now_text() -> str:
    """The current moment, printed as ``format_time`` prints it."""
    return format_time(datetime.now(UTC))


def now_ms() -> int:
    """The current moment in epoch milliseconds."""
    return (datetime.now(UTC) - _EPOCH) // _ONE_MS


def parse_time(text: str) -> datetime:
    """RFC 3339 text (any width, ``Z`` or an offset) as an aware UTC datetime."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no offset")
    return moment.astimezone(UTC)
