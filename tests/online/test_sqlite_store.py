"""The SQLite online store's durability (row writes do not wait for an fsync, deletions
do), its pages (4 KiB in a new file; a file made with other pages keeps them), its
rows' layout (in the order they were first written; a store in key order is moved) and
its rewrites (a row read and then written is rewritten where it was read)."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from headwater._idsearch import sqlite_copies
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


def test_a_new_store_has_4_kib_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    new = SqliteOnlineStore(f"sqlite:///{tmp_path}/new.db")
    new.put("user", {"u1": b"a"})
    assert _pragma(new, "page_size") == PAGE_SIZE == 4_096
    # Once it writes rows, a thread of its own checkpoints every ~40 MB of log, not
    # the connection whose commit crosses the mark.
    assert _pragma(new, "wal_autocheckpoint") == 0
    assert new._checkpointer is not None
    assert new._checkpointer.running
    assert new._checkpointer.threshold_bytes == WAL_CHECKPOINT_BYTES
    new.close()
    # A store made with other pages than a new one gets: 16 KiB, as releases from
    # 2026-12-05 made it.
    old_path = tmp_path / "old.db"
    conn = connect(str(old_path), page_size=16_384)
    conn.execute(
        "CREATE TABLE hw_rows (ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, "
        "PRIMARY KEY (ns, key)) WITHOUT ROWID"
    )
    conn.execute("INSERT INTO hw_rows VALUES ('user', 'u1', x'01')")
    conn.close()
    old = SqliteOnlineStore(f"sqlite:///{old_path}")
    assert _pragma(old, "page_size") == 16_384
    assert _pragma(old, "wal_autocheckpoint") == WAL_CHECKPOINT_BYTES // 16_384  # still ~40 MB
    old.put("user", {"u2": b"b"})
    assert old.get("user", ["u1", "u2"]) == {"u1": b"\x01", "u2": b"b"}
    old.close()
    assert sqlite3.connect(old_path).execute("PRAGMA page_size").fetchone() == (16_384,)


def _wal_frames(store: SqliteOnlineStore) -> int:
    """Frames in the write-ahead log (pages written since it was last emptied)."""
    return int(store._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])


def test_rows_lie_in_the_order_their_keys_were_first_written(tmp_path: Path) -> None:
    """Keys written together first share pages wherever they fall in key order, so a
    commit that rewrites them writes a few pages to the log, not one a row."""
    store = SqliteOnlineStore(f"sqlite:///{tmp_path}/o.db")
    early = [f"u{n * 997 % 10_000:05d}" for n in range(100)]  # spread over the key range
    store.put("user", dict.fromkeys(early, b"e" * 1_000))
    rest = sorted({f"u{n:05d}" for n in range(10_000)} - set(early))
    for start in range(0, len(rest), 1_000):
        store.put("user", dict.fromkeys(rest[start : start + 1_000], b"r" * 1_000))
    store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.put("user", dict.fromkeys(early, b"f" * 1_000))
    # 100 rows of about 1 KB: 25 pages of 4 KiB, a few more for the index and the
    # B-tree's interior; in key order the 100 rows lie on about 100 leaves.
    assert _wal_frames(store) <= 40
    assert store.get("user", early[:2]) == dict.fromkeys(early[:2], b"f" * 1_000)
    # The first written are first in the table, and an update left them there.
    assert _first_rows(store, 100) == sorted(early)
    # The erasure's rebuild of the file (VACUUM) keeps them first.
    assert store.delete("user", [early[0]]) == 1
    assert store.scrub()["vacuumed"]
    assert _first_rows(store, 99) == sorted(early[1:])
    store.close()


def test_a_namespaces_keys_come_in_the_order_first_written(tmp_path: Path) -> None:
    """A rebuild's hand-over writes the new namespace in the staged namespace's order."""
    store = SqliteOnlineStore(f"sqlite:///{tmp_path}/o.db")
    for key in ("u3", "u1", "u2"):
        store.put("staged", {key: b"x"})
    store.put("other", {"u0": b"x"})
    store.put("staged", {"u1": b"y"})  # an update keeps its place
    assert store.keys("staged") == ["u3", "u1", "u2"]
    store.close()


def _first_rows(store: SqliteOnlineStore, n: int) -> list[str]:
    rows = store._conn.execute("SELECT key FROM hw_rows ORDER BY rowid LIMIT ?", (n,)).fetchall()
    return [k for (k,) in rows]


def test_a_process_of_an_earlier_release_keeps_writing_and_erasing_a_store(
    tmp_path: Path,
) -> None:
    """The statements of releases before 2026-12-06, against a store in the new layout:
    a rolling upgrade does not stop the processes not yet upgraded."""
    store = SqliteOnlineStore(f"sqlite:///{tmp_path}/o.db")
    store.put("user", {"u1": b"a"})
    earlier = connect(str(tmp_path / "o.db"))
    earlier.executemany(
        "INSERT INTO hw_rows VALUES (?, ?, ?) ON CONFLICT (ns, key) "
        "DO UPDATE SET value = excluded.value",
        [("user", "u1", b"b"), ("user", "u2", b"c")],
    )
    assert store.get("user", ["u1", "u2"]) == {"u1": b"b", "u2": b"c"}
    earlier.execute("DELETE FROM hw_rows WHERE ns = ? AND key IN (?)", ("user", "u1"))
    assert store.get("user", ["u1", "u2"]) == {"u2": b"c"}
    earlier.close()
    store.close()


def _key_ordered_store(path: Path, rows: dict[tuple[str, str], bytes]) -> None:
    """A store in the layout of releases before 2026-12-06, its rows in key order."""
    conn = connect(str(path))
    conn.execute(
        "CREATE TABLE hw_rows (ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, "
        "PRIMARY KEY (ns, key)) WITHOUT ROWID"
    )
    conn.executemany("INSERT INTO hw_rows VALUES (?, ?, ?)", [(*k, v) for k, v in rows.items()])
    conn.execute(
        "CREATE TABLE hw_positions (grp TEXT NOT NULL, partition INTEGER NOT NULL, "
        "next_offset INTEGER NOT NULL, as_of_ms INTEGER NOT NULL, PRIMARY KEY (grp, partition))"
    )
    conn.execute("INSERT INTO hw_positions VALUES ('features', 0, 42, 7)")
    conn.close()


def test_a_store_in_key_order_is_moved_once_keeping_every_row_and_position(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    rows = {("user", f"u{n:04d}"): f"row-{n}".encode() * 20 for n in range(3_000)}
    rows[("user@v1", "u0001")] = b"previous"
    _key_ordered_store(path, rows)
    # Two processes open it at once: one moves the rows, the other waits and finds
    # them moved.
    with ThreadPoolExecutor(2) as pool:
        stores = list(pool.map(lambda _: SqliteOnlineStore(f"sqlite:///{path}"), range(2)))
    first = stores[0]
    (sql,) = first._conn.execute("SELECT sql FROM sqlite_master WHERE name = 'hw_rows'").fetchone()
    assert "WITHOUT ROWID" not in sql.upper()
    names = {n for (n,) in first._conn.execute("SELECT name FROM sqlite_master")}
    assert "hw_rows_key_ordered" not in names
    assert "hw_rows_key" in names
    users = [k for ns, k in rows if ns == "user"]
    assert first.get("user", users) == {k: v for (ns, k), v in rows.items() if ns == "user"}
    assert stores[1].get("user@v1", ["u0001"]) == {"u0001": b"previous"}
    assert first.positions("features")[0].next_offset == 42
    first.put("user", {"u9999": b"new"})
    (top,) = first._conn.execute("SELECT MAX(rowid) FROM hw_rows").fetchone()
    assert first._conn.execute("SELECT key FROM hw_rows WHERE rowid = ?", (top,)).fetchone() == (
        "u9999",
    )
    for store in stores:
        store.close()
    # The old table's pages were zeroed as they were freed: each key is in the file
    # twice (its row and the key index), not three times.
    conn = connect(str(path))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert sqlite_copies(path, ["u2345"]) == 2


def _statements(store: SqliteOnlineStore) -> list[str]:
    seen: list[str] = []
    store._conn.set_trace_callback(seen.append)
    return seen


def test_rows_read_and_then_written_are_rewritten_by_rowid_and_new_ones_inserted(
    tmp_path: Path,
) -> None:
    store = SqliteOnlineStore(f"sqlite:///{tmp_path}/o.db")
    store.put("user", {f"u{i}": b"old" for i in range(10)})
    assert store.get("user", ["u3", "u7", "u11"]) == {"u3": b"old", "u7": b"old"}
    seen = _statements(store)
    store.put("user", {"u3": b"three", "u7": b"seven", "u11": b"eleven"})
    writes = [s for s in seen if s.startswith(("UPDATE", "INSERT INTO hw_rows"))]
    assert [w.split()[0] for w in writes] == ["UPDATE", "UPDATE", "INSERT"]
    assert "rowid" in writes[0]
    assert "'u11'" in writes[2]  # only the row the read did not find is upserted
    # The read is used once: a second put of the same rows upserts them by key.
    seen.clear()
    store.put("user", {"u3": b"again"})
    assert [s.split()[0] for s in seen if s.startswith(("UPDATE", "INSERT INTO hw_rows"))] == [
        "INSERT"
    ]
    assert store.get("user", [f"u{i}" for i in range(12)]) == {
        **{f"u{i}": b"old" for i in range(10)},
        "u3": b"again",
        "u7": b"seven",
        "u11": b"eleven",
    }
    store.close()


def test_a_row_deleted_or_moved_after_the_read_is_written_by_key_and_no_other_row_changes(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/o.db"
    store = SqliteOnlineStore(url)
    store.put("user", {"a": b"1", "b": b"1", "c": b"1"})
    assert store.get("user", ["a", "b", "c"]) == {"a": b"1", "b": b"1", "c": b"1"}
    # Another process, between the read and the write: deletes "a", and moves "b" to a
    # new rowid while "z" takes the rowid "b" had (the rewrite must not land on "z").
    other = sqlite3.connect(f"{tmp_path}/o.db", isolation_level=None)
    (old_b,) = other.execute("SELECT rowid FROM hw_rows WHERE key = 'b'").fetchone()
    other.execute("BEGIN IMMEDIATE")
    other.execute("DELETE FROM hw_rows WHERE key IN ('a', 'b')")
    other.execute(
        "INSERT INTO hw_rows (rowid, ns, key, value) VALUES (?, 'user', 'z', x'7a')", (old_b,)
    )
    other.execute("INSERT INTO hw_rows (ns, key, value) VALUES ('user', 'b', x'6d6f766564')")
    other.execute("COMMIT")
    other.close()
    store.put("user", {"a": b"2", "b": b"2", "c": b"2"})
    assert store.get("user", ["a", "b", "c", "z"]) == {"a": b"2", "b": b"2", "c": b"2", "z": b"z"}
    store.close()


def test_a_read_of_one_namespace_serves_the_put_to_it_after_a_put_to_another(
    tmp_path: Path,
) -> None:
    store = SqliteOnlineStore(f"sqlite:///{tmp_path}/o.db")
    store.put("new", {"u": b"0"})
    store.put("old", {"u": b"0"})
    store.get("new", ["u"])
    seen = _statements(store)
    store.put("old", {"u": b"1"})  # a rebuild's mirror write, between the read and the put
    store.put("new", {"u": b"1"})
    writes = [s.split()[0] for s in seen if s.startswith(("UPDATE", "INSERT INTO hw_rows"))]
    assert writes == ["INSERT", "UPDATE"]
    assert store.get("old", ["u"]) == store.get("new", ["u"]) == {"u": b"1"}
    store.close()
