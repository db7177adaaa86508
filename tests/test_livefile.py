"""Reading a SQLite database's files in a process that has the database open keeps
SQLite's locks: another process that opens and closes the database then knows it is
not the only user, and leaves the write-ahead log and its shared memory alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import os, sqlite3, subprocess, sys
from headwater.erasure.checks import sqlite_byte_scan
from headwater.erasure.verify import Subject
db = sys.argv[1]
conn = sqlite3.connect(db, isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("CREATE TABLE t (x)")
conn.execute("INSERT INTO t VALUES ('u-1')")
# The erasure verification's byte search of the database, its log and shared memory.
found = sqlite_byte_scan(f"sqlite:///{db}")([Subject("u-1", "h")])[1]["u-1"][0]
other = (
    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT 1 FROM t'); "
    "c.close()"
)
subprocess.run([sys.executable, "-c", other, db], check=True)
print(found, os.path.exists(db + "-wal"), os.path.exists(db + "-shm"))
for i in range(300):
    conn.execute("INSERT INTO t VALUES (?)", (i,))
conn.close()
print(sqlite3.connect(db).execute("SELECT count(*) FROM t").fetchone()[0])
"""


def test_a_byte_search_of_an_open_database_leaves_sqlite_its_locks(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(db)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    first, rows = run.stdout.splitlines()
    # The search found the row; the other process, opening and closing the database,
    # did not take itself for its last user: the log and its shared memory are still
    # there (a process that lost its locks had them deleted under it here, and under
    # load died of SIGBUS in its next write).
    assert first == "1 True True"
    assert rows == "301"
