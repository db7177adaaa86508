"""A small idempotent consumer used by the runtime and crash tests.

It counts records per key in a SQLite file. The event id (the record value) is
recorded in the same transaction as the count, so a replayed record is not counted
twice: exactly the discipline real consumers follow.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

from headwater.bus import Record
from headwater.erasure.events import Confirmation, ErasureEvent
from headwater.erasure.ledger import Participant
from headwater.runtime import Consumer


class CountingHandler(Consumer):
    name = "counting"

    def participants(self) -> list[Participant]:
        return [Participant(self.name, "sqlite-counts", 300.0)]

    def __init__(self, path: str, *, poison: bytes | None = None) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS seen (event_id TEXT PRIMARY KEY)")
        self.conn.execute("CREATE TABLE IF NOT EXISTS counts (key TEXT PRIMARY KEY, n INTEGER)")
        self.poison = poison
        self.calls: list[tuple[str, list[bytes]]] = []

    def handle(self, records: Sequence[Record]) -> None:
        self.calls.append(("handle", [r.value for r in records]))
        if self.poison is not None and any(r.value == self.poison for r in records):
            raise ValueError(f"cannot apply {self.poison!r}")
        self.conn.execute("BEGIN IMMEDIATE")
        for r in records:
            cur = self.conn.execute("INSERT OR IGNORE INTO seen VALUES (?)", (r.value.decode(),))
            if cur.rowcount:
                self.conn.execute(
                    "INSERT INTO counts VALUES (?, 1) ON CONFLICT (key) DO UPDATE SET n = n + 1",
                    (r.key,),
                )
        self.conn.execute("COMMIT")

    def erase(self, event: ErasureEvent) -> list[Confirmation]:
        self.calls.append(("erase", [event.user_id.encode()]))
        cur = self.conn.execute("DELETE FROM counts WHERE key = ?", (event.user_id,))
        confirmation = Confirmation(
            request_id=event.request_id,
            participant=self.name,
            store="sqlite-counts",
            method="delete",
            rows_removed=cur.rowcount,
            rows_remaining=0,
            verified_at=datetime.now(UTC),
        )
        return [confirmation]

    def counts(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT key, n FROM counts").fetchall())

    def seen(self) -> set[str]:
        return {e for (e,) in self.conn.execute("SELECT event_id FROM seen")}

    def close(self) -> None:
        self.conn.close()
