"""The consumer runtime on every bus backend: commit after apply, dead letters, erasure order."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from headwater.bus import Bus, Message, Record, open_bus
from headwater.bus.dead_letters import DeadLetterStore
from headwater.control import open_control_database
from headwater.erasure.events import Confirmation, ErasureEvent, encode_erasure
from headwater.errors import BackendUnavailableError, MissingDeletionHandlerError
from headwater.runtime import ConsumerRuntime
from tests.bus._counting import CountingHandler


@pytest.fixture
def bus(bus_url: str) -> Iterator[Bus]:
    b = open_bus(bus_url)
    yield b
    b.close()


@pytest.fixture
def dead_letters(tmp_path: Path) -> Iterator[DeadLetterStore]:
    db = open_control_database(f"sqlite:///{tmp_path / 'control.db'}")
    yield DeadLetterStore(db)
    db.close()


def events(n: int, users: int = 10, start: int = 0) -> list[Message]:
    return [Message(f"u{i % users}", f"e{i}".encode()) for i in range(start, start + n)]


def run_until_idle(runtime: ConsumerRuntime, expect: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    done = 0
    while done < expect and time.monotonic() < deadline:
        done += runtime.step()


def test_commits_after_apply_and_resumes(bus: Bus, tmp_path: Path) -> None:
    handler = CountingHandler(str(tmp_path / "store.db"))
    bus.publish(events(300))
    runtime = ConsumerRuntime(bus, "g", handler, batch_size=100)
    run_until_idle(runtime, 300)
    runtime.close()
    assert sum(handler.counts().values()) == 300
    assert sum(p.lag_events for p in bus.lag("g")) == 0
    bus.publish(events(50, start=300))
    again = ConsumerRuntime(bus, "g", handler, batch_size=100)
    run_until_idle(again, 50)
    again.close()
    assert sum(handler.counts().values()) == 350
    handler.close()


def test_poison_record_goes_to_dead_letters(
    bus: Bus, tmp_path: Path, dead_letters: DeadLetterStore
) -> None:
    handler = CountingHandler(str(tmp_path / "store.db"), poison=b"e7")
    bus.publish(events(20))
    runtime = ConsumerRuntime(
        bus, "g", handler, dead_letters=dead_letters, max_attempts=3, backoff=(0.001, 0.01)
    )
    run_until_idle(runtime, 20)
    runtime.close()
    assert runtime.stats.dead_lettered == 1
    assert handler.seen() == {f"e{i}" for i in range(20)} - {"e7"}
    # The poison record was tried alone exactly max_attempts times.
    alone = [c for c in handler.calls if c == ("handle", [b"e7"])]
    assert len(alone) == 3
    (letter,) = dead_letters.list("g")
    assert letter.record.value == b"e7"
    assert "cannot apply" in letter.error
    assert letter.attempts == 3
    assert sum(p.lag_events for p in bus.lag("g")) == 0, "the consumer moved past it"

    # Fixed handler: replay the dead letter through the bus.
    handler.poison = None
    bus.publish([Message(letter.record.key, letter.record.value, letter.record.kind)])
    dead_letters.mark_replayed(letter)
    again = ConsumerRuntime(bus, "g", handler, dead_letters=dead_letters)
    run_until_idle(again, 1)
    again.close()
    assert "e7" in handler.seen()
    assert dead_letters.count("g") == 0
    handler.close()


class FlakyStore(CountingHandler):
    def __init__(self, path: str, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    def handle(self, records: Sequence[Record]) -> None:
        if self.failures:
            self.failures -= 1
            raise BackendUnavailableError("store restarting")
        super().handle(records)


def test_unavailable_store_is_waited_for_not_dead_lettered(
    bus: Bus, tmp_path: Path, dead_letters: DeadLetterStore
) -> None:
    handler = FlakyStore(str(tmp_path / "store.db"), failures=4)
    bus.publish(events(30))
    runtime = ConsumerRuntime(bus, "g", handler, dead_letters=dead_letters, backoff=(0.001, 0.01))
    run_until_idle(runtime, 30)
    runtime.close()
    assert dead_letters.count() == 0
    assert len(handler.seen()) == 30
    assert runtime.stats.unavailable_waits == 4
    handler.close()


def test_stop_while_store_is_down_commits_nothing(bus: Bus, tmp_path: Path) -> None:
    handler = FlakyStore(str(tmp_path / "store.db"), failures=10**9)
    bus.publish(events(10))
    runtime = ConsumerRuntime(bus, "g", handler, backoff=(0.01, 0.05))
    worker = threading.Thread(target=runtime.run, kwargs={"install_signal_handlers": False})
    worker.start()
    time.sleep(1.0)
    runtime.stop()
    worker.join(10)
    assert not worker.is_alive()
    assert sum(p.lag_events for p in bus.lag("g")) == 10


def test_consumer_without_deletion_handler_refuses_to_start(bus: Bus) -> None:
    class NoErase:
        name = "no-erase"

        def handle(self, records: Sequence[Record]) -> None:
            pass

    with pytest.raises(MissingDeletionHandlerError, match="erase"):
        ConsumerRuntime(bus, "g", NoErase())  # type: ignore[arg-type]


def test_erasure_is_applied_in_order_with_signals(bus: Bus, tmp_path: Path) -> None:
    handler = CountingHandler(str(tmp_path / "store.db"))
    confirmations = []
    erasure = ErasureEvent(request_id="r1", user_id="u1", requested_at=datetime.now(UTC))
    bus.publish(
        [
            Message("u1", b"a"),
            Message("u1", b"b"),
            Message("u1", encode_erasure(erasure), kind="erasure"),
            Message("u1", b"c"),
        ]
    )
    runtime = ConsumerRuntime(bus, "g", handler, on_confirmation=confirmations.append)
    run_until_idle(runtime, 4)
    runtime.close()
    # A backend's poll may return a run of signals in more than one batch (a
    # NATS fetch returns what has arrived); the order is what is guaranteed.
    runs: list[tuple[str, list[bytes]]] = []
    for call, values in handler.calls:
        if runs and runs[-1][0] == call == "handle":
            runs[-1][1].extend(values)
        else:
            runs.append((call, list(values)))
    assert runs == [("handle", [b"a", b"b"]), ("erase", [b"u1"]), ("handle", [b"c"])]
    assert handler.counts() == {"u1": 1}
    assert [c.request_id for c in confirmations] == ["r1"]
    handler.close()


class ManyEraser(CountingHandler):
    """Takes a run of erasures at once; fails the run when told to."""

    fail_runs = False

    def erase_many(self, events: Sequence[ErasureEvent]) -> list[Confirmation]:
        self.calls.append(("erase_many", [e.user_id.encode() for e in events]))
        if self.fail_runs:
            raise ValueError("the run fails")
        return [c for e in events for c in self.erase(e)]


def _erasures(*users: str) -> list[Message]:
    return [
        Message(
            u,
            encode_erasure(
                ErasureEvent(request_id=f"r-{u}", user_id=u, requested_at=datetime.now(UTC))
            ),
            kind="erasure",
        )
        for u in users
    ]


@pytest.mark.parametrize("fail_runs", [False, True])
def test_a_run_of_erasures_goes_to_erase_many_in_order_with_signals(
    tmp_path: Path, fail_runs: bool
) -> None:
    bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}?partitions=1")  # one order for all keys
    handler = ManyEraser(str(tmp_path / "store.db"))
    handler.fail_runs = fail_runs
    confirmations: list[Confirmation] = []
    bus.publish(
        [
            Message("u1", b"a"),
            Message("u3", b"c"),
            *_erasures("u1", "u2", "u3"),
            Message("u2", b"b"),
            *_erasures("u4"),
        ]
    )
    runtime = ConsumerRuntime(bus, "g", handler, on_confirmation=confirmations.append)
    run_until_idle(runtime, 7)
    runtime.close()
    bus.close()
    run = ("erase_many", [b"u1", b"u2", b"u3"])
    each = [("erase", [b"u1"]), ("erase", [b"u2"]), ("erase", [b"u3"])]
    # A failed run is erased again one event at a time; a successful one erases inside.
    assert handler.calls == [
        ("handle", [b"a", b"c"]),
        run,
        *each,
        ("handle", [b"b"]),
        ("erase", [b"u4"]),  # a run of one: the plain erase
    ]
    assert [c.request_id for c in confirmations] == ["r-u1", "r-u2", "r-u3", "r-u4"]
    assert handler.counts() == {"u2": 1}  # u2's signal came after its erasure
    assert runtime.stats.erasures == 4
    handler.close()


def test_linger_spaces_small_batches_and_a_stop_does_not_wait_for_it(tmp_path: Path) -> None:
    # Records trickle in (one every 10 ms): with linger_s the runtime reads them in a few
    # larger batches, at least linger_s apart, and still applies every one of them.
    bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}")
    handler = CountingHandler(str(tmp_path / "store.db"))
    seen_at: list[float] = []
    handle = handler.handle

    def timed(records: Sequence[Record]) -> None:
        seen_at.append(time.monotonic())
        handle(records)

    handler.handle = timed  # type: ignore[method-assign]
    runtime = ConsumerRuntime(bus, "g", handler, batch_size=1000, poll_timeout=0.05, linger_s=0.3)
    thread = threading.Thread(target=runtime.run, kwargs={"install_signal_handlers": False})
    thread.start()
    for i in range(100):
        bus.publish(events(1, start=i))
        time.sleep(0.01)
    deadline = time.monotonic() + 10
    while sum(handler.counts().values()) < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    runtime.linger_s = 30.0  # the next wait is long: stop must cut it short
    time.sleep(0.4)
    stopped = time.monotonic()
    runtime.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - stopped < 2.0
    assert sum(handler.counts().values()) == 100
    gaps = [b - a for a, b in itertools.pairwise(seen_at)]
    assert gaps
    # Polls start linger_s apart; a handle call starts once its poll returned, which
    # takes up to poll_timeout (0.05 s) and a little more on a loaded machine.
    assert min(gaps) >= 0.3 - 0.05 - 0.04
    assert len(seen_at) <= 10  # about 1.5 s of trickle in batches at least 0.3 s apart
    handler.close()


class ErasuresOnly(CountingHandler):
    """Acts on erasure events alone: the signals are another store's."""

    kinds = frozenset({"erasure"})


def test_a_handler_of_erasures_alone_is_never_handed_a_signal_and_its_group_keeps_up(
    bus: Bus, tmp_path: Path
) -> None:
    handler = ErasuresOnly(str(tmp_path / "store.db"))
    confirmations: list[Confirmation] = []
    bus.publish([*events(200), *_erasures("u1", "u7"), *events(200, start=200)])
    runtime = ConsumerRuntime(bus, "g", handler, on_confirmation=confirmations.append)
    deadline = time.monotonic() + 30
    while sum(p.lag_events for p in bus.lag("g")) and time.monotonic() < deadline:
        runtime.step()
    runtime.close()
    assert sum(p.lag_events for p in bus.lag("g")) == 0  # committed past every signal
    assert sorted(c.request_id for c in confirmations) == ["r-u1", "r-u7"]
    assert [name for name, _ in handler.calls] == ["erase", "erase"]
    handler.close()
