"""The independent verification: whole-id matching, one pass for many users, residue
found where a store kept a copy, and findings that never name the user."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater import _idsearch
from headwater._idsearch import Needles, count_ids
from headwater._sqlite import connect
from headwater.archive import ArchiveConsumer, ArchiveTable, ErasureLedger
from headwater.erasure.checks import archive_scan, redis_scan, sqlite_byte_scan
from headwater.erasure.events import ErasureEvent
from headwater.erasure.verify import CheckResult, Subject, Verifier
from tests.archive._history import SUBJECT, history, records
from tests.erasure.scan import dead_letter_counts


def test_ids_match_whole_tokens_only_with_one_id_or_many() -> None:
    data = b"\x00u001\x00 u0012 xu001 u001@x.org u001|u002\x00"
    assert count_ids(data, ["u001"]) == {"u001": 2}
    many = [f"u{i:03d}" for i in range(1, 40)]
    found = count_ids(data, many)
    assert found["u001"] == 2
    assert found["u002"] == 1
    assert sum(found.values()) == 3
    assert count_ids(b"a user:with:colons here", ["user:with:colons"]) == {"user:with:colons": 1}


def test_a_copy_left_in_a_store_is_residue_and_the_finding_does_not_name_the_user(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    conn = connect(url.removeprefix("sqlite:///"))
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t VALUES ('kept-user', 'x'), ('erased-user', 'y')")
    conn.execute("DELETE FROM t WHERE k = 'erased-user'")
    verifier = Verifier({"store": [sqlite_byte_scan(url)]})
    users = [Subject(f"user-{i}", f"h{i}") for i in range(20)]
    requests = [(Subject("kept-user", "h-k"), ["store"]), *((u, ["store"]) for u in users)]
    found = verifier.verify_many(requests)
    kept = found[0]["store"]
    assert kept.residue is not None
    assert kept.residue >= 1
    assert "kept-user" not in repr(kept)
    assert all(f["store"].residue == 0 for f in found[1:])
    assert verifier.verify("x", "h", ["unchecked"])["unchecked"].residue is None


def test_the_archive_check_reads_every_file_referenced_or_not(tmp_path: Path) -> None:
    root = str(tmp_path / "archive")
    c = ArchiveConsumer(ArchiveTable(root), ErasureLedger(root), SUBJECT, vacuum_interval_s=None)
    c.handle(records(history(300, days=3)))
    check = Verifier({"archive": [archive_scan(f"{root}/signals", None)]})
    users = [Subject(u, SUBJECT(u)) for u in ("u001", "u002", "nobody")]
    before = check.verify_many([(u, ["archive"]) for u in users])
    assert before[0]["archive"].residue
    assert before[1]["archive"].residue
    assert before[2]["archive"].residue == 0
    c.table.compact(sorted(c.table.days()))  # the old files stay, unreferenced
    c.erase(ErasureEvent(request_id="r", user_id="u001", requested_at=datetime.now(UTC)))
    after = check.verify_many([(u, ["archive"]) for u in users])
    assert after[0]["archive"].residue == 0
    assert after[1]["archive"].residue


def test_a_log_file_seen_in_an_earlier_pass_is_read_again_only_when_an_id_may_be_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Delta log's commits never change: after its first read, a pass skips a
    commit whose tokens hold none of the ids searched, and finds an id a later request
    asks for in a commit an earlier pass had already seen."""

    archive = str(tmp_path / "archive")
    root = tmp_path / "archive" / "signals"
    c = ArchiveConsumer(ArchiveTable(archive), ErasureLedger(archive), SUBJECT)
    c.handle(records(history(50, days=1)))
    stray = root / "_delta_log" / f"{99:020d}.json"
    stray.write_bytes(b'{"commitInfo":{"note":"kept-by-mistake evt-42 user:with:colon"}}\n')
    reads: list[str] = []
    real = Path.read_bytes

    def counted(self: Path) -> bytes:
        reads.append(self.name)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", counted)
    check = Verifier({"archive": [archive_scan(str(root), None)]})

    def residue(subject: Subject) -> int | None:
        return check.verify_many([(subject, ["archive"])])[0]["archive"].residue

    assert residue(Subject("someone-else", "h1")) == 0
    assert stray.name in reads  # the first pass reads every commit
    reads.clear()
    assert residue(Subject("another-one", "h2", ("evt-7",))) == 0
    assert stray.name not in reads  # known by its tokens: none of these ids is there
    assert residue(Subject("kept-by-mistake", "h3")) == 1
    assert residue(Subject("nobody", "h4", ("evt-42",))) == 1
    assert residue(Subject("user:with:colon", "h5")) == 1  # not an id token: searched
    assert residue(Subject("kept-by", "h6")) == 0  # inside a longer id: not a copy
    c.table.close()


