"""The verification's byte search of SQLite files counts an id wherever SQLite keeps it:
in a column right after another one (SQLite puts nothing between a row's values), in the
write-ahead log and, after a checkpoint, in the database file, on overflow pages, and in
a deleted cell's leftover bytes; never inside a longer id."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater._idsearch import Needles, _count_in_file
from headwater._sqlite import connect, scrub
from headwater._sqlite_pages import database_shape
from headwater.bus import open_bus
from headwater.bus.base import Message
from headwater.bus.dead_letters import DeadLetterStore
from headwater.control import open_control_database
from headwater.dedupe.sqlite import SqliteIdempotencyWindow
from headwater.erasure.checks import sqlite_byte_scan
from headwater.erasure.events import ErasureEvent
from headwater.erasure.verify import Subject
from headwater.features.consumer import FeatureConsumer
from headwater.features.engine import FeatureEngine
from headwater.features.versions import USER_NAMESPACE
from headwater.online.sqlite import SqliteOnlineStore
from headwater.runtime.platform import IDEMPOTENCY_WINDOW, PlatformErasure


def _residue(path: Path, user: str, *event_ids: str) -> dict[str, int]:
    """Per file (by suffix), what the verification finds of the user."""
    check = sqlite_byte_scan(f"sqlite:///{path}")
    _, found = check([Subject(user, "subject", tuple(event_ids))])
    hits = found[user][1]["hits"]
    return {Path(place).name.removeprefix(path.name) or "db": n for place, n in hits.items()}


def _token_search(path: Path, *ids: str) -> int:
    """What a search that counts whole tokens of the files' bytes alone finds."""
    needles = Needles(ids)
    return sum(
        sum(_count_in_file(Path(f"{path}{suffix}"), needles).values())
        for suffix in ("", "-wal", "-shm")
    )


def test_an_idempotency_entry_and_a_feature_row_are_found_in_the_log_then_the_file(
    tmp_path: Path,
) -> None:
    """The window keeps an event id followed by its user id; the online store keeps a
    namespace followed by the user id, in its row and in its key index: each reads as
    one run of id characters."""
    window = SqliteIdempotencyWindow(f"sqlite:///{tmp_path / 'dedupe.db'}", window_s=3600)
    window.claim([("web-abc-1", "u0031550")], "token-1")
    store = SqliteOnlineStore(f"sqlite:///{tmp_path / 'online.db'}")
    store.put("features", {"u0031550": msgspec.msgpack.encode({"n": 1})})
    assert _residue(tmp_path / "dedupe.db", "u0031550", "web-abc-1") == {"-wal": 2}
    assert _residue(tmp_path / "online.db", "u0031550") == {"-wal": 2}
    # What the search found before it read pages: nothing at all.
    assert _token_search(tmp_path / "dedupe.db", "u0031550", "web-abc-1") == 0
    assert _token_search(tmp_path / "online.db", "u0031550") == 0
    store.scrub()
    assert _residue(tmp_path / "online.db", "u0031550") == {"db": 2}
    store.close()
    window.close()


def test_an_id_inside_a_longer_one_is_not_a_copy(tmp_path: Path) -> None:
    window = SqliteIdempotencyWindow(f"sqlite:///{tmp_path / 'dedupe.db'}", window_s=3600)
    window.claim([("web-abc-12", "u0012"), ("web-abc-1x", "v0012")], "token-1")
    store = SqliteOnlineStore(f"sqlite:///{tmp_path / 'online.db'}")
    store.put("features", {"u0012": msgspec.msgpack.encode({"_ids": ["web-abc-12"]})})
    store.scrub()
    assert _residue(tmp_path / "dedupe.db", "u001", "web-abc-1") == {}
    assert _residue(tmp_path / "online.db", "u001", "web-abc-1") == {}
    assert _residue(tmp_path / "dedupe.db", "u0012", "web-abc-12") == {"-wal": 2}
    store.close()
    window.close()


