"""The sealed subject id of an open request, and the SQLite scrub after an erasure."""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater._sqlite import connect, scrub
from headwater.erasure.subject import SubjectHasher, SubjectSealer
from headwater.errors import ErasureError


def test_a_sealed_id_opens_only_with_its_key_and_its_request() -> None:
    sealer = SubjectSealer(b"k" * 32)
    stored = sealer.seal("alice@example.org", "er_1")
    assert "alice" not in stored
    assert stored.startswith("sealed:v1:")
    assert sealer.seal("alice@example.org", "er_1") != stored  # a fresh nonce each time
    assert sealer.open(stored, "er_1") == "alice@example.org"
    with pytest.raises(ErasureError, match="er_2"):
        sealer.open(stored, "er_2")  # bound to its request: no swapping between rows
    with pytest.raises(ErasureError, match="HEADWATER_ERASURE_KEY"):
        SubjectSealer(b"x" * 32).open(stored, "er_1")
    assert sealer.open("legacy-clear-id", "er_1") == "legacy-clear-id"


def test_a_deleted_row_leaves_no_byte_in_the_file_or_its_write_ahead_log(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    conn = connect(str(path))
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t VALUES ('keep', 'other user'), ('gone', 'needle-7f3a')")
    conn.execute("DELETE FROM t WHERE k = 'gone'")
    wal = Path(f"{path}-wal")
    assert b"needle-7f3a" in wal.read_bytes()  # the old page image: what the scrub is for
    reader = connect(str(path))
    assert reader.execute("SELECT v FROM t").fetchall() == [("other user",)]
    assert scrub(conn) > 0
    assert wal.stat().st_size == 0
    assert b"needle-7f3a" not in path.read_bytes()
    assert reader.execute("SELECT v FROM t").fetchall() == [("other user",)]


def test_a_reader_holding_the_log_past_the_wait_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    conn = connect(str(path))
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("INSERT INTO t VALUES ('a')")
    reader = connect(str(path))
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM t").fetchall()
    conn.execute("INSERT INTO t VALUES ('b')")
    with pytest.raises(sqlite3.OperationalError, match="still in use"):
        scrub(conn, wait_s=0.2)
    reader.execute("COMMIT")
    scrub(conn)


@settings(max_examples=300, deadline=None)
@given(key=st.binary(min_size=16, max_size=200), user_ids=st.lists(st.text(), min_size=1))
def test_the_subject_hash_is_the_hmac_of_the_user_id(key: bytes, user_ids: list[str]) -> None:
    """Keys shorter and longer than SHA-256's block (a longer one is hashed first), each id
    twice: computed, then from the cache."""
    hasher = SubjectHasher(key, cache_size=3)
    for user_id in user_ids + user_ids:
        assert hasher(user_id) == hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()
