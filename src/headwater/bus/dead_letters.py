"""The dead-letter store: records a consumer could not apply, with the error, for replay.

Entries live in the control-plane database (SQLite or PostgreSQL). They hold user
data, so they take part in erasure like any other store.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import msgspec

from headwater._idsearch import Needles
from headwater._time import now_text
from headwater.bus.base import Record
from headwater.control.base import ControlDatabase, Row

__all__ = ["DeadLetter", "DeadLetterStore"]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS hw_dead_letters (
        grp TEXT NOT NULL,
        partition INTEGER NOT NULL,
        record_offset BIGINT NOT NULL,
        record_key TEXT NOT NULL,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        published_ms BIGINT NOT NULL,
        error TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        failed_at TEXT NOT NULL,
        replayed_at TEXT,
        PRIMARY KEY (grp, partition, record_offset)
    )""",
    "CREATE INDEX IF NOT EXISTS hw_dead_letters_key ON hw_dead_letters (record_key)",
)


class DeadLetter(msgspec.Struct, frozen=True):
    """One record a consumer group gave up on."""

    group: str
    record: Record
    error: str
    attempts: int
    failed_at: str
    replayed_at: str | None

    @property
    def id(self) -> str:
        """``group:partition:offset``, the handle the CLI uses."""
        return f"{self.group}:{self.record.partition}:{self.record.offset}"


_COLUMNS = (
    "grp, partition, record_offset, record_key, kind, value, published_ms, error, "
    "attempts, failed_at, replayed_at"
)


def _row_to_letter(row: tuple[object, ...]) -> DeadLetter:
    grp, part, offset, key, kind, value, ts, error, attempts, failed_at, replayed = row
    record = Record(
        int(str(part)),
        int(str(offset)),
        str(key),
        str(kind),
        base64.b64decode(str(value)),
        int(str(ts)),
    )
    return DeadLetter(
        str(grp),
        record,
        str(error),
        int(str(attempts)),
        str(failed_at),
        None if replayed is None else str(replayed),
    )


#: Letter ids (``list`` is a method of the store, so the type is named here).
_LetterIds = list[str]


def _primary_key(letter_id: str) -> tuple[str, int, int]:
    """The row of a letter's ``id`` (partition and offset are integers, so the last two
    colons are theirs, whatever the group's name)."""
    group, partition, offset = letter_id.rsplit(":", 2)
    return group, int(partition), int(offset)


def _read(
    execute: Callable[[str, Sequence[Any]], list[Row]], chunk: int = 500
) -> Iterator[DeadLetter]:
    """Every dead letter in key order, ``chunk`` rows a query, through ``execute`` (the
    database's, or a transaction's)."""
    after: tuple[object, ...] = ("", -1, -1)
    while True:
        rows = execute(
            f"SELECT {_COLUMNS} FROM hw_dead_letters WHERE (grp > ?) OR (grp = ? AND "
            "(partition > ? OR (partition = ? AND record_offset > ?))) "
            "ORDER BY grp, partition, record_offset LIMIT ?",
            (after[0], after[0], after[1], after[1], after[2], chunk),
        )
        for row in rows:
            yield _row_to_letter(row)
        if len(rows) < chunk:
            return
        after = (rows[-1][0], rows[-1][1], rows[-1][2])


def _search(letters: Iterable[DeadLetter], needles: Needles) -> dict[str, dict[str, int]]:
    hits: dict[str, dict[str, int]] = {}
    for letter in letters:
        found: dict[str, int] = {}
        for part in (letter.record.key.encode(), letter.record.value):
            for value, n in needles.count(part).items():
                if n:
                    found[value] = found.get(value, 0) + n
        if found:
            hits[letter.id] = found
    return hits


def _named(users: Sequence[str], hits: dict[str, dict[str, int]]) -> dict[str, _LetterIds]:
    out: dict[str, _LetterIds] = {u: [] for u in users}
    for letter_id, found in hits.items():
        for user in found:
            out[user].append(letter_id)
    return out


