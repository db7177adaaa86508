"""The SQLite bus's read-back for the erasure verification: a page of batches at a time."""

from __future__ import annotations

from pathlib import Path

from headwater._idsearch import Needles
from headwater.bus import Message
from headwater.bus._sqlite_keys import _PAGE
from headwater.bus.sqlite import SqliteBus


def test_pages_that_hold_nothing_are_skipped_with_one_search_and_a_hit_is_found(
    tmp_path: Path,
) -> None:
    bus = SqliteBus(f"sqlite:///{tmp_path / 'bus.db'}?partitions=1")
    batches = 2 * _PAGE + 10
    for i in range(batches):
        value = b"the victim's signal" if i == 2 * _PAGE + 3 else f"signal {i}".encode()
        # Two batches whose ends would spell the id if joined without a separator.
        if i == 5:
            value = b"a signal ending in vic"
        if i == 6:
            value = b"tim starts this one"
        bus.publish([Message("someone", value)])
    needles = Needles(["victim"])
    searched: list[int] = []

    def holds(data: bytes) -> bool:
        searched.append(len(data))
        return needles.any_in(data)

    found = bus.search_partitions({0}, holds, lambda r: True)
    assert [r.value for r in found] == [b"the victim's signal"]
    # Three pages searched whole; only the one that holds the id batch by batch.
    assert len(searched) == 3 + (batches - 2 * _PAGE)
    assert bus.search_partitions({0}, Needles(["victimless"]).any_in, lambda r: True) == []
    bus.close()
