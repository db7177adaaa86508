"""The SQLite online store's durability: row writes do not wait for an fsync, deletions do."""

from __future__ import annotations

from pathlib import Path

from headwater.online.sqlite import SqliteOnlineStore

NORMAL, FULL = 1, 2


def _synchronous(store: SqliteOnlineStore) -> int:
    return int(store._conn.execute("PRAGMA synchronous").fetchone()[0])


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