def test_an_id_on_an_overflow_page_is_found(tmp_path: Path) -> None:
    """A feature row too long for its page: its tail, with the event id, is on overflow
    pages."""
    store = SqliteOnlineStore(f"sqlite:///{tmp_path / 'online.db'}")
    padding = [f"i{n:06d}" for n in range(3000)]
    row = msgspec.msgpack.encode({"items": padding, "_ids": ["ev-tail-1"]})
    store.put("features", {"u7": row})
    store.scrub()
    # The user's id in the row and in the key index, the event id on an overflow page.
    assert _residue(tmp_path / "online.db", "u7", "ev-tail-1") == {"db": 3}
    assert _residue(tmp_path / "online.db", "u8", "ev-tail") == {}
    store.close()


def test_a_deleted_rows_leftover_bytes_count_where_nothing_overwrote_them(
    tmp_path: Path,
) -> None:
    """Without ``secure_delete`` (which every headwater store sets) a deleted cell's
    bytes stay on its page, but for its first four, which now link the free space: its
    value is found there, and with ``secure_delete`` nothing is."""
    path = tmp_path / "plain.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA secure_delete=OFF")
    conn.execute("CREATE TABLE t (key TEXT, v INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?, 1000)", [("u5",), ("u6",), ("u55",)])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert _residue(path, "u5") == {"db": 1}
    conn.execute("DELETE FROM t WHERE key = 'u5'")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # Free space now: its payload size, rowid, header size and first serial type were
    # overwritten (the next free block, its size); the value was not.
    assert _residue(path, "u5") == {"db": 1}
    conn.execute("PRAGMA secure_delete=ON")
    conn.execute("DELETE FROM t WHERE key = 'u6'")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert _residue(path, "u6") == {}
    conn.close()


def _cell(*values: str | int) -> bytes:
    """An index b-tree cell as SQLite writes it (payload size, then the record: header
    size, serial types, values), texts and 8-byte integers only, all under 128 bytes."""
    types = bytes(13 + 2 * len(v.encode()) if isinstance(v, str) else 6 for v in values)
    body = b"".join(v.encode() if isinstance(v, str) else v.to_bytes(8, "big") for v in values)
    record = bytes([len(types) + 1]) + types + body
    return bytes([len(record)]) + record


def _leave_old_copy(path: Path, data: bytes) -> None:
    """Write ``data`` into the unused space of a leaf page of a closed database, as SQLite
    leaves a cell's earlier bytes there when it rebuilds a page."""
    shape = database_shape(path)
    assert shape is not None
    raw = bytearray(path.read_bytes())
    for base in range(shape.page_size, len(raw), shape.page_size):
        if raw[base] in (10, 13):
            free = base + 8 + 2 * int.from_bytes(raw[base + 3 : base + 5], "big")
            content = base + (int.from_bytes(raw[base + 5 : base + 7], "big") or 65536)
            if content - free > len(data) + 16:
                raw[free + 8 : free + 8 + len(data)] = data
                path.write_bytes(bytes(raw))
                return
    raise AssertionError("no leaf page with room")


def test_an_old_copy_an_idempotency_entry_left_in_a_page_is_found_and_rebuilt_away(
    tmp_path: Path,
) -> None:
    """The erased entry's row is deleted and the log truncated, but an earlier copy of
    its cell is still in a page's unused space: the verification finds it, and the
    window's scrub after the resent erasure rebuilds the file (VACUUM), which leaves
    none."""
    url = f"sqlite:///{tmp_path / 'dedupe.db'}"
    window = SqliteIdempotencyWindow(url, window_s=3600)
    window.claim([(f"web-ev-{i}", f"u{i}") for i in range(300)] + [("web-ev-x", "u-gone")], "t")
    window.scrub()
    window.close()
    # Its batch token is 28 characters: the header's last byte is "E", an id character,
    # so the event id is glued on both sides and found by reading the record.
    token = "c_01M8Y3DQ1RABCDEFGHJKMNPQRS"
    _leave_old_copy(tmp_path / "dedupe.db", _cell("web-ev-x", "u-gone", 1_780_000_000_000, token))
    window = SqliteIdempotencyWindow(url, window_s=3600)
    assert window.erase_users(["u-gone"]) == {"u-gone": 1}
    scrub(window._conn)  # what the scrub did before: secure_delete, the log truncated
    assert _residue(tmp_path / "dedupe.db", "u-gone", "web-ev-x") == {"db": 2}
    # A first attempt scrubs only: the verification reads the files.
    assert "old_copies" not in window.scrub()
    # A resent erasure makes sure: the file is searched and rebuilt.
    assert window.erase_users(["u-gone"]) == {"u-gone": 0}
    evidence = window.scrub(erased=["u-gone"])
    assert evidence["old_copies"] == 1
    assert evidence["vacuumed"] is True
    assert evidence["copies_after_vacuum"] == 0
    assert _residue(tmp_path / "dedupe.db", "u-gone", "web-ev-x") == {}
    assert window.count_users([f"u{i}" for i in range(300)]) == {f"u{i}": 1 for i in range(300)}
    window.close()


