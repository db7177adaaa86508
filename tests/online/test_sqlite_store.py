"""The SQLite online store's durability (row writes do not wait for an fsync, deletions
do) and its pages (16 KiB in a new file; a file made with other pages keeps them)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from headwater._sqlite import connect
from headwater.online.sqlite import PAGE_SIZE, WAL_CHECKPOINT_BYTES, SqliteOnlineStore

NORMAL, FULL = 1, 2


def _synchronous(store: SqliteOnlineStore) -> int:
    return int(store._conn.execute("PRAGMA synchronous").fetchone()[0])


def test_row_writes_do_not_wait_for_fsync_but_deletions_do(tmp_path: Path) -> None:
    store = SqliteOnlineStore(f"sqlite:///{tmp_path}/o.db")
    seen: list[int] = []
    real_delete = store._deleting

    def spy(statements: list[tuple[str, list[object]]]) -> int:
        seen.append(_synchronous(store))
        return real_delete(statements)

    store._deleting = spy  # type: ignore[method-assign]
    store.put("user", {"u1": b"a", "u2": b"b"})
    assert _synchronous(store) == NORMAL
    assert store.delete("user", ["u1"]) == 1
    assert seen == [FULL]  # the removal committed with an fsync of the WAL
    assert _synchronous(store) == NORMAL  # and row writes go back to not waiting
    assert store.get("user", ["u1", "u2"]) == {"u2": b"b"}
    store.close()


def _pragma(store: SqliteOnlineStore, name: str) -> int:
    return int(store._conn.execute(f"PRAGMA {name}").fetchone()[0])


def test_a_new_store_has_16_kib_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    new = SqliteOnlineStore(f"sqlite:///{tmp_path}/new.db")
    new.put("user", {"u1": b"a"})
    assert _pragma(new, "page_size") == PAGE_SIZE == 16_384
    assert _pragma(new, "wal_autocheckpoint") == WAL_CHECKPOINT_BYTES // 16_384
    new.close()
    # A store made with SQLite's default pages, as earlier releases made it.
    old_path = tmp_path / "old.db"
    conn = connect(str(old_path))
    conn.execute(
        "CREATE TABLE hw_rows (ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, "
        "PRIMARY KEY (ns, key)) WITHOUT ROWID"
    )
    conn.execute("INSERT INTO hw_rows VALUES ('user', 'u1', x'01')")
    conn.close()
    old = SqliteOnlineStore(f"sqlite:///{old_path}")
    assert _pragma(old, "page_size") == 4_096
    assert _pragma(old, "wal_autocheckpoint") == WAL_CHECKPOINT_BYTES // 4_096  # still ~40 MB
    old.put("user", {"u2": b"b"})
    assert old.get("user", ["u1", "u2"]) == {"u1": b"\x01", "u2": b"b"}
    old.close()
    assert sqlite3.connect(old_path).execute("PRAGMA page_size").fetchone() == (4_096,)