def test_a_file_read_in_pieces_finds_each_id_once_across_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_idsearch, "_CHUNK", 4096)
    monkeypatch.setattr(_idsearch, "_OVERLAP", 300)
    ids = [f"user-{i:04d}" for i in range(30)]
    body = bytearray(b"\0" * 50_000)
    placed: dict[str, int] = {}
    for n, at in enumerate(range(100, 49_000, 1_609)):  # some straddle a piece boundary
        user = ids[n % len(ids)]
        body[at : at + len(user)] = user.encode()
        placed[user] = placed.get(user, 0) + 1
    body[4090:4100] = b"xuser-0001"  # a longer id that contains one: not a hit
    path = tmp_path / "f"
    path.write_bytes(bytes(body))
    assert _idsearch._count_in_file(path, ids) == {u: placed.get(u, 0) for u in ids}
    assert _idsearch._count_in_file(path, ids[:2]) == {u: placed.get(u, 0) for u in ids[:2]}


@pytest.mark.redis
def test_the_redis_check_reads_values_as_well_as_key_names(redis_url: str) -> None:
    """An idempotency entry is keyed by the event id and names its user in its value;
    a hash or a set holding the id is found too, and other users' values are not."""
    from headwater._redis import RedisConnection

    prefix = f"vt{uuid.uuid4().hex[:8]}"
    conn = RedisConnection(f"{redis_url}?prefix={prefix}", what="test")
    client = conn.client
    try:
        client.set(f"{prefix}:dd:evt-1", b"tok|1700000000000|erased-user")
        client.set(f"{prefix}:dd:evt-2", b"tok|1700000000000|erased-user2")
        client.hset(f"{prefix}:h", mapping={"f": "erased-user"})
        client.sadd(f"{prefix}:s", "x", "erased-user")
        client.set(f"{prefix}:rows:kept", b"\x00\x01 kept-user-and-more")
        for i in range(1200):  # more than one batch of keys
            client.set(f"{prefix}:filler:{i}", b"nothing")
        verifier = Verifier({"window": [redis_scan(client, prefix)]})
        erased = verifier.verify("erased-user", "h", ["window"])["window"]
        assert erased.residue == 3
        assert "erased-user" not in repr(erased)
        assert verifier.verify("kept-user", "h", ["window"])["window"].residue == 0
    finally:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
        conn.close()


@pytest.mark.redis
def test_a_copy_of_an_event_that_no_longer_names_the_user_is_residue(
    tmp_path: Path, redis_url: str
) -> None:
    """A store that dropped the user's id but kept one of their events (by its id) still
    holds the user: each kind of check finds the event id, and the finding names neither
    the user nor the event."""
    from headwater._redis import RedisConnection

    events = tuple(f"evt-{i:03d}-of-erased" for i in range(50))
    who = Subject("erased-user", "h-e", events)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    conn = connect(url.removeprefix("sqlite:///"))
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t VALUES ('someone', 'last seen evt-017-of-erased')")
    root = tmp_path / "archive"
    (root / "signals" / "date=2026-01-01").mkdir(parents=True)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"event_id": ["evt-030-of-erased", "other"], "user_id": ["x", "y"]}),
        root / "signals" / "date=2026-01-01" / "stray.parquet",
    )
    prefix = f"vt{uuid.uuid4().hex[:8]}"
    redis = RedisConnection(f"{redis_url}?prefix={prefix}", what="test")
    redis.client.set(f"{prefix}:dd:evt-044-of-erased", b"tok|1700000000000|")
    try:
        verifier = Verifier(
            {
                "sqlite": [sqlite_byte_scan(url)],
                "archive": [archive_scan(str(root / "signals"), None)],
                "redis": [redis_scan(redis.client, prefix)],
            }
        )
        stores = ["sqlite", "archive", "redis"]
        found = verifier.verify_many([(who, stores)])[0]
        assert {name: f.residue for name, f in found.items()} == dict.fromkeys(stores, 1)
        for f in found.values():
            assert "evt-" not in repr(f)
            assert "erased-user" not in repr(f)
            assert f.detail["event_ids_searched"] == len(events)
        # Searched for the user alone, as before the event ids were kept: nothing found.
        alone = verifier.verify_many([(Subject("erased-user", "h-e"), stores)])[0]
        assert {name: f.residue for name, f in alone.items()} == dict.fromkeys(stores, 0)
    finally:
        for key in redis.client.scan_iter(match=f"{prefix}:*", count=1000):
            redis.client.delete(key)
        redis.close()


_PIECES = ["u1", "u12", "evt-1", "evt-1x", "a.b", "@", " ", "\x00", "|", "-", "é"]