def _online_store_with_old_copy(
    path: Path, copy: bytes, rows: dict[str, bytes] | None = None
) -> SqliteOnlineStore:
    """An online store of 200 rows and ``rows``, with ``copy`` left in a page's unused
    space, opened again."""
    store = SqliteOnlineStore(f"sqlite:///{path}")
    store.put(USER_NAMESPACE, {f"u{i}": b"\x81\xa1n\x01" for i in range(200)} | (rows or {}))
    store.scrub()
    store.close()
    _leave_old_copy(path, copy)
    return SqliteOnlineStore(f"sqlite:///{path}")


#: A feature row of the erased user: the items viewed and an order id, tokens no other
#: row holds.
_GONE_ROW = msgspec.msgpack.encode(
    {
        "recently_viewed": [["itm-gone-1", "itm-gone-2"], [1_780_000_000_000, 1_780_000_000_001]],
        "last_purchase": [1_780_000_000_000, "itm-gone-1", {"order_id": "ord-gone-7"}],
    }
)


def _bytes_of(path: Path, *values: str) -> dict[str, int]:
    """Plain occurrences of ``values`` in the database file and its log: what an auditor
    scanning the disk counts, with no id rule."""
    data = b"".join(
        Path(f"{path}{suffix}").read_bytes()
        for suffix in ("", "-wal")
        if Path(f"{path}{suffix}").exists()
    )
    return {v: data.count(v.encode()) for v in values if data.count(v.encode())}


def test_a_first_erasure_rebuilds_the_online_store_an_old_copy_without_its_key_is_in(
    tmp_path: Path,
) -> None:
    """Seen in CI: after a completed erasure, an item id only the erased user had viewed
    was still in the online store's file. It was an earlier copy of the user's row in a
    page's free space whose start, the key, SQLite had overwritten: the verification
    searches the user id and event ids and found nothing, and the first attempt, which
    only scrubbed, left it. A first attempt that deleted a row now rebuilds the file."""
    path = tmp_path / "online.db"
    store = _online_store_with_old_copy(path, _GONE_ROW, {"u-gone": _GONE_ROW})
    consumer = FeatureConsumer(store, FeatureEngine(), record_freshness=False)
    event = ErasureEvent(request_id="er_1", user_id="u-gone", requested_at=datetime.now(UTC))
    # The live row and the old copy.
    assert _bytes_of(path, "itm-gone-1", "ord-gone-7") == {"itm-gone-1": 4, "ord-gone-7": 2}
    (confirmation,) = consumer.erase_many([event])
    assert confirmation.rows_removed == 1
    assert _bytes_of(path, "itm-gone-1", "itm-gone-2", "ord-gone-7", "u-gone") == {}
    scrubbed = (confirmation.evidence or {})["scrub"]
    assert scrubbed["vacuumed"] is True  # type: ignore[index]
    assert scrubbed["rebuilt_after_delete"] is True  # type: ignore[index]
    assert store.count(USER_NAMESPACE, [f"u{i}" for i in range(200)]) == 200
    # An erasure that deleted nothing (the user had no row) does not rebuild again.
    (again,) = consumer.erase_many([event])
    assert again.rows_removed == 0
    assert "vacuumed" not in (again.evidence or {})["scrub"]  # type: ignore[operator]
    store.close()


