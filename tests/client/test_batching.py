"""How the producer SDK cuts queued events into bodies: each event encoded once, when it
was queued, and every body the one the event-by-event cut makes."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from headwater.client._batching import batches
from headwater.client._queue import EventQueue


def _cut_one_by_one(
    events: list[dict[str, Any]], max_events: int, max_bytes: int
) -> list[tuple[list[dict[str, Any]], bytes]]:
    """The specification: events taken in order, a body closed when the next event would
    take it past ``max_events`` or ``max_bytes`` (an event alone is sent whatever its size)."""
    out: list[tuple[list[dict[str, Any]], bytes]] = []
    current: list[dict[str, Any]] = []
    encoded: list[bytes] = []
    size = 2
    for event in events:
        data = msgspec.json.encode(event)
        if current and (len(current) >= max_events or size + len(data) + 1 > max_bytes):
            out.append((current, b"[" + b",".join(encoded) + b"]"))
            current, encoded, size = [], [], 2
        current.append(event)
        encoded.append(data)
        size += len(data) + 1
    if current:
        out.append((current, b"[" + b",".join(encoded) + b"]"))
    return out


@given(
    pads=st.lists(st.integers(0, 60), min_size=1, max_size=30),
    max_events=st.integers(1, 40),
    max_bytes=st.integers(1, 1_500),
    near_all=st.none() | st.integers(-3, 3),
    queued=st.booleans(),
)
def test_bodies_are_those_of_the_event_by_event_cut(
    pads: list[int], max_events: int, max_bytes: int, near_all: int | None, queued: bool
) -> None:
    events = [{"event_id": f"e{i}", "pad": "x" * pad} for i, pad in enumerate(pads)]
    if near_all is not None:  # all the events at most, within a few bytes of the bound
        max_events = max(max_events, len(events))
        max_bytes = max(1, 2 + sum(len(msgspec.json.encode(e)) + 1 for e in events) + near_all)
    encoded = [msgspec.json.encode(e) for e in events] if queued else None
    got = list(batches(events, max_events, max_bytes, encoded))
    assert got == _cut_one_by_one(events, max_events, max_bytes)


def test_a_body_carries_each_event_as_it_was_queued() -> None:
    queue = EventQueue(10, None)
    event = {"event_id": "e1", "user_id": "u1"}
    queue.put([event])
    event["user_id"] = "changed after it was queued"
    taken = queue.take(10)
    assert queue.encoded(taken) == [b'{"event_id":"e1","user_id":"u1"}']
    queue.done(taken)
    # Gone from the queue, its JSON too; a dict queued again is encoded again.
    queue.put([event])
    again = queue.take(10)
    assert queue.encoded(again) == [msgspec.json.encode(event)]
