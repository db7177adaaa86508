"""The control-plane rate limiter: one row per key in an UNLOGGED PostgreSQL table."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from headwater._url import redacted
from headwater.errors import BackendError, BackendUnavailableError, MissingDependencyError
from headwater.ratelimit.base import capacity, refused, wait_for

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresRateLimiter"]

_T = TypeVar("_T")

# Advisory lock id that serialises the table's creation across gateways starting at once.
_SCHEMA_LOCK = 0x68777274

# UNLOGGED: no WAL, so a spend costs no disk flush; a server crash empties the table and
# every bucket starts full again, which a rate limiter can afford.
_SCHEMA = (
    "CREATE UNLOGGED TABLE IF NOT EXISTS hw_rate_buckets (key_id TEXT PRIMARY KEY, "
    "rate DOUBLE PRECISION NOT NULL, burst DOUBLE PRECISION NOT NULL, "
    "tokens DOUBLE PRECISION NOT NULL, stamp DOUBLE PRECISION NOT NULL, "
    "spent BOOLEAN NOT NULL)"
)

# One statement per take. A new key inserts a full bucket less the events (a full bucket
# always admits). An existing one is locked by ON CONFLICT, so concurrent takes of a key
# queue on the row and each sees the one before it; the refill is computed then, from
# clock_timestamp() read under the lock (the statement's start, now(), could be older
# than the stamp the previous take left). ``spent`` tells RETURNING which branch ran.
_TAKE = """
INSERT INTO hw_rate_buckets AS b (key_id, rate, burst, tokens, stamp, spent)
VALUES (%(key)s, %(rate)s, %(burst)s, %(cap)s - %(events)s,
        extract(epoch FROM clock_timestamp()), true)
ON CONFLICT (key_id) DO UPDATE SET (rate, burst, tokens, stamp, spent) = (
    SELECT excluded.rate, excluded.burst,
           CASE WHEN r.tokens >= %(need)s THEN r.tokens - %(events)s ELSE r.tokens END,
           r.now, r.tokens >= %(need)s
    FROM (
        SELECT CASE WHEN b.rate = excluded.rate AND b.burst = excluded.burst
                    THEN LEAST(%(cap)s, b.tokens + GREATEST(0, c.now - b.stamp) * b.rate)
                    ELSE %(cap)s END AS tokens,
               c.now
        FROM (SELECT extract(epoch FROM clock_timestamp())::float8 AS now) AS c
    ) AS r
)
RETURNING spent, tokens
"""


class PostgresRateLimiter:
    """Buckets in ``hw_rate_buckets`` of a ``postgresql://`` database (the control plane's
    or any other), shared by every gateway that uses it."""

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise MissingDependencyError("postgresql", "psycopg", "postgres") from None
        self.url = url
        self._psycopg = psycopg
        self._lock = threading.Lock()
        self._conn = self._connect()
        try:
            with self._lock:
                self._execute(self._create)
        except BackendError:
            self._conn.close()
            raise

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return self._psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except self._psycopg.OperationalError as exc:
            raise BackendUnavailableError(
                f"cannot reach PostgreSQL at {redacted(self.url)}: {exc}"
            ) from exc

    def _create(self) -> None:
        with self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            self._conn.execute(_SCHEMA)

    def _execute(self, fn: Callable[[], _T]) -> _T:
        if self._conn.closed:
            # A connection lost earlier: reconnect rather than fail every later take.
            self._conn = self._connect()
        try:
            return fn()
        except self._psycopg.OperationalError as exc:
            raise BackendUnavailableError(f"PostgreSQL at {redacted(self.url)}: {exc}") from exc
        except self._psycopg.Error as exc:
            raise BackendError(f"rate limiter (postgresql): {exc}") from exc

    def take(self, key_id: str, events: int, rate: float, burst: float) -> None:
        cap = capacity(burst)
        need = min(float(events), cap)
        params = {
            "key": key_id,
            "rate": float(rate),
            "burst": float(burst),
            "cap": cap,
            "events": float(events),
            "need": need,
        }
        with self._lock:
            row = self._execute(lambda: self._conn.execute(_TAKE, params, prepare=True).fetchone())
        assert row is not None  # RETURNING of an upsert always gives its row
        spent, tokens = row
        if not spent:
            raise refused(rate, burst, wait_for(need - float(tokens), rate))

    def close(self) -> None:
        with self._lock:
            self._conn.close()