@given(
    st.lists(st.sampled_from(_PIECES), max_size=40),
    st.lists(st.sampled_from(["u1", "u12", "evt-1", "a.b", "zz"]), min_size=1, max_size=12),
    st.integers(0, 12),
    st.booleans(),
)
def test_needles_count_whole_tokens_as_a_plain_search_does(
    pieces: list[str], ids: list[str], extra: int, automaton: bool
) -> None:
    # By the Aho-Corasick automaton, or without it by tokens beyond eight ids: each must
    # count what a plain search does.
    view = "".join(pieces).encode()
    wanted = list(dict.fromkeys([*ids, *(f"filler{i}" for i in range(extra))]))
    needles = Needles(wanted, automaton=automaton)
    expected = {i: _plain_count(view, i.encode()) for i in wanted}
    assert needles.count(view) == expected
    assert needles.any_in(view) == any(expected.values())
    if len(view) > 4:
        # A window: only what starts in it counts, the bytes around it are context.
        inner = {i: _plain_count(view, i.encode(), 2, len(view) - 2) for i in wanted}
        assert needles.count(view, start=2, limit=len(view) - 2) == inner


def _plain_count(view: bytes, needle: bytes, start: int = 0, limit: int | None = None) -> int:
    ok = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.@-")
    n = 0
    end = len(view) if limit is None else limit
    for at in range(start, min(end, len(view) - len(needle) + 1)):
        if view[at : at + len(needle)] != needle:
            continue
        before = view[at - 1] if at else None
        after = view[at + len(needle)] if at + len(needle) < len(view) else None
        n += before not in ok and after not in ok
    return n


def test_a_check_two_stores_share_reads_once_for_both() -> None:
    calls: list[list[str]] = []

    def shared(users: Sequence[Subject]) -> CheckResult:
        calls.append(sorted(u.user_id for u in users))
        return "shared", {u.user_id: (int(u.user_id == "dirty"), {}) for u in users}

    verifier = Verifier({"online": [shared], "batch": [shared]})
    found = verifier.verify_many(
        [(Subject("dirty", "h1"), ["online", "batch"]), (Subject("clean", "h2"), ["batch"])]
    )
    assert calls == [["clean", "dirty"]]
    assert {n: f.residue for n, f in found[0].items()} == {"online": 1, "batch": 1}
    assert {n: f.residue for n, f in found[1].items()} == {"batch": 0}


def test_the_stores_are_read_at_the_same_time_not_one_after_another() -> None:
    """A pass takes about as long as its slowest store: each check runs in a thread of
    its own. Three checks that each wait for the other two pass only together."""
    meet = threading.Barrier(3, timeout=10)

    def waiting(name: str) -> Callable[[Sequence[Subject]], CheckResult]:
        def check(users: Sequence[Subject]) -> CheckResult:
            meet.wait()  # broken, and the check failed, if the others ran after it
            return f"{name} read", {u.user_id: (0, {}) for u in users}

        return check

    shared = waiting("online")
    verifier = Verifier({"a": [shared], "b": [shared, waiting("outputs")], "c": [waiting("bus")]})
    (found,) = verifier.verify_many([(Subject("u1", "h1"), ["a", "b", "c"])])
    assert {name: f.residue for name, f in found.items()} == {"a": 0, "b": 0, "c": 0}
    assert found["b"].method == "online read; outputs read"


def test_a_dead_letter_under_another_key_that_names_the_user_is_residue(tmp_path: Path) -> None:
    """The dead letters are read back whole, not queried by key: a letter kept under
    another key whose record holds the user's event id, or the user's id, is found."""
    from headwater.application import Application
    from headwater.application.verification import build_verifier
    from headwater.bus import Record
    from headwater.config import Settings

    with Application(Settings.from_env(tmp_path / "hw")) as app:
        letters = app.dead_letters
        letters.put("features", Record(0, 1, "other-user", "signal", b"x evt-9 y", 1), "e", 3)
        letters.put("features", Record(1, 2, "third", "signal", b'{"u":"erased-u"}', 1), "e", 3)
        letters.put("archive", Record(0, 3, "erased-u", "signal", b"v", 1), "e", 3)
        letters.put("features", Record(1, 4, "kept-u", "signal", b"evt-90 erased-user", 1), "e", 3)
        for i in range(1200):  # more than one chunk of rows read back
            letters.put("backlog", Record(i % 3, i, f"k{i}", "signal", b"nothing", 1), "e", 1)
        verifier = build_verifier(app)
        found = verifier.verify_many(
            [
                (Subject("erased-u", "h1", ("evt-9",)), ["dead-letters"]),
                (Subject("clean-u", "h2", ("evt-1",)), ["dead-letters"]),
            ]
        )
    erased, clean = found[0]["dead-letters"], found[1]["dead-letters"]
    assert erased.residue == 3
    assert erased.detail["hits"] == {
        "dead letter features:0:1": 1,
        "dead letter features:1:2": 1,
        "dead letter archive:0:3": 1,
    }
    assert "read back" in erased.method
    assert clean.residue == 0
    assert "erased-u" not in repr(erased)


