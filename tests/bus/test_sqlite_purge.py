"""The SQLite bus's purges: found by a byte search, the write lock held only to rewrite."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import headwater.bus._sqlite_keys as log_keys
from headwater._idsearch import sqlite_copies
from headwater.bus import Message
from headwater.bus.base import KIND_ERASURE, KIND_SIGNAL, Record
from headwater.bus.sqlite import SqliteBus
from headwater.errors import BusError


def test_purge_recent_looks_only_at_batches_since_a_time(tmp_path: Path) -> None:
    bus = SqliteBus(f"sqlite:///{tmp_path / 'bus.db'}?partitions=2")
    bus.publish([Message("ann", b"old"), Message("bob", b"b1")])
    time.sleep(0.02)
    since = int(time.time() * 1000)
    time.sleep(0.02)
    bus.publish([Message("ann", b"new"), Message("bob", b"b2")])
    assert bus.purge_recent({"ann": None}, since) == {"ann": 1}
    assert bus.count_key("ann") == 1  # the older record is outside the range
    assert bus.purge_recent({"ann": None}, int(time.time() * 1000) + 60_000) == {"ann": 0}
    assert bus.purge_key("ann") == 1
    assert bus.count_key("ann") == 0
    assert bus.count_key("bob") == 2
    bus.close()


def test_a_key_inside_another_key_or_a_value_is_not_purged(tmp_path: Path) -> None:
    # The byte search only picks candidate batches: records are still matched by key.
    bus = SqliteBus(f"sqlite:///{tmp_path / 'bus.db'}?partitions=1")
    bus.publish([Message("u1", b"x"), Message("u12", b"u1 in a value"), Message("u1", b"y")])
    assert bus.purge_key("u1", lambda r: r.value == b"x") == 1
    assert bus.count_key("u1") == 1
    assert bus.count_key("u12") == 1
    bus.close()


def test_purge_keys_removes_many_keys_in_one_pass_with_counts_per_key(tmp_path: Path) -> None:
    # More keys than one scan looks for at once, several keys in each batch: each
    # record is counted once, for its own key, and only where its predicate says so.
    bus = SqliteBus(f"sqlite:///{tmp_path / 'bus.db'}?partitions=2")
    keys = [f"user-{i}" for i in range(250)]
    for round_ in range(3):
        bus.publish([Message(k, f"{k}/{round_}".encode()) for k in keys])
    bus.publish([Message("kept", b"x")])
    wheres = dict.fromkeys(keys[:200])
    wheres["user-0"] = lambda r: r.value.endswith(b"/0")  # only the first record
    assert bus.count_keys(wheres) == {k: 1 if k == "user-0" else 3 for k in wheres}
    removed = bus.purge_keys(wheres)
    assert removed == {k: 1 if k == "user-0" else 3 for k in wheres}
    assert bus.count_keys(dict.fromkeys(keys)) == {
        k: 2 if k == "user-0" else 0 if k in wheres else 3 for k in keys
    }
    assert bus.count_key("kept") == 1
    bus.close()


def _decoding(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The batches the SQLite bus decodes from now on (their record counts)."""
    decoded: list[int] = []
    decode = log_keys.DECODE_BATCH

    def counting(blob: bytes) -> list[Record]:
        records = decode(blob)
        decoded.append(len(records))
        return records

    monkeypatch.setattr(log_keys, "DECODE_BATCH", counting)
    return decoded


def test_erasure_events_are_purged_by_the_index_reading_only_their_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = SqliteBus(f"sqlite:///{tmp_path / 'bus.db'}?partitions=1")
    for round_ in range(50):
        bus.publish([Message(u, f"{u} signal {round_}".encode()) for u in ("ann", "bob")])
        if round_ in (10, 40):
            bus.publish([Message("ann", f"erase ann {round_}".encode(), KIND_ERASURE)])
    bus.publish([Message("bob", b"erase bob", KIND_ERASURE)])
    decoded = _decoding(monkeypatch)
    assert bus.purge_indexed(KIND_ERASURE, {"ann": None}) == {"ann": 2}
    # The two one-record batches that held them, not the 50 batches of signals.
    assert decoded == [1, 1]
    assert bus.count_key("ann", lambda r: r.kind == KIND_SIGNAL) == 50
    assert bus.count_key("ann", lambda r: r.kind == KIND_ERASURE) == 0
    assert bus.count_key("bob") == 51
    assert bus.purge_indexed(KIND_ERASURE, {"ann": None}) == {"ann": 0}
    with pytest.raises(BusError):
        bus.purge_indexed(KIND_SIGNAL, {"ann": None})
    bus.close()


def test_an_erasure_event_a_purge_keeps_stays_indexed(tmp_path: Path) -> None:
    # Two requests for one user: the one still open keeps its event, found later.
    bus = SqliteBus(f"sqlite:///{tmp_path / 'bus.db'}?partitions=2")
    bus.publish([Message("ann", b"request 1", KIND_ERASURE), Message("bob", b"signal")])
    bus.publish([Message("ann", b"request 2", KIND_ERASURE)])
    assert bus.purge_indexed(KIND_ERASURE, {"ann": lambda r: r.value == b"request 1"}) == {"ann": 1}
    assert bus.purge_indexed(KIND_ERASURE, {"ann": None, "bob": None}) == {"ann": 1, "bob": 0}
    assert bus.count_key("ann") == 0
    assert bus.count_key("bob") == 1
    bus.close()


def test_the_retention_drops_the_index_of_the_batches_it_drops(tmp_path: Path) -> None:
    bus = SqliteBus(f"sqlite:///{tmp_path / 'bus.db'}?partitions=1", retention_s=0.05)
    bus.publish([Message("ann", b"erase ann", KIND_ERASURE)])
    time.sleep(0.1)
    bus.publish([Message("bob", b"erase bob", KIND_ERASURE)])  # drops ann's batch
    indexed = bus._db.read("SELECT key FROM hw_bus_rare", ())
    assert [key for (key,) in indexed] == ["bob"]
    time.sleep(0.1)
    assert bus.enforce_retention() == 1
    assert bus._db.read("SELECT key FROM hw_bus_rare", ()) == []
    bus.close()


def test_the_index_keeps_no_copy_of_a_key_once_its_erasure_events_are_purged(
    tmp_path: Path,
) -> None:
    # The events went first (a purge of the whole key): the index still named the user.
    main = tmp_path / "bus.db"
    bus = SqliteBus(f"sqlite:///{main}?partitions=1")
    bus.publish([Message("ann-7f3", b"erase", KIND_ERASURE), Message("bob", b"signal")])
    assert bus.purge_keys({"ann-7f3": None}) == {"ann-7f3": 1}
    assert bus.purge_indexed(KIND_ERASURE, {"ann-7f3": None}) == {"ann-7f3": 0}
    assert sqlite_copies(main, ["ann-7f3"]) == 0
    bus.close()
