"""The control-plane port on every backend (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading

from headwater.control import open_control_database


def test_a_locked_table_keeps_other_writers_waiting_until_the_transaction_ends(
    control_url: str,
) -> None:
    db, other = open_control_database(control_url), open_control_database(control_url)
    db.ensure_schema(("CREATE TABLE IF NOT EXISTS hw_test_locked (n INTEGER NOT NULL)",))
    wrote = threading.Event()

    def write() -> None:
        other.execute("INSERT INTO hw_test_locked VALUES (2)")
        wrote.set()

    writer = threading.Thread(target=write)
    try:
        with db.transaction() as tx:
            tx.lock_table("hw_test_locked")
            writer.start()
            assert not wrote.wait(0.5), "another connection wrote to a locked table"
            assert tx.execute("SELECT n FROM hw_test_locked") == []
            tx.execute("INSERT INTO hw_test_locked VALUES (1)")
        writer.join(30)
        assert wrote.is_set()
        assert sorted(db.execute("SELECT n FROM hw_test_locked")) == [(1,), (2,)]
    finally:
        if writer.is_alive():
            writer.join(30)
        other.close()
        db.close()