def test_a_delete_owes_a_rebuild_to_the_next_scrub_after_a_crash_or_in_another_process(
    tmp_path: Path,
) -> None:
    """The deletes are counted in the file: a consumer that deleted a row and stopped
    before its scrub (the erasure is then applied again, and finds no row to delete)
    leaves the rebuild owed to the next scrub, whichever process makes it."""
    path = tmp_path / "online.db"
    store = _online_store_with_old_copy(path, _cell(USER_NAMESPACE, "u-gone") + b"\x81\xa1n\x01")
    assert _residue(path, "u-gone") == {"db": 1}
    assert store.delete(USER_NAMESPACE, ["u7"]) == 1
    store.close()  # stopped before its scrub
    other = SqliteOnlineStore(f"sqlite:///{path}")
    assert other.delete(USER_NAMESPACE, ["u7"]) == 0
    evidence = other.scrub(erased=["u7"])
    assert evidence["old_copies"] == 0
    assert evidence["rebuilt_after_delete"] is True
    assert _residue(path, "u-gone") == {}
    # Nothing deleted since: a search, no rebuild.
    again = other.scrub(erased=["u7"])
    assert again["old_copies"] == 0
    assert "vacuumed" not in again
    # An earlier copy of another user's row, whose id starts with this one's: not a copy.
    assert _residue(path, "u-gon") == {}
    other.close()


def test_purges_of_the_sqlite_bus_log_leave_no_byte_of_the_users_purged(tmp_path: Path) -> None:
    """The bus log keeps batches of many users' records; an erasure rewrites the batches
    that hold the user's. Twenty users purged one after the other out of 300 batches of
    5 to 74 records (cells of different sizes, so pages are rebuilt as they are
    rewritten): after each purge, no byte of the file or its log holds any purged user's
    id or items, not even in a page's free space."""
    path = tmp_path / "bus.db"
    bus = open_bus(f"sqlite:///{path}?partitions=2")
    users = [f"usr{n:012x}" for n in range(30)]
    n = 0
    for b in range(300):
        messages = []
        for i in range(5 + b % 70):
            user = users[(b * 7 + i) % len(users)]
            value = {
                "event_id": f"ev-{user}-{n}",
                "user_id": user,
                "item_id": f"itm-{user}-{i % 5}",
            }
            messages.append(
                Message(user, msgspec.json.encode(value | {"pad": "x" * (i * 13 % 200)}))
            )
            n += 1
        bus.publish(messages)
    for k, user in enumerate(users[:20]):
        assert bus.purge_key(user) > 0
        raw = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
        assert [u for u in users[: k + 1] if u.encode() in raw] == []
    assert all(u.encode() in path.read_bytes() for u in users[20:])
    bus.close()


_IDS = st.from_regex(r"k[0-9]{1,3}", fullmatch=True)
_VALUE = st.lists(_IDS, max_size=3).map("".join) | _IDS.map(lambda i: f"<{i}>")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(st.tuples(_VALUE, _VALUE, _VALUE), min_size=1, max_size=400), needle=_IDS)
def test_every_value_that_holds_the_id_as_a_token_is_counted_once(
    tmp_path_factory: object, rows: list[tuple[str, str, str]], needle: str
) -> None:
    """Rows of glued ids (``k1k12``), ids in brackets and lone ids, over as many pages as
    it takes: after a checkpoint the file holds each row once, and the search counts the
    values that hold the id as a token of their own (bounded by the value's ends or by
    other characters), no more, no less."""
    path = Path(str(tmp_path_factory.mktemp("pages"))) / "t.db"  # type: ignore[attr-defined]
    conn = connect(str(path))
    conn.execute("CREATE TABLE t (a TEXT, b TEXT, c BLOB)")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [(a, b, c.encode()) for a, b, c in rows])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    expected = sum(_tokens(value).count(needle) for row in rows for value in row)
    assert sum(_residue(path, needle).values()) == expected
    conn.close()


def _tokens(value: str) -> list[str]:
    """The value's runs of id characters, split where SQLite would not split them: the
    value's own ends and its other characters (here ``<`` and ``>``)."""
    return value.replace("<", " ").replace(">", " ").split()


