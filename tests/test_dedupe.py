"""The idempotency window over every backend (SQLite, Redis, Redis Cluster): remember,
seen, claims, and erasure of users."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from headwater.dedupe import open_idempotency_window
from headwater.dedupe.base import IdempotencyWindow
from tests.conftest import server_url


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis_cluster),
    ]
)
def window(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IdempotencyWindow]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'dedupe.db'}"
    elif request.param == "redis-cluster":
        cluster = request.getfixturevalue("redis_cluster_url")
        url = f"{cluster}/?prefix=hwtest-{uuid.uuid4().hex[:8]}"
    else:
        url = f"{server_url('redis')}?prefix=hwtest-{uuid.uuid4().hex[:8]}"
    w = open_idempotency_window(url, window_s=3600)
    yield w
    w.erase_users([f"u{i}" for i in range(5)])
    w.close()


def test_erase_users_removes_each_users_entries_and_no_one_elses(
    window: IdempotencyWindow,
) -> None:
    window.remember([(f"e{i}", f"u{i % 5}") for i in range(50)])
    assert window.seen(["e0", "e1", "missing"]) == {"e0", "e1"}
    held = window.count_users(["u0", "u1", "nobody"])
    # Redis also counts the user's index of ids, an entry that names the user too.
    assert held["u0"] >= 10
    assert held["u1"] >= 10
    assert held["nobody"] == 0
    assert window.erase_users(["u0", "u1", "u0", "nobody"]) == {"u0": 10, "u1": 10, "nobody": 0}
    assert window.count_users(["u0", "u1"]) == {"u0": 0, "u1": 0}
    assert window.count_user("u2") >= 10
    assert window.seen(["e0", "e1", "e2"]) == {"e2"}
    assert window.erase_user("u2") == 10
    assert window.count_user("u2") == 0


def test_a_claim_is_mine_pending_for_others_and_done_once_confirmed(
    window: IdempotencyWindow,
) -> None:
    entries = [(f"c{i}", f"u{i % 5}") for i in range(10)]
    first = window.claim(entries, "gw-a")
    assert first.mine == {e for e, _ in entries}
    assert not first.done
    assert not first.pending
    # A hedged copy of the batch at another gateway: claimed by gw-a, not yet published.
    second = window.claim(entries[:4], "gw-b")
    assert not second.mine
    assert set(second.pending) == {"c0", "c1", "c2", "c3"}
    assert {p.token for p in second.pending.values()} == {"gw-a"}
    assert window.seen(["c0"]) == set(), "a claim is not an acceptance"
    # The same token claiming again keeps what it has.
    assert window.claim(entries[:2], "gw-a").mine == {"c0", "c1"}
    window.confirm("gw-a")
    third = window.claim(entries[:4], "gw-b")
    assert third.done == {"c0", "c1", "c2", "c3"}
    assert window.seen(["c0", "c9", "other"]) == {"c0", "c9"}


def test_one_claim_sorts_new_held_done_and_repeated_ids(window: IdempotencyWindow) -> None:
    window.claim([("held", "u1")], "gw-a")
    window.claim([("done", "u1")], "gw-b")
    window.confirm("gw-b")
    entries = [("new1", "u2"), ("held", "u1"), ("done", "u1"), ("new2", "u2"), ("new1", "u2")]
    claim = window.claim(entries, "gw-c")
    assert claim.mine == {"new1", "new2"}
    assert claim.done == {"done"}
    assert set(claim.pending) == {"held"}
    assert claim.pending["held"].token == "gw-a"
    # A long batch (more entries than one statement takes) of new ids is all mine.
    many = [(f"m{i}", "u3") for i in range(2_000)]
    assert window.claim(many, "gw-d").mine == {e for e, _ in many}


def test_a_failed_publish_releases_and_a_dead_claim_is_taken_over(
    window: IdempotencyWindow,
) -> None:
    window.claim([("r1", "u1"), ("r2", "u1")], "gw-a")
    window.release("gw-a", ["r1"])
    retry = window.claim([("r1", "u1"), ("r2", "u1")], "gw-b")
    assert retry.mine == {"r1"}
    assert set(retry.pending) == {"r2"}
    # gw-a died holding r2: its claim is taken over, once, and only while unconfirmed.
    assert window.take_over({"gw-a": ["r2"]}, "gw-b") == {"r2"}
    assert window.take_over({"gw-a": ["r2"]}, "gw-c") == set()
    window.claim([("t1", "u2")], "gw-x")
    window.confirm("gw-x")
    assert window.take_over({"gw-x": ["t1"]}, "gw-y") == set(), "a confirmed claim stays"
    window.confirm("gw-b")
    assert window.seen(["r1", "r2", "t1"]) == {"r1", "r2", "t1"}
    # Erasure reaches claimed ids like accepted ones.
    assert window.erase_users(["u1", "u2"]) == {"u1": 2, "u2": 1}
    assert window.count_users(["u1", "u2"]) == {"u1": 0, "u2": 0}


def test_claim_many_claims_each_send_under_its_own_token_in_order(
    window: IdempotencyWindow,
) -> None:
    """The ingest writer claims a group of concurrent sends at once: each send's answer
    is what ``claim`` alone would say at its place in the group, so a hedged copy in
    the same group finds the first copy's ids pending."""
    window.claim([("done", "u1")], "gw-0")
    window.confirm("gw-0")
    a = [(f"a{i}", "u1") for i in range(5)]
    b = [(f"b{i}", "u2") for i in range(1_000)]  # more than one statement takes
    first, second, copy, empty = window.claim_many(
        [([*a, ("done", "u1")], "gw-a"), (b, "gw-b"), (a[:2], "gw-c"), ([], "gw-d")]
    )
    assert first.mine == {e for e, _ in a}
    assert first.done == {"done"}
    assert second.mine == {e for e, _ in b}
    assert not copy.mine
    assert {e: p.token for e, p in copy.pending.items()} == {"a0": "gw-a", "a1": "gw-a"}
    assert not empty.mine
    assert not empty.done
    assert not empty.pending
    assert window.seen(["a0", "b0"]) == set(), "claimed, not accepted"
    window.confirm_many(["gw-a", "gw-b", "gw-a"])
    assert window.seen(["a0", "a4", "b999", "done"]) == {"a0", "a4", "b999", "done"}
    window.confirm_many([])
    assert window.claim(a[:2], "gw-c").done == {"a0", "a1"}


