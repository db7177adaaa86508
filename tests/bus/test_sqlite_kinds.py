"""The SQLite bus's kind member: stored batches without a record of its kinds are read
past undecoded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from headwater.bus import Message
from headwater.bus import sqlite as sqlite_bus
from headwater.bus.sqlite import SqliteBus


def test_batches_without_the_kind_are_not_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = SqliteBus(f"sqlite:///{tmp_path / 'bus.db'}?partitions=1")
    for batch in range(20):
        bus.publish([Message(f"u{i}", f"signal {batch}.{i}".encode()) for i in range(50)])
    # A signal whose value holds the kind's bytes only costs a decode: it is not handed over.
    bus.publish([Message("u1", b"\xa7erasure in a payload")])
    bus.publish([Message("u2", b"e", kind="erasure"), Message("u2", b"after")])
    decoded: list[int] = []
    decode = sqlite_bus.DECODE_BATCH

    def counting(blob: Any) -> Any:
        records = decode(blob)
        decoded.append(len(records))
        return records

    monkeypatch.setattr(sqlite_bus, "DECODE_BATCH", counting)
    member = bus.kind_consumer("erasures", ["erasure"])
    got = member.poll(10_000, 0.5)
    assert [(r.key, r.value) for r in got] == [("u2", b"e")]
    assert member.covered() == {0: 20 * 50 + 3}
    assert decoded == [1, 2]  # the payload's lookalike and the erasure's batch, no signal batch
    member.close()
    bus.close()
