"""The producer queue and its spool as a state machine: whatever the order of tracks,
sends, failures, answers and crashes, no event is lost, none is kept twice, the bound
holds and the order is the order of tracking."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from headwater.client._queue import EventQueue
from headwater.client._spool import Spool

BOUND = 12


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="hw-spool-"))
        self.spool = Spool(self.dir / "events.spool")
        self.queue = EventQueue(BOUND, self.spool)
        self.ids = (f"e{i:05d}" for i in itertools.count())
        # The model: ids waiting (in order), batches in flight, ids answered for, the
        # ids ever kept, and how many overflowed.
        self.waiting: list[str] = []
        self.flying: list[list[dict[str, Any]]] = []
        self.answered: set[str] = set()
        self.kept: list[str] = []
        self.overflowed = 0

    @rule(n=st.integers(1, 6))
    def track(self, n: int) -> None:
        events = [{"event_id": next(self.ids)} for _ in range(n)]
        room = max(0, BOUND - len(self.waiting) - sum(map(len, self.flying)))
        over = self.queue.put(events)
        assert [e["event_id"] for e in over] == [e["event_id"] for e in events[room:]]
        kept = [e["event_id"] for e in events[:room]]
        self.waiting += kept
        self.kept += kept
        self.overflowed += len(over)

    @precondition(lambda self: self.waiting)
    @rule(limit=st.integers(1, 5))
    def take(self, limit: int) -> None:
        batch = self.queue.take(limit)
        assert [e["event_id"] for e in batch] == self.waiting[:limit]
        del self.waiting[:limit]
        self.flying.append(batch)

    @precondition(lambda self: self.flying)
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        batch = self.flying.pop(data.draw(st.integers(0, len(self.flying) - 1)))
        self.queue.requeue(batch)
        self.waiting[:0] = [e["event_id"] for e in batch]

    @precondition(lambda self: self.flying)
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        batch = self.flying.pop(data.draw(st.integers(0, len(self.flying) - 1)))
        self.queue.done(batch)
        self.answered.update(e["event_id"] for e in batch)

    @rule()
    def crash(self) -> None:
        # The process dies: memory is gone, the spool is not. A new client restores it.
        self.spool.close()
        self.spool = Spool(self.dir / "events.spool")
        self.queue = EventQueue(BOUND, self.spool)
        self.queue.restore()
        self.waiting = [i for i in self.kept if i not in self.answered]
        self.flying = []
        self.overflowed = 0

    @invariant()
    def nothing_lost_nothing_twice(self) -> None:
        in_flight = [e["event_id"] for batch in self.flying for e in batch]
        assert [e["event_id"] for e in self.queue.snapshot()] == self.waiting
        assert len(self.queue) == len(self.waiting) + len(in_flight)
        spooled = {e["event_id"] for e in self.spool.load()}
        assert spooled == set(self.waiting) | set(in_flight)
        assert set(self.kept) == spooled | self.answered
        assert self.queue.overflowed == self.overflowed

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.dir, ignore_errors=True)


TestQueueMachine = QueueMachine.TestCase
TestQueueMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
