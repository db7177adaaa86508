"""The SQLite online store's own settings: page size, and the fsync a deletion waits for."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from headwater.online.sqlite import PAGE_SIZE, SqliteOnlineStore

NORMAL, FULL = 1, 2


def _synchronous(store: SqliteOnlineStore) -> int:
    return int(store._conn.execute("PRAGMA synchronous").fetchone()[0])


def test_a_new_store_gets_large_pages_and_an_existing_store_keeps_its_own(tmp_path: Path) -> None:
    fresh = SqliteOnlineStore(f"sqlite:///{tmp_path}/new.db")
    fresh.put("user", {"u1": b"x"})
    fresh.close()
    old_path = tmp_path / "old.db"
    conn = sqlite3.connect(old_path)
    conn.execute("PRAGMA page_size=4096")
    conn.execute("CREATE TABLE keep (x)")  # the file exists with 4 KiB pages
    conn.close()
    old = SqliteOnlineStore(f"sqlite:///{old_path}")
    old.put("user", {"u1": b"y"})
    assert old.get("user", ["u1"]) == {"u1": b"y"}
    old.close()

    def page_size(path: Path) -> int:
        with sqlite3.connect(path) as c:
            return int(c.execute("PRAGMA page_size").fetchone()[0])

    assert page_size(tmp_path / "new.db") == PAGE_SIZE
    assert page_size(old_path) == 4096


def test_row_writes_do_not_wait_for_fsync_but_deletions_do(tmp_path: Path) -> None:
    store = SqliteOnlineStore(f"sqlite:///{tmp_path}/o.db")
    seen: list[int] = []
    real_delete = store._delete

    def spy(namespace: str, keys: list[str]) -> int:
        seen.append(_synchronous(store))
        return real_delete(namespace, keys)

    store._delete = spy  # type: ignore[method-assign]
    store.put("user", {"u1": b"a", "u2": b"b"})
    assert _synchronous(store) == NORMAL
    assert store.delete("user", ["u1"]) == 1
    assert seen == [FULL]  # the removal committed with an fsync of the WAL
    assert _synchronous(store) == NORMAL  # and row writes go back to not waiting
    assert store.get("user", ["u1", "u2"]) == {"u2": b"b"}
    store.close()
