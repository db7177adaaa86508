"""A poll's records read in place from the SQLite bus's stored batches (``bus._batch``):
a ``RecordBatch`` is the sequence of ``Record`` that msgspec decodes from the same bytes,
and what the runtime asks of a poll (positions, partitions, kinds, keys) it answers as
the list would."""

from __future__ import annotations

import tempfile
from pathlib import Path

import hypothesis.strategies as st
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings

from headwater.bus import Message
from headwater.bus import sqlite as sqlite_bus
from headwater.bus.base import (
    Record,
    RecordBatch,
    committed_positions,
    in_partitions,
    joined,
    keys_of,
    kinds_of,
)
from headwater.bus.sqlite import DECODE_BATCH, ENCODE_BATCH, SqliteBus

pytestmark = pytest.mark.skipif(RecordBatch is None, reason="bus._batch is not built")

#: Keys and kinds as a producer may send them: empty, non-ASCII, longer than a fixstr.
texts = st.sampled_from(["", "u1", "ü", "user-" + "x" * 40, "signal", "erasure", "é" * 20])


@st.composite
def stored_batches(draw: st.DrawFn) -> list[tuple[int, bytes]]:
    """Stored batches as the SQLite bus writes them: ``(first_offset, bytes)``, offsets
    increasing per partition; values of every size a MessagePack bin header has."""
    out = []
    offsets = [0, 0, 0]
    for _ in range(draw(st.integers(0, 6))):
        partition = draw(st.integers(0, 2))
        size = draw(st.integers(0, 5))
        first = offsets[partition]
        records = [
            Record(
                partition,
                first + i,
                draw(texts),
                draw(texts),
                draw(st.sampled_from([b"", b"v", b"x" * 300, b"y" * 70_000])),
                draw(st.integers(0, 2**62)),
            )
            for i in range(size)
        ]
        offsets[partition] += size + draw(st.integers(0, 2))  # a purge leaves gaps
        out.append((first, ENCODE_BATCH(records)))
    return out


def _read(
    stored: list[tuple[int, bytes]], skip: int, most: int
) -> tuple[RecordBatch, list[Record]]:
    """The batch read by ``RecordBatch`` and, as ``SqliteConsumer`` read it before, by
    msgspec: from ``skip`` past each stored batch's first offset, ``most`` per batch."""
    batch = RecordBatch(Record)
    expected: list[Record] = []
    for first, blob in stored:
        added = batch.add(blob, first + skip, most, DECODE_BATCH)
        kept = [r for r in DECODE_BATCH(blob) if r.offset >= first + skip][:most]
        assert added == len(kept)
        expected += kept
    return batch, expected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stored=stored_batches(), skip=st.integers(0, 3), most=st.integers(0, 6))
def test_a_record_batch_is_the_records_msgspec_decodes(
    stored: list[tuple[int, bytes]], skip: int, most: int
) -> None:
    batch, expected = _read(stored, skip, most)
    assert len(batch) == len(expected)
    assert bool(batch) == bool(expected)
    assert committed_positions(batch) == committed_positions(expected)
    assert batch.first_offsets() == {
        p: min(r.offset for r in expected if r.partition == p) for p in batch.partitions()
    }
    assert batch.partitions() == {r.partition for r in expected}
    assert kinds_of(batch) == kinds_of(expected)
    assert keys_of(batch) == keys_of(expected)
    assert batch.values() == [r.value for r in expected]
    assert in_partitions(batch, {0, 1, 2}) is batch
    assert in_partitions(batch, {1}) == [r for r in expected if r.partition == 1]
    # Records made on demand: by index (negative too), by slice, by iteration.
    if expected:
        assert batch[-1] == expected[-1]
        assert batch.last_offset() == expected[-1].offset
    assert batch[1:4] == expected[1:4]
    assert list(batch) == expected
    assert batch == expected


