"""The embedded bus and idempotency window checkpoint their write-ahead logs every
``WAL_CHECKPOINT_PAGES`` pages: the gateway's writer runs the checkpoint, and the
publishes queued behind it wait for it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from headwater._sqlite import WAL_CHECKPOINT_PAGES
from headwater.bus import Message
from headwater.bus.sqlite import SqliteBus
from headwater.dedupe.sqlite import SqliteIdempotencyWindow


def _autocheckpoint(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


def test_the_bus_and_the_window_checkpoint_every_250_pages(tmp_path: Path) -> None:
    assert WAL_CHECKPOINT_PAGES == 250
    bus = SqliteBus(f"sqlite:///{tmp_path}/bus.db", partitions=2)
    consumer = bus.consumer("g")
    window = SqliteIdempotencyWindow(f"sqlite:///{tmp_path}/dedupe.db", window_s=60)
    try:
        assert _autocheckpoint(bus._db.conn) == 250
        assert _autocheckpoint(consumer._db.conn) == 250
        assert _autocheckpoint(window._conn) == 250
        # 400 pages of records: the log is checkpointed on the way, so it is written back
        # from its start again and never holds them all.
        value = b"x" * 4000
        for n in range(40):
            bus.publish([Message(f"u{n}-{i}", value) for i in range(10)])
        wal = tmp_path / "bus.db-wal"
        assert wal.stat().st_size < 300 * 4096
    finally:
        consumer.close()
        bus.close()
        window.close()
