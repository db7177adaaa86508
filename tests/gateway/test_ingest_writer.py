"""The ingest writer: the sends waiting together share one claim, one durable bus write
and one confirmation; a failure fails each of them and leaves no claim in a retry's
way; a hedged copy in the same group publishes nothing twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from headwater.bus import open_bus
from headwater.bus.base import Bus, Message
from headwater.contract.signal import encode_signal, make_signal
from headwater.dedupe import open_idempotency_window
from headwater.dedupe.base import Claim, IdempotencyWindow
from headwater.errors import BusError
from headwater.ingest.writer import IngestWriter, Send
from tests._gateway_fixtures import ids_on_bus

_NOW = datetime.now(UTC)


class _Counting:
    """A window or bus that records each call (and can be held or made to fail)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, Any]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.fail: dict[str, BaseException] = {}

    def _call(self, name: str, *args: Any) -> Any:
        self.calls.append((name, args))
        self.hold.wait(10)
        if name in self.fail:
            raise self.fail[name]
        return getattr(self.inner, name)(*args)

    def claim_many(self, sends: Sequence[tuple[Sequence[tuple[str, str]], str]]) -> list[Claim]:
        return self._call("claim_many", sends)  # type: ignore[no-any-return]

    def confirm_many(self, tokens: Sequence[str]) -> None:
        self._call("confirm_many", tokens)

    def release(self, token: str, event_ids: Sequence[str]) -> None:
        self._call("release", token, event_ids)

    def publish(self, messages: Sequence[Message]) -> None:
        self._call("publish", messages)

    def named(self, name: str) -> list[Any]:
        return [args for n, args in self.calls if n == name]


class _Parts(NamedTuple):
    """A writer over a counting window and bus, and the real ones behind them."""

    writer: IngestWriter
    window: _Counting
    bus: _Counting
    real_window: IdempotencyWindow
    real_bus: Bus


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[_Parts]:
    real_window = open_idempotency_window(f"sqlite:///{tmp_path / 'dedupe.db'}", window_s=3600)
    real_bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}")
    window, bus = _Counting(real_window), _Counting(real_bus)
    writer = IngestWriter(bus, window)  # type: ignore[arg-type]
    yield _Parts(writer, window, bus, real_window, real_bus)
    writer.close()
    real_window.close()
    real_bus.close()


def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def _send(ids: Sequence[str], token: str, *, claimed: bool = False) -> Send:
    messages, entries = [], []
    for n, event_id in enumerate(ids):
        user = f"u{n % 3}"
        signal = make_signal(
            event_id=event_id, event_type="view", user_id=user, surface="web", timestamp=_NOW
        )
        messages.append(Message(user, encode_signal(signal)))
        entries.append((event_id, user))
    return Send(messages, entries, token, claimed=claimed)


def test_sends_waiting_together_share_one_claim_one_write_and_one_confirmation(
    parts: _Parts,
) -> None:
    writer, window, bus, real_window, real_bus = parts
    bus.hold.clear()  # the first send's write waits: the next ones queue behind it
    first = writer.submit(_send(["f0"], "t-first"))
    _until(lambda: bool(bus.named("publish")))
    later = [writer.submit(_send([f"s{k}-{i}" for i in range(50)], f"t{k}")) for k in range(6)]
    bus.hold.set()
    claims = [f.result(10) for f in (first, *later)]
    assert [len(c.mine) for c in claims] == [1] + [50] * 6
    # Two groups: the first send alone, then the six that waited, in one of each step.
    assert [len(sends) for (sends,) in window.named("claim_many")] == [1, 6]
    assert [len(messages) for (messages,) in bus.named("publish")] == [1, 300]
    assert [list(tokens) for (tokens,) in window.named("confirm_many")] == [
        ["t-first"],
        [f"t{k}" for k in range(6)],
    ]
    every = ["f0"] + [f"s{k}-{i}" for k in range(6) for i in range(50)]
    assert ids_on_bus(real_bus) == sorted(every)
    assert real_window.seen(every) == set(every)


def test_a_hedged_copy_in_the_same_group_publishes_nothing_twice(
    parts: _Parts,
) -> None:
    writer, window, _, real_window, real_bus = parts
    ids = [f"h{i}" for i in range(20)]
    window.hold.clear()  # both copies wait for the same claim
    a = writer.submit(_send(["x"], "t-x"))
    _until(lambda: bool(window.named("claim_many")))
    first, copy = writer.submit(_send(ids, "t-a")), writer.submit(_send(ids, "t-b"))
    window.hold.set()
    a.result(10)
    mine, held = first.result(10), copy.result(10)
    assert [len(sends) for (sends,) in window.named("claim_many")] == [1, 2]
    assert mine.mine == set(ids)
    assert not held.mine
    assert {p.token for p in held.pending.values()} == {"t-a"}
    assert ids_on_bus(real_bus) == sorted(["x", *ids])
    # The copy's caller then settles: the first copy confirmed, so each is a duplicate.
    assert real_window.claim([(i, "u0") for i in ids], "t-b2").done == set(ids)


def test_a_failed_bus_write_fails_every_send_and_leaves_no_claim_in_a_retrys_way(
    parts: _Parts,
) -> None:
    writer, window, bus, _, real_bus = parts
    bus.fail["publish"] = BusError("disk full")
    window.hold.clear()
    futures = [writer.submit(_send([f"p{k}-{i}" for i in range(5)], f"t{k}")) for k in range(3)]
    window.hold.set()
    for f in futures:
        with pytest.raises(BusError, match="disk full"):
            f.result(10)
    assert not window.named("confirm_many")
    released = {token: set(ids) for token, ids in window.named("release")}
    assert released == {f"t{k}": {f"p{k}-{i}" for i in range(5)} for k in range(3)}
    del bus.fail["publish"]
    # The producer's retry claims every id at once (no lease to wait out).
    retry = writer.write(_send([f"p{k}-{i}" for k in range(3) for i in range(5)], "t-retry"))
    assert len(retry.mine) == 15
    assert len(ids_on_bus(real_bus)) == 15


def test_a_failed_claim_fails_the_group_and_publishes_nothing(
    parts: _Parts,
) -> None:
    writer, window, bus, _, real_bus = parts
    window.fail["claim_many"] = OSError("window unreachable")
    with pytest.raises(OSError, match="window unreachable"):
        writer.write(_send(["c0", "c1"], "t-c"))
    assert not bus.named("publish")
    del window.fail["claim_many"]
    assert writer.write(_send(["c0", "c1"], "t-again")).mine == {"c0", "c1"}
    assert ids_on_bus(real_bus) == ["c0", "c1"]


def test_a_send_already_claimed_is_published_and_confirmed_without_a_claim(
    parts: _Parts,
) -> None:
    """What a send took over while settling is claimed under its new token already."""
    writer, window, _, real_window, real_bus = parts
    real_window.claim([("k0", "u0"), ("k1", "u1")], "t-took")
    claim = writer.write(_send(["k0", "k1"], "t-took", claimed=True))
    assert claim.mine == {"k0", "k1"}
    assert not window.named("claim_many")
    assert ids_on_bus(real_bus) == ["k0", "k1"]
    assert real_window.seen(["k0", "k1"]) == {"k0", "k1"}


def test_a_send_of_messages_without_their_ids_is_refused() -> None:
    with pytest.raises(ValueError, match="2 messages for 1 entries"):
        Send([Message("u", b"a"), Message("u", b"b")], [("e", "u")], "t")
