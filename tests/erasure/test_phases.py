"""The order a consumer applies a poll in: signals first, erasures in one run, key order
kept; a follower erases the requests its leader has erased without waiting for the rest."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.bus import Message, open_bus
from headwater.bus.base import KIND_ERASURE, KIND_SIGNAL, Record
from headwater.erasure.events import Confirmation, ErasureEvent, encode_erasure
from headwater.erasure.ledger import Participant
from headwater.errors import WaitingForError
from headwater.runtime import Consumer, ConsumerRuntime
from headwater.runtime.erasure_runs import poll_phases


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
    for phase in poll_phases(records):
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
    phases = list(poll_phases(records))
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
    phases = [[(r.partition, r.offset) for r in p] for p in poll_phases(records)]
    assert phases == [[(0, 0), (1, 0), (1, 1)], [(0, 1), (0, 2)]]


class Follower(Consumer):
    """A store that can erase a request only once another store has (like the batch)."""

    name = "follower"

    def __init__(self) -> None:
        self.leader_done: set[str] = set()
        self.confirmed: list[tuple[str, float]] = []

    def participants(self) -> list[Participant]:
        return [Participant(self.name, "memory", 60.0)]

    def handle(self, records: Sequence[Record]) -> None:
        del records

    def ready(self, events: Sequence[ErasureEvent]) -> set[int]:
        return {i for i, e in enumerate(events) if e.request_id in self.leader_done}

    def erase(self, event: ErasureEvent) -> list[Confirmation]:
        if event.request_id not in self.leader_done:
            raise WaitingForError(f"{event.request_id}: the leader has not erased it yet")
        return [
            Confirmation(
                request_id=event.request_id,
                participant=self.name,
                store="memory",
                method="delete",
                rows_removed=0,
                rows_remaining=0,
                verified_at=datetime.now(UTC),
            )
        ]


class _Stepping(NamedTuple):
    """A follower's runtime taking one step in a thread over a run of erasure events."""

    follower: Follower
    runtime: ConsumerRuntime
    thread: threading.Thread


@contextmanager
def _following(
    tmp_path: Path, users: Sequence[str], leader_done: Sequence[str]
) -> Iterator[_Stepping]:
    """One erasure request per user (``er-0``, ``er-1``, ...) on a bus of one partition,
    the leader done with ``leader_done``; the follower steps once until it has confirmed
    two of them (or 10 s passed)."""
    bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}?partitions=1")
    now = datetime.now(UTC)
    bus.publish(
        [
            Message(
                user,
                encode_erasure(ErasureEvent(request_id=f"er-{i}", user_id=user, requested_at=now)),
                KIND_ERASURE,
            )
            for i, user in enumerate(users)
        ]
    )
    follower = Follower()
    follower.leader_done.update(leader_done)
    runtime = ConsumerRuntime(
        bus,
        "follower",
        follower,
        poll_timeout=0.01,
        on_confirmation=lambda c: follower.confirmed.append((c.request_id, time.monotonic())),
    )
    stepping = threading.Thread(target=runtime.step)
    stepping.start()
    deadline = time.monotonic() + 10
    while len(follower.confirmed) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield _Stepping(follower, runtime, stepping)
    finally:
        runtime.close()
        bus.close()


def test_a_followers_first_requests_do_not_wait_for_the_last_ones_leader(
    tmp_path: Path,
) -> None:
    ids = [f"er-{i}" for i in range(4)]
    with _following(tmp_path, [f"user-{i}" for i in range(4)], ids[:2]) as (
        follower,
        _,
        stepping,
    ):
        # The two the leader erased are confirmed while the other two still wait for it.
        assert [rid for rid, _ in follower.confirmed] == ids[:2]
        released = time.monotonic()
        follower.leader_done.update(ids[2:])
        stepping.join(timeout=10)
        assert not stepping.is_alive()
        assert [rid for rid, _ in follower.confirmed] == ids
        assert all(at >= released for _, at in follower.confirmed[2:])


def test_a_followers_request_does_not_wait_for_an_earlier_ones_leader_but_its_users_does(
    tmp_path: Path,
) -> None:
    """The run's order is the poll's, across partitions; a request the leader has erased
    goes ahead of an earlier one it has not, unless that one is of the same user."""
    users = ["user-0", "user-1", "user-0", "user-3"]
    with _following(tmp_path, users, ["er-1", "er-2", "er-3"]) as (follower, _, stepping):
        time.sleep(0.2)
        # er-2 is user-0's second request: it waits behind er-0 although its leader is done.
        assert [rid for rid, _ in follower.confirmed] == ["er-1", "er-3"]
        follower.leader_done.add("er-0")
        stepping.join(timeout=10)
        assert not stepping.is_alive()
        assert [rid for rid, _ in follower.confirmed] == ["er-1", "er-3", "er-0", "er-2"]