def test_the_sqlite_sweep_deletes_expired_entries_a_bounded_stretch_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep of the whole table held every claim behind it for about 25 ms per million
    entries. Each sweep now looks at a stretch of keys after the last one's, wrapping
    at the end, and over several sweeps deletes every expired entry and token."""
    from headwater.dedupe import sqlite as dedupe_sqlite

    monkeypatch.setattr(dedupe_sqlite, "_SWEEP_S", 0.0)
    monkeypatch.setattr(dedupe_sqlite, "_SWEEP_ROWS", 100)
    w = dedupe_sqlite.SqliteIdempotencyWindow(f"sqlite:///{tmp_path / 'd.db'}", window_s=3600)

    def age(ms: int) -> None:
        w._conn.execute("UPDATE hw_dedupe SET accepted_ms = accepted_ms - ?", (ms,))
        w._conn.execute("UPDATE hw_dedupe_tokens SET done_ms = done_ms - ?", (ms,))

    def stored(table: str = "hw_dedupe") -> int:
        return int(w._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    try:
        w.remember([(f"m{i:04d}", "u1") for i in range(1_000)])
        age(2 * 3_600_000)  # past the window: expired, not yet swept
        w._claimed = 0
        w.remember([("z-live", "u2")])
        assert stored() == 901, "one sweep deletes the expired among its 100 keys only"
        assert w.seen(["m0500", "z-live"]) == {"z-live"}, "an expired entry already counts as gone"
        for n in range(9):
            w.remember([(f"z{n}", "u2")])
        assert stored() == 10
        assert stored("hw_dedupe_tokens") == 10, "the expired token went too"
        # The sweep went on from the end of the table to its start: entries before the
        # cursor that expire later are reached by the next pass.
        w.remember([(f"a{i:03d}", "u3") for i in range(50)])
        age(2 * 3_600_000)
        for n in range(3):
            w.remember([(f"b{n}", "u4")])
        assert sorted(r[0] for r in w._conn.execute("SELECT event_id FROM hw_dedupe")) == [
            "b0",
            "b1",
            "b2",
        ]
    finally:
        w.close()


def test_processes_opening_one_sqlite_window_together_all_open_it(tmp_path: Path) -> None:
    """`up --processes` starts a gateway and the consumers together, and each opens the
    window. Adding the claim's `token` column was a check and an ALTER apart: two
    openers both saw it missing, and the second failed with `duplicate column name`."""
    import sqlite3
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from headwater.dedupe.sqlite import SqliteIdempotencyWindow

    def open_together(url: str, n: int = 6) -> None:
        start = threading.Barrier(n)

        def one(_: int) -> None:
            start.wait()
            SqliteIdempotencyWindow(url, window_s=60).close()

        with ThreadPoolExecutor(n) as pool:
            list(pool.map(one, range(n)))

    for round_ in range(15):
        open_together(f"sqlite:///{tmp_path / f'new{round_}.db'}")
        # A window written before claims existed: the column is added once.
        old = tmp_path / f"old{round_}.db"
        with sqlite3.connect(old) as conn:
            conn.execute(
                "CREATE TABLE hw_dedupe (event_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, "
                "accepted_ms INTEGER NOT NULL) WITHOUT ROWID"
            )
            conn.execute("INSERT INTO hw_dedupe VALUES ('e-old', 'u1', ?)", (int(1e13),))
        conn.close()
        open_together(f"sqlite:///{old}")
        w = SqliteIdempotencyWindow(f"sqlite:///{old}", window_s=60)
        try:
            assert w.seen(["e-old"]) == {"e-old"}, "an entry from before claims still counts"
        finally:
            w.close()


def test_the_sqlite_window_finds_a_users_entries_without_holding_up_claims(
    tmp_path: Path,
) -> None:
    """An erasure's search of the window (a scan: user_id has no index) ran inside the
    DELETE, holding the write lock, and every gateway's claim waited for the whole
    table. The scan now reads; only the deletes by key take the lock."""
    import sqlite3

    from headwater.dedupe.sqlite import SqliteIdempotencyWindow

    path = tmp_path / "d.db"
    w = SqliteIdempotencyWindow(f"sqlite:///{path}", window_s=3600)
    w.remember([(f"e{i:06d}", "u-1" if i % 500 == 0 else f"other-{i % 97}") for i in range(20_000)])
    gateway = sqlite3.connect(path, timeout=0, isolation_level=None)
    probes: list[str] = []

    def claim_now() -> int:
        # What a gateway's claim needs: the write lock, at once.
        try:
            gateway.execute("BEGIN IMMEDIATE")
            gateway.execute("ROLLBACK")
            probes.append("claimed")
        except sqlite3.OperationalError:
            probes.append("waited")
        return 0

    w._conn.set_progress_handler(claim_now, 2000)
    try:
        removed = w.erase_users(["u-1"])
    finally:
        w._conn.set_progress_handler(None, 0)
    assert removed == {"u-1": 40}
    assert w.count_users(["u-1", "other-3"]) == {"u-1": 0, "other-3": 206}
    assert len(probes) > 20
    assert probes.count("waited") <= len(probes) // 10, probes
    gateway.close()
    w.close()


def test_a_sqlite_claim_of_many_ids_is_cut_at_the_connections_bound_on_parameters(
    tmp_path: Path,
) -> None:
    import sqlite3

    from headwater.dedupe.sqlite import SqliteIdempotencyWindow

    window = SqliteIdempotencyWindow(f"sqlite:///{tmp_path}/w.db", window_s=3600)
    # 999 parameters: SQLite's bound before 3.32, and where a build keeps it.
    window._conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    entries = [(f"e{i}", f"u{i % 7}") for i in range(1_200)]
    assert window.claim(entries, "t1").mine == {e for e, _ in entries}
    window.confirm("t1")
    again = window.claim([*entries[:600], ("e-new", "u1")], "t2")
    assert (again.mine, again.done) == ({"e-new"}, {e for e, _ in entries[:600]})
