"""The SQLite bus's compiled writer of stored batches (``bus._batch.write_batches``) gives
the bytes, the partitions and the offsets of the Python path beside it, for every size
MessagePack distinguishes."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from headwater.bus import Message
from headwater.bus import sqlite as sqlite_bus
from headwater.bus.base import KIND_SIGNAL, Record, RecordBatch, partition_for
from headwater.bus.sqlite import DECODE_BATCH, _write_batches_py
from tests.conftest import IN_CI

if RecordBatch is not None:
    from headwater.bus._batch import write_batches


@pytest.fixture(autouse=True)
def _built() -> None:
    """Skip where the compiled writer is not built; fail under CI, which builds it."""
    if RecordBatch is None:
        if IN_CI:
            pytest.fail("headwater.bus._batch is not built; CI requires it", pytrace=False)
        pytest.skip("headwater.bus._batch is not built here")


#: Keys and kinds: empty, non-ASCII, each side of the fixstr and str8 limits.
texts = st.sampled_from(
    ["", "u1", "ü", "signal", "erasure", "x" * 31, "x" * 32, "é" * 20, "y" * 255, "z" * 256]
)
#: Value sizes each side of MessagePack's bin8 and bin16 limits.
values = st.sampled_from([0, 1, 255, 256, 65_535, 65_536]).map(lambda n: b"\x07" * n)
#: Integers each side of every MessagePack integer form, negative ones too.
edges = [0, 127, 128, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**63 - 1]
edges += [-1, -32, -33, -128, -129, -32_768, -32_769, -(2**31), -(2**31) - 1, -(2**63)]
numbers = st.sampled_from(edges) | st.integers(-(2**63), 2**63 - 1)
messages = st.builds(Message, key=texts, value=values, kind=texts)


def _ends(partitions: int, start: int = 0) -> dict[int, int]:
    return {part: start + 1_000 * part for part in range(partitions)}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    group=st.lists(messages, max_size=20),
    partitions=st.integers(1, 16),
    start=numbers,
    ts=numbers,
)
def test_stored_batches_are_written_byte_for_byte_as_msgspec_writes_them(
    group: list[Message], partitions: int, start: int, ts: int
) -> None:
    # Offsets past 2**63 - 1 cannot be stored; the bus's never come near.
    ends = _ends(partitions, min(start, 2**63 - 1 - len(group) - 1_000 * partitions))
    assert write_batches(group, partitions, KIND_SIGNAL, ends, ts) == _write_batches_py(
        group, partitions, KIND_SIGNAL, ends, ts
    )


@pytest.mark.parametrize("n", [15, 16, 65_535, 65_536])
def test_the_array_header_of_a_long_batch_is_msgspecs(n: int) -> None:
    group = [Message("u1", b"v") for _ in range(n)]
    ends = _ends(8)
    rows, _ = write_batches(group, 8, KIND_SIGNAL, ends, 1_700_000_000_000)
    assert (rows, []) == _write_batches_py(group, 8, KIND_SIGNAL, ends, 1_700_000_000_000)
    ((part, first, last, _, written),) = rows
    assert (first, last) == (ends[part], ends[part] + n - 1)
    assert DECODE_BATCH(written)[-1] == Record(
        part, ends[part] + n - 1, "u1", KIND_SIGNAL, b"v", 1_700_000_000_000
    )


def test_each_partition_gets_its_messages_in_order_numbered_from_its_end() -> None:
    group = [Message(f"u{i % 11}", f"v{i}".encode()) for i in range(200)]
    group[5] = Message("u5", b"erase", kind="erasure")
    ends = _ends(4, 7)
    rows, rare = write_batches(group, 4, KIND_SIGNAL, ends, 1)
    assert [row[0] for row in rows] == sorted({partition_for(m.key, 4) for m in group})
    for part, first, last, _, written in rows:
        mine = [m for m in group if partition_for(m.key, 4) == part]
        records = DECODE_BATCH(written)
        assert [(r.key, r.kind, r.value) for r in records] == [
            (m.key, m.kind, m.value) for m in mine
        ]
        assert [r.offset for r in records] == list(range(ends[part], ends[part] + len(mine)))
        assert (first, last) == (ends[part], ends[part] + len(mine) - 1)
    assert rare == [(partition_for("u5", 4), group[5])]


def test_a_value_given_as_a_bytearray_is_written_as_bytes() -> None:
    group = [Message("u1", bytearray(b"abc"))]  # type: ignore[arg-type]
    assert write_batches(group, 2, KIND_SIGNAL, _ends(2), 1) == _write_batches_py(
        group, 2, KIND_SIGNAL, _ends(2), 1
    )


def test_nothing_to_write_writes_no_batch() -> None:
    assert write_batches([], 8, KIND_SIGNAL, _ends(8), 1) == ([], [])
    assert write_batches((), 8, KIND_SIGNAL, {}, 1) == ([], [])


def test_a_key_that_is_not_text_is_refused() -> None:
    with pytest.raises(TypeError):
        write_batches([Message(7, b"v")], 8, KIND_SIGNAL, _ends(8), 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="partitions"):
        write_batches([Message("u1", b"v")], 0, KIND_SIGNAL, {}, 1)


def test_the_bus_publishes_through_the_compiled_writer() -> None:
    assert sqlite_bus._COMPILED_WRITER
    assert sqlite_bus._write_batches is write_batches