_Erase = Callable[..., dict[str, object]]


@contextmanager
def _window_with_old_copy(tmp_path: Path, copy: bytes) -> Iterator[_Erase]:
    """A window of 300 entries and the erased user's, with ``copy`` left in a page's
    unused space; ``erase(attempt, rebuild=...)`` sends the platform participant the
    user's erasure and returns its scrub evidence."""
    url = f"sqlite:///{tmp_path / 'dedupe.db'}"
    window = SqliteIdempotencyWindow(url, window_s=3600)
    window.claim([(f"web-ev-{i}", f"u{i}") for i in range(300)] + [("web-ev-x", "u-gone")], "t")
    window.scrub()
    window.close()
    _leave_old_copy(tmp_path / "dedupe.db", copy)
    db = open_control_database(f"sqlite:///{tmp_path / 'control.db'}")
    bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}?partitions=2")
    platform = PlatformErasure(
        bus, DeadLetterStore(db), SqliteIdempotencyWindow(url, window_s=3600)
    )

    def erase(attempt: int, *, rebuild: bool = False) -> dict[str, object]:
        event = ErasureEvent(
            request_id="er_1",
            user_id="u-gone",
            requested_at=datetime.now(UTC),
            attempt=attempt,
            participants=(IDEMPOTENCY_WINDOW,),
            rebuild=rebuild,
        )
        (confirmation,) = platform.erase_many([event])
        return dict((confirmation.evidence or {})["scrub"])  # type: ignore[arg-type]

    try:
        yield erase
    finally:
        bus.close()
        db.close()


def test_a_resent_erasure_rebuilds_the_window_a_first_one_left_an_old_copy_in(
    tmp_path: Path,
) -> None:
    """The platform participant's first attempt scrubs only (cheap under load); the
    verification finds the old copy and the store is sent the erasure again, and that
    attempt searches the window's file and rebuilds it."""
    whole = _cell("web-ev-x", "u-gone", 1_780_000_000_000, "t")
    with _window_with_old_copy(tmp_path, whole) as erase:
        assert "old_copies" not in erase(1)
        assert _residue(tmp_path / "dedupe.db", "u-gone", "web-ev-x") == {"db": 2}
        again = erase(2)
        assert again["old_copies"] == 1
        assert again["vacuumed"] is True
        assert _residue(tmp_path / "dedupe.db", "u-gone", "web-ev-x") == {}


def test_a_store_the_verification_refused_rebuilds_even_when_its_own_search_finds_nothing(
    tmp_path: Path,
) -> None:
    """Seen under load: an old copy of an erased entry whose end SQLite had overwritten
    (the event id whole, the user id cut). The verification searches the request's
    event ids and finds it; the window, sent the erasure again, searched only for the
    user id (it no longer knows the deleted entries' event ids), found nothing, did not
    rebuild, and was refused again, forever. A retry after a refusal now asks the store
    to rebuild its file whatever its own search finds."""
    whole = _cell("web-ev-x", "u-gone", 1_780_000_000_000, "t")
    cut = whole[: whole.index(b"u-go") + 4]  # the rest of the old cell overwritten
    with _window_with_old_copy(tmp_path, cut) as erase:
        erase(1)
        assert _residue(tmp_path / "dedupe.db", "u-gone", "web-ev-x") == {"db": 1}
        assert erase(2)["old_copies"] == 0, "the store's own search: the user id is cut"
        assert _residue(tmp_path / "dedupe.db", "u-gone", "web-ev-x") == {"db": 1}
        again = erase(3, rebuild=True)
        assert again["vacuumed"] is True
        assert again["rebuilt_after_refusal"] is True
        assert _residue(tmp_path / "dedupe.db", "u-gone", "web-ev-x") == {}
    url = f"sqlite:///{tmp_path / 'dedupe.db'}"
    others = SqliteIdempotencyWindow(url, window_s=3600).count_users([f"u{i}" for i in range(300)])
    assert set(others.values()) == {1}, "every other entry stays"
