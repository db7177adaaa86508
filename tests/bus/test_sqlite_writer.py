"""The SQLite bus's compiled writer of stored batches (``bus._batch``) gives the bytes and
the partitions of the Python path it replaces, for every size MessagePack distinguishes."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from headwater.bus import Message
from headwater.bus import sqlite as sqlite_bus
from headwater.bus.base import KIND_SIGNAL, Record, RecordBatch
from headwater.bus.sqlite import DECODE_BATCH, _encode_py, _group_py
from tests.conftest import IN_CI

if RecordBatch is not None:
    from headwater.bus._batch import encode_records, group_by_partition


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


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(group=st.lists(messages, max_size=20), part=numbers, start=numbers, ts=numbers)
def test_a_stored_batch_is_written_byte_for_byte_as_msgspec_writes_it(
    group: list[Message], part: int, start: int, ts: int
) -> None:
    # Offsets past 2**63 - 1 cannot be stored; the bus's never come near.
    start = min(start, 2**63 - 1 - len(group))
    assert encode_records(group, part, start, ts) == _encode_py(group, part, start, ts)


@pytest.mark.parametrize("n", [15, 16, 65_535, 65_536])
def test_the_array_header_of_a_long_batch_is_msgspecs(n: int) -> None:
    group = [Message(f"u{i % 7}", b"v") for i in range(n)]
    written = encode_records(group, 3, 1_000, 1_700_000_000_000)
    assert written == _encode_py(group, 3, 1_000, 1_700_000_000_000)
    records = DECODE_BATCH(written)
    assert records[-1] == Record(
        3, 1_000 + n - 1, f"u{(n - 1) % 7}", KIND_SIGNAL, b"v", 1_700_000_000_000
    )


def test_a_value_given_as_a_bytearray_is_written_as_bytes() -> None:
    group = [Message("u1", bytearray(b"abc"))]  # type: ignore[arg-type]
    assert encode_records(group, 0, 0, 1) == _encode_py(group, 0, 0, 1)


@settings(max_examples=200, deadline=None)
@given(group=st.lists(messages, max_size=40), partitions=st.integers(1, 16))
def test_messages_go_to_the_partitions_partition_for_gives(
    group: list[Message], partitions: int
) -> None:
    assert group_by_partition(group, partitions, KIND_SIGNAL) == _group_py(
        group, partitions, KIND_SIGNAL
    )


def test_a_key_that_is_not_text_is_refused() -> None:
    with pytest.raises(TypeError):
        group_by_partition([Message(7, b"v")], 8, KIND_SIGNAL)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="partitions"):
        group_by_partition([Message("u1", b"v")], 0, KIND_SIGNAL)


def test_the_bus_publishes_through_the_compiled_writer() -> None:
    assert sqlite_bus._COMPILED_WRITER