@given(stored=stored_batches())
def test_batches_joined_are_their_records_in_order(stored: list[tuple[int, bytes]]) -> None:
    polls = []
    expected: list[Record] = []
    for first, blob in stored:
        batch = RecordBatch(Record)
        batch.add(blob, first, 10, DECODE_BATCH)
        polls.append(batch)
        expected += DECODE_BATCH(blob)
    if not polls:
        return
    together = joined(polls)
    assert type(together) is RecordBatch
    assert list(together) == expected
    assert committed_positions(together) == committed_positions(expected)


def test_a_batch_the_reader_does_not_take_is_read_by_msgspec() -> None:
    # A negative partition: msgspec's ``int`` takes it, the reader does not.
    odd = [Record(-1, 0, "u", "signal", b"v", 5), Record(-1, 1, "ü", "signal", b"w", 6)]
    batch = RecordBatch(Record)
    assert batch.add(ENCODE_BATCH(odd), 1, 10, DECODE_BATCH) == 1
    assert list(batch) == odd[1:]
    assert batch.keys() == {"ü"}


def test_a_malformed_stored_batch_gets_msgspecs_error() -> None:
    batch = RecordBatch(Record)
    with pytest.raises(msgspec.DecodeError):
        batch.add(msgspec.msgpack.encode([[0, 1, "u"]]), 0, 10, DECODE_BATCH)
    with pytest.raises(msgspec.DecodeError):
        batch.add(b"\x91\x96\x00\x00\xa1u", 0, 10, DECODE_BATCH)  # ends early
    # A key that is not UTF-8: refused as msgspec refuses it.
    blob = ENCODE_BATCH([Record(0, 0, "uu", "signal", b"v", 5)]).replace(b"\xa2uu", b"\xa2\xffu")
    with pytest.raises(msgspec.DecodeError):
        batch.add(blob, 0, 10, DECODE_BATCH)
    assert len(batch) == 0


def test_a_batch_takes_no_more_once_a_record_was_made() -> None:
    batch = RecordBatch(Record)
    blob = ENCODE_BATCH([Record(0, 0, "u", "signal", b"v", 5)])
    batch.add(blob, 0, 10, DECODE_BATCH)
    assert batch[0].value == b"v"
    with pytest.raises(RuntimeError, match="can take no more"):
        batch.add(blob, 0, 10, DECODE_BATCH)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sends=st.lists(
        st.lists(
            st.tuples(st.sampled_from(["a", "b", "c", "ü"]), st.binary(max_size=40)), max_size=8
        ),
        max_size=8,
    ),
    purged=st.sets(st.sampled_from(["a", "b", "c", "ü"]), max_size=2),
    size=st.integers(1, 9),
)
def test_the_sqlite_consumer_polls_the_same_records_either_way(
    sends: list[list[tuple[str, bytes]]], purged: set[str], size: int
) -> None:
    """Polls read in place, and polls decoded by msgspec (the path without the compiled
    module): the same records, poll by poll, over purged and partly read batches."""
    with tempfile.TemporaryDirectory() as tmp:
        bus = SqliteBus(f"sqlite:///{Path(tmp) / 'bus.db'}?partitions=3")
        for send in sends:
            bus.publish([Message(key, value) for key, value in send])
        for key in purged:
            bus.purge_key(key)
        polls: dict[bool, list[list[Record]]] = {}
        for compiled in (True, False):
            with pytest.MonkeyPatch.context() as patch:
                if not compiled:
                    patch.setattr(sqlite_bus, "RecordBatch", None)
                member = bus.consumer(f"g{compiled}")
                polls[compiled] = []
                # A poll may come back empty before the end (a stored batch the purge
                # emptied is read past): as many polls as there are offsets, at least.
                for _ in range(sum(len(s) for s in sends) + 3):
                    got = member.poll(size, 0.0)
                    assert (type(got) is RecordBatch) == compiled
                    if got:
                        polls[compiled].append(list(got))
                        member.commit(committed_positions(got))
                member.close()
        assert polls[True] == polls[False]
        assert sum(len(p) for p in polls[True]) == sum(len(s) for s in sends) - sum(
            1 for s in sends for key, _ in s if key in purged
        )
        bus.close()
