"""The embedded idempotency window: a SQLite file with an expiry sweep.

``hw_dedupe`` holds each id with its user, when it was claimed and the token of the
send that claimed it; ``hw_dedupe_tokens`` the tokens confirmed (one row a batch, not
one an id). An id is accepted when its token is confirmed (or NULL: rows written
before claims existed).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from itertools import chain

from headwater._sqlite import connect, scrub_for_erasure
from headwater._url import sqlite_path
from headwater.dedupe.base import Claim, Pending
from headwater.errors import BackendError

__all__ = ["SqliteIdempotencyWindow"]

#: How often a claim sweeps: ten times a second, so each sweep's stretch is a tenth of a
#: second's claims and the claim that runs it waits about 2 ms at 75,000 events/s (a
#: sweep a second took 17-23 ms there, and every claim queued behind it waited too).
_SWEEP_S = 0.1
#: Keys a sweep looks at, at least (about 0.2 ms on this machine's SQLite).
_SWEEP_ROWS = 2_000
#: The tables swept: (table, its key, its time in ms).
_SWEPT = (("hw_dedupe", "event_id", "accepted_ms"), ("hw_dedupe_tokens", "token", "done_ms"))
_CHUNK = 500  # users per statement, below SQLite's bound on parameters
#: Entries per claim statement: 2 parameters each, and 3 for all; fewer where the SQLite
#: build binds fewer than 1,803 parameters (999 before 3.32).
_CLAIM_CHUNK = 900


@lru_cache(maxsize=64)
def _claim_sql(entries: int) -> str:
    """The claim of ``entries`` ids: ``(now, token, cutoff, id, user, id, user, ...)``."""
    values = ",".join(f"(?{4 + 2 * i}, ?{5 + 2 * i}, ?1, ?2)" for i in range(entries))
    return (
        f"INSERT INTO hw_dedupe (event_id, user_id, accepted_ms, token) VALUES {values} "
        "ON CONFLICT (event_id) DO UPDATE SET user_id = excluded.user_id, "
        "accepted_ms = excluded.accepted_ms, token = excluded.token "
        "WHERE hw_dedupe.accepted_ms < ?3"
    )


class SqliteIdempotencyWindow:
    """Accepted event ids in SQLite (``sqlite:///path/dedupe.db``)."""

    def __init__(self, url: str, *, window_s: float) -> None:
        self.url = url
        self.window_s = window_s
        self._lock = threading.Lock()
        #: Event ids erased since the last scrub.
        self._erased: set[str] = set()
        self._last_sweep = 0.0
        #: Entries claimed since the last sweep, and where each table's sweep goes on.
        self._claimed = 0
        self._cursors: dict[str, str] = {}
        try:
            # NORMAL is enough: a window lost in a power cut only lets a retry through, and
            # every consumer is idempotent by event id anyway.
            self._conn = connect(sqlite_path(url), synchronous="NORMAL", busy_ms=30_000)
        except sqlite3.Error as exc:
            raise BackendError(f"idempotency window {url}: {exc}") from exc
        # One write transaction: processes that open the file together (a gateway and
        # the stack's consumers) would otherwise both see `token` missing and both add it.
        with self._transaction():
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS hw_dedupe (event_id TEXT PRIMARY KEY, "
                "user_id TEXT NOT NULL, accepted_ms INTEGER NOT NULL, token TEXT) WITHOUT ROWID"
            )
            columns = {r[1] for r in self._conn.execute("PRAGMA table_info(hw_dedupe)")}
            if "token" not in columns:  # a window written before claims existed
                self._conn.execute("ALTER TABLE hw_dedupe ADD COLUMN token TEXT")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS hw_dedupe_tokens (token TEXT PRIMARY KEY, "
                "done_ms INTEGER NOT NULL) WITHOUT ROWID"
            )
            # No index on user_id: it would double the cost of every insert, and only an
            # erasure (rare, minutes of budget) needs to find a user's entries.

    def _run(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        try:
            return self._conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise BackendError(f"idempotency window: {exc}") from exc

    def seen(self, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        cutoff = int((time.time() - self.window_s) * 1000)
        found: set[str] = set()
        with self._lock:
            for start in range(0, len(event_ids), 900):
                chunk = event_ids[start : start + 900]
                marks = ",".join("?" * len(chunk))
                found.update(
                    str(r[0])
                    for r in self._run(
                        f"SELECT d.event_id FROM hw_dedupe d LEFT JOIN hw_dedupe_tokens t "
                        f"ON t.token = d.token WHERE d.event_id IN ({marks}) "
                        "AND d.accepted_ms >= ? AND (d.token IS NULL OR t.token IS NOT NULL)",
                        (*chunk, cutoff),
                    )
                )
        return found

    def claim(self, entries: Sequence[tuple[str, str]], token: str) -> Claim:
        return self.claim_many([(entries, token)])[0]

    def claim_many(self, sends: Sequence[tuple[Sequence[tuple[str, str]], str]]) -> list[Claim]:
        # One transaction for every send: a gateway's concurrent requests pay one
        # BEGIN and one COMMIT (its write-ahead log append) between them.
        if not any(entries for entries, _ in sends):
            return [Claim() for _ in sends]
        now = int(time.time() * 1000)
        cutoff = now - int(self.window_s * 1000)
        with self._lock, self._transaction():
            claims = [self._claim(entries, token, now, cutoff) for entries, token in sends]
        self._maybe_sweep(now, sum(len(entries) for entries, _ in sends))
        return claims

    def _claim(
        self, entries: Sequence[tuple[str, str]], token: str, now: int, cutoff: int
    ) -> Claim:
        out = Claim()
        most = min(
            _CLAIM_CHUNK, (self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - 3) // 2
        )
        for start in range(0, len(entries), most):
            chunk = entries[start : start + most]
            # Inserted, or an entry past the window taken again: both are ours. When
            # every row changed (the usual send of new ids), the whole chunk is ours
            # and nothing needs reading back. The claim's time, token and cutoff are
            # bound once (?1, ?2, ?3), each entry's id and user after them.
            before = self._conn.total_changes
            self._conn.execute(
                _claim_sql(len(chunk)), (now, token, cutoff, *chain.from_iterable(chunk))
            )
            if self._conn.total_changes - before == len(chunk):
                out.mine.update(event_id for event_id, _ in chunk)
                continue
            marks = ",".join("?" * len(chunk))
            for event_id, held_by, claimed_ms, confirmed in self._conn.execute(
                f"SELECT d.event_id, d.token, d.accepted_ms, "
                f"d.token IS NULL OR t.token IS NOT NULL FROM hw_dedupe d "
                f"LEFT JOIN hw_dedupe_tokens t ON t.token = d.token "
                f"WHERE d.event_id IN ({marks})",
                [event_id for event_id, _ in chunk],
            ):
                if confirmed:
                    out.done.add(str(event_id))
                elif held_by == token:
                    out.mine.add(str(event_id))  # claimed now (or twice in one batch)
                else:
                    out.pending[str(event_id)] = Pending(str(held_by), int(claimed_ms))
        return out

    def confirm(self, token: str) -> None:
        self.confirm_many([token])

    def confirm_many(self, tokens: Sequence[str]) -> None:
        if not tokens:
            return
        done_ms = int(time.time() * 1000)
        with self._lock, self._transaction():
            self._conn.executemany(
                "INSERT INTO hw_dedupe_tokens VALUES (?, ?) ON CONFLICT (token) DO NOTHING",
                [(token, done_ms) for token in tokens],
            )

    def release(self, token: str, event_ids: Sequence[str]) -> None:
        with self._lock:
            for start in range(0, len(event_ids), 900):
                chunk = event_ids[start : start + 900]
                marks = ",".join("?" * len(chunk))
                self._run(
                    f"DELETE FROM hw_dedupe WHERE token = ? AND event_id IN ({marks})",
                    (token, *chunk),
                )

    def take_over(self, claims: Mapping[str, Sequence[str]], token: str) -> set[str]:
        now = int(time.time() * 1000)
        moved: set[str] = set()
        with self._lock, self._transaction():
            for old, event_ids in claims.items():
                for start in range(0, len(event_ids), 900):
                    chunk = event_ids[start : start + 900]
                    marks = ",".join("?" * len(chunk))
                    # Only where the old token still holds the id and never confirmed.
                    moved.update(
                        str(r[0])
                        for r in self._conn.execute(
                            f"UPDATE hw_dedupe SET token = ?, accepted_ms = ? WHERE token = ? "
                            f"AND event_id IN ({marks}) AND NOT EXISTS (SELECT 1 FROM "
                            "hw_dedupe_tokens t WHERE t.token = ?) RETURNING event_id",
                            (token, now, old, *chunk, old),
                        )
                    )
        return moved

    def remember(self, entries: Sequence[tuple[str, str]]) -> None:
        token = f"r{time.time_ns()}-{id(entries)}"
        self.claim(entries, token)
        self.confirm(token)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            yield
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise BackendError(f"idempotency window: {exc}") from exc
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def _maybe_sweep(self, now: int, claimed: int) -> None:
        """Delete expired entries and tokens, one stretch of each table per sweep.

        A sweep of the whole table held the window (and so every claim behind it) for
        about 25 ms per million entries, growing with the window. A stretch is the
        next ``rows`` keys after where the last sweep stopped, wrapping at the end:
        each sweep is bounded, and each looks at twice the entries claimed since the
        last (at least ``_SWEEP_ROWS``), so the sweeps pass over the table faster than
        it grows. An expired entry not yet swept is already ignored (``seen``) and
        taken again (``claim``): the sweep only gives its space back.
        """
        self._claimed += claimed
        if time.monotonic() - self._last_sweep <= _SWEEP_S:
            return
        self._last_sweep = time.monotonic()
        rows = max(_SWEEP_ROWS, 2 * self._claimed)
        self._claimed = 0
        cutoff = now - int(self.window_s * 1000)
        with self._lock, self._transaction():
            for table, key, stamp in _SWEPT:
                self._cursors[table] = self._sweep(table, key, stamp, rows, cutoff)

    def _sweep(self, table: str, key: str, stamp: str, rows: int, cutoff: int) -> str:
        """Delete the expired rows among the ``rows`` keys after this table's cursor; the
        cursor for the next sweep ("" after the last key: start again)."""
        start = self._cursors.get(table, "")
        found = self._conn.execute(
            f"SELECT {key} FROM {table} WHERE {key} > ? ORDER BY {key} LIMIT 1 OFFSET ?",
            (start, rows - 1),
        ).fetchone()
        end = "" if found is None else str(found[0])
        self._conn.execute(
            f"DELETE FROM {table} WHERE {key} > ? "
            + (f"AND {key} <= ? " if end else "")
            + f"AND {stamp} < ?",
            (start, end, cutoff) if end else (start, cutoff),
        )
        return end

    def erase_user(self, user_id: str) -> int:
        return self.erase_users([user_id])[user_id]

    def count_user(self, user_id: str) -> int:
        return self.count_users([user_id])[user_id]

    def erase_users(self, user_ids: Sequence[str]) -> dict[str, int]:
        # The users' entries are found by a scan without the write lock (a reader does
        # not hold up the gateways' claims for the whole table), then deleted by key in
        # one short write transaction. An entry claimed in between is left, and the
        # count that follows an erasure reports it: the erasure is not confirmed.
        unique = list(dict.fromkeys(user_ids))
        found: list[tuple[str, str]] = []
        with self._lock:
            for first in range(0, len(unique), _CHUNK):
                chunk = unique[first : first + _CHUNK]
                rows = self._run(
                    "SELECT event_id, user_id FROM hw_dedupe "
                    f"WHERE user_id IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                found += [(str(event_id), str(user)) for event_id, user in rows]
        removed = dict.fromkeys(user_ids, 0)
        deleted: list[str] = []
        with self._lock, self._transaction():
            for event_id, user in found:
                gone = self._conn.execute(
                    "DELETE FROM hw_dedupe WHERE event_id = ? AND user_id = ?", (event_id, user)
                ).rowcount
                if gone:
                    removed[user] += 1
                    deleted.append(event_id)
        # What the next scrub, if asked to search, makes sure the file no longer holds.
        self._erased.update(deleted)
        return removed

    def count_users(self, user_ids: Sequence[str]) -> dict[str, int]:
        """Entries per user, one scan of the table (user_id is not indexed, see above) per
        chunk of users."""
        found = dict.fromkeys(user_ids, 0)
        unique = list(found)
        with self._lock:
            for first in range(0, len(unique), _CHUNK):
                chunk = unique[first : first + _CHUNK]
                for user, n in self._run(
                    "SELECT user_id, COUNT(*) FROM hw_dedupe "
                    f"WHERE user_id IN ({','.join('?' * len(chunk))}) GROUP BY user_id",
                    chunk,
                ):
                    found[str(user)] += int(str(n))
        return found

    def scrub(self, erased: Collection[str] = (), *, rebuild: bool = False) -> dict[str, object]:
        # The event ids erase_users removed are searched with the users' ids.
        removed, self._erased = self._erased, set()
        return scrub_for_erasure(
            self._conn,
            self._lock,
            BackendError,
            "idempotency window",
            erased={*erased, *removed} if erased else (),
            rebuild=rebuild,
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()