class DeadLetterStore:
    """Dead letters of every consumer group."""

    def __init__(self, db: ControlDatabase) -> None:
        self._db = db
        db.ensure_schema(SCHEMA)

    def put(self, group: str, record: Record, error: str, attempts: int) -> None:
        """Keep a failed record (idempotent: the same record twice is stored once)."""
        self._db.execute(
            f"INSERT INTO hw_dead_letters ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL) "
            "ON CONFLICT (grp, partition, record_offset) DO UPDATE SET "
            "error = excluded.error, attempts = excluded.attempts, failed_at = excluded.failed_at, "
            "replayed_at = NULL",
            (
                group,
                record.partition,
                record.offset,
                record.key,
                record.kind,
                base64.b64encode(record.value).decode(),
                record.timestamp_ms,
                error[:4000],
                attempts,
                now_text(),
            ),
        )

    def list(
        self, group: str | None = None, *, include_replayed: bool = False, limit: int = 1000
    ) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        where, params = [], []
        if group is not None:
            where.append("grp = ?")
            params.append(group)
        if not include_replayed:
            where.append("replayed_at IS NULL")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM hw_dead_letters {clause} "
            "ORDER BY failed_at, grp, partition, record_offset LIMIT ?",
            (*params, limit),
        )
        return [_row_to_letter(r) for r in rows]

    def every(self, chunk: int = 500) -> Iterator[DeadLetter]:
        """Every dead letter, replayed or not, a chunk of rows at a time (for the
        erasure's verification, which searches them all)."""
        return _read(self._db.execute, chunk)

    def count(self, group: str | None = None) -> int:
        """Dead letters not yet replayed."""
        if group is None:
            rows = self._db.execute(
                "SELECT COUNT(*) FROM hw_dead_letters WHERE replayed_at IS NULL"
            )
        else:
            rows = self._db.execute(
                "SELECT COUNT(*) FROM hw_dead_letters WHERE replayed_at IS NULL AND grp = ?",
                (group,),
            )
        return int(rows[0][0])

    def mark_replayed(self, letter: DeadLetter) -> None:
        """Record that a dead letter was sent back to the bus."""
        self._db.execute(
            "UPDATE hw_dead_letters SET replayed_at = ? "
            "WHERE grp = ? AND partition = ? AND record_offset = ?",
            (
                now_text(),
                letter.group,
                letter.record.partition,
                letter.record.offset,
            ),
        )

    def search(self, needles: Needles) -> dict[str, dict[str, int]]:
        """Every dead letter read back, its key and decoded record searched for
        ``needles`` as whole tokens: letter id -> searched value -> occurrences, for the
        letters that hold one (replayed or not, under any key)."""
        return _search(self.every(), needles)

    def naming(self, users: Sequence[str]) -> dict[str, _LetterIds]:
        """The ids of each user's dead letters: those whose key or record names the user
        (see ``search``)."""
        return _named(users, self.search(Needles(users)))

    def erase_users(self, users: Sequence[str]) -> dict[str, int]:
        """Delete every dead letter that names each user (see ``naming``); the number
        deleted per user (a letter naming two users counts for both).

        The letters are read and those found deleted in one transaction that keeps other
        writers out of the table: once it commits, no stored letter names the users (a
        letter put after it is new, and the verification reads it back). The store is
        read whole once."""
        with self._db.transaction() as tx:
            tx.lock_table("hw_dead_letters")
            found = _named(users, _search(_read(tx.execute), Needles(users)))
            doomed = {_primary_key(x) for ids in found.values() for x in ids}
            for grp, partition, offset in sorted(doomed):
                tx.execute(
                    "DELETE FROM hw_dead_letters "
                    "WHERE grp = ? AND partition = ? AND record_offset = ?",
                    (grp, partition, offset),
                )
        return {user: len(ids) for user, ids in found.items()}

    def scrub(self, *, rewrite: bool = False) -> dict[str, object]:
        """After an erasure: the control plane's own copies of deleted dead letters
        (``rewrite``: the table's files rewritten too, when letters were deleted)."""
        return self._db.scrub(("hw_dead_letters",), rewrite=rewrite)