def test_the_dead_letter_store_erases_the_letters_that_name_the_user_under_any_key(
    tmp_path: Path,
) -> None:
    from headwater.bus import Record
    from headwater.bus.dead_letters import DeadLetterStore
    from headwater.control import open_control_database

    db = open_control_database(f"sqlite:///{tmp_path / 'control.db'}")
    letters = DeadLetterStore(db)
    letters.put("features", Record(0, 1, "u-7", "signal", b"mine", 1), "e", 3)
    letters.put("features", Record(0, 2, "other", "signal", b'{"user_id":"u-7"}', 1), "e", 3)
    letters.put("features", Record(0, 3, "u-70", "signal", b'{"user_id":"u-70"}', 1), "e", 3)
    letters.put("archive", Record(1, 4, "u-8", "signal", b"u-7 and u-8", 1), "e", 3)
    assert dead_letter_counts(letters, ["u-7", "u-8"]) == {"u-7": 3, "u-8": 1}
    assert letters.erase_users(["u-7"]) == {"u-7": 3}
    assert dead_letter_counts(letters, ["u-7", "u-8", "u-70"]) == {"u-7": 0, "u-8": 0, "u-70": 1}
    assert [x.id for x in letters.list()] == ["features:0:3"]
    db.close()


def test_the_dead_letter_store_erases_what_its_search_finds(tmp_path: Path) -> None:
    """One search decides residue and erasure: a key that names the user among other
    tokens counts for both, and a group whose name holds colons is erased by its id."""
    from headwater.bus import Record
    from headwater.bus.dead_letters import DeadLetterStore
    from headwater.control import open_control_database

    db = open_control_database(f"sqlite:///{tmp_path / 'control.db'}")
    letters = DeadLetterStore(db)
    letters.put("features", Record(0, 1, "tenant/u-7", "signal", b"v", 1), "e", 3)
    letters.put("a:b", Record(2, 5, "u-7", "signal", b'{"e":"evt-1"}', 1), "e", 3)
    letters.put("features", Record(0, 2, "u-8", "signal", b"evt-1 evt-1", 1), "e", 3)
    assert letters.search(Needles(["u-7", "evt-1"])) == {
        "features:0:1": {"u-7": 1},
        "a:b:2:5": {"u-7": 1, "evt-1": 1},
        "features:0:2": {"evt-1": 2},
    }
    assert letters.naming(["u-7", "u-9"]) == {"u-7": ["a:b:2:5", "features:0:1"], "u-9": []}
    assert letters.erase_users(["u-7"]) == {"u-7": 2}
    assert letters.search(Needles(["u-7"])) == {}
    assert [x.id for x in letters.list()] == ["features:0:2"]
    db.close()


def test_the_dead_letter_erasure_confirms_what_it_leaves_from_its_one_read(
    tmp_path: Path, control_url: str
) -> None:
    """The erase reads the letters and deletes those found in one transaction that keeps
    writers out: the confirmation's nothing-remaining is what a read after it finds."""
    from headwater.bus import Record, open_bus
    from headwater.bus.dead_letters import DeadLetterStore
    from headwater.control import open_control_database
    from headwater.dedupe import open_idempotency_window
    from headwater.runtime.platform import DEAD_LETTERS, PlatformErasure

    db = open_control_database(control_url)
    letters = DeadLetterStore(db)
    bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}")
    window = open_idempotency_window(f"sqlite:///{tmp_path / 'dedupe.db'}", window_s=60)
    platform = PlatformErasure(bus, letters, window)
    letters.put("features", Record(0, 1, "u-7", "signal", b"mine", 1), "e", 3)
    letters.put("archive", Record(1, 2, "u-8", "signal", b"u-7 and u-8", 1), "e", 3)
    letters.put("archive", Record(1, 3, "u-9", "signal", b"u-9", 1), "e", 3)
    events = [
        ErasureEvent(
            request_id=f"r-{user}",
            user_id=user,
            requested_at=datetime.now(UTC),
            participants=(DEAD_LETTERS,),
        )
        for user in ("u-7", "u-8")
    ]
    confirmations = platform.erase_many(events)
    assert [(c.rows_removed, c.rows_remaining) for c in confirmations] == [(2, 0), (1, 0)]
    assert {"scan", "scrub"} <= set(confirmations[0].evidence)
    assert dead_letter_counts(letters, ["u-7", "u-8", "u-9"]) == {"u-7": 0, "u-8": 0, "u-9": 1}
    window.close()
    bus.close()
    db.close()
