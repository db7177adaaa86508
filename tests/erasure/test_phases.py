"""The order a consumer applies a poll in: signals first, erasures in one run, key order kept."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.bus.base import KIND_ERASURE, KIND_SIGNAL, Record
from headwater.runtime.loop import _phases


@st.composite
def polls(draw: st.DrawFn) -> list[Record]:
    """Records of up to three partitions, a few keys each, erasures among the signals."""
    n = draw(st.integers(0, 40))
    next_offset = [0, 0, 0]
    out = []
    for _ in range(n):
        key = draw(st.sampled_from(["a", "b", "c", "d", "e"]))
        partition = "abcde".index(key) % 3
        kind = draw(st.sampled_from([KIND_SIGNAL, KIND_SIGNAL, KIND_SIGNAL, KIND_ERASURE]))
        out.append(Record(partition, next_offset[partition], key, kind, b"", 0))
        next_offset[partition] += 1
    return out


def _applied(records: list[Record]) -> list[Record]:
    order: list[Record] = []
    for phase in _phases(records):
        order += [r for r in phase if r.kind != KIND_ERASURE]
        order += [r for r in phase if r.kind == KIND_ERASURE]
    return order


@settings(max_examples=400)
@given(polls())
def test_every_record_once_and_each_key_in_bus_order(records: list[Record]) -> None:
    applied = _applied(records)
    assert sorted(applied, key=lambda r: (r.partition, r.offset)) == sorted(
        records, key=lambda r: (r.partition, r.offset)
    )
    for key in "abcde":
        assert [r for r in applied if r.key == key] == [r for r in records if r.key == key]
    for partition in range(3):
        signals = [r for r in records if r.partition == partition and r.kind != KIND_ERASURE]
        assert [r for r in applied if r in signals] == signals


def test_erasures_between_other_users_signals_form_one_run() -> None:
    records = [
        Record(0, 0, "a", KIND_SIGNAL, b"", 0),
        Record(0, 1, "b", KIND_ERASURE, b"", 0),
        Record(0, 2, "a", KIND_SIGNAL, b"", 0),
        Record(0, 3, "c", KIND_ERASURE, b"", 0),
        Record(0, 4, "a", KIND_SIGNAL, b"", 0),
    ]
    phases = list(_phases(records))
    assert len(phases) == 1
    assert [r.offset for r in _applied(records)] == [0, 2, 4, 1, 3]


def test_a_signal_after_its_users_erasure_waits_for_it_with_the_rest_of_its_partition() -> None:
    records = [
        Record(0, 0, "a", KIND_ERASURE, b"", 0),
        Record(1, 0, "b", KIND_SIGNAL, b"", 0),
        Record(0, 1, "a", KIND_SIGNAL, b"", 0),  # the erased user comes back
        Record(0, 2, "c", KIND_SIGNAL, b"", 0),  # same partition: waits too
        Record(1, 1, "b", KIND_SIGNAL, b"", 0),
    ]
    phases = [[(r.partition, r.offset) for r in p] for p in _phases(records)]
    assert phases == [[(0, 0), (1, 0), (1, 1)], [(0, 1), (0, 2)]]
