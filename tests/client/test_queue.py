"""The producer SDK's queue against a scripted gateway: what stays queued, what
overflows, what is final, and that an event keeps its id from one attempt to the next.

The gateway here is httpx's MockTransport (the network is what cannot run in-process
on demand); the same behaviours against a real gateway: test_never_drops.py.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from headwater.client import HeadwaterClient, RejectedEvent, RetryPolicy
from headwater.errors import PublishFailedError, PublishUnauthorizedError
from tests._gateway_fixtures import problem_answer

FAST = RetryPolicy(max_retries=2, base_s=0.001, cap_s=0.02)


class Gateway:
    """A scripted gateway: down (connection refused) until ``up`` is set; rejects the
    events whose user_id is ``bad``; records every id of every attempt."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.attempts: list[list[str]] = []
        self.accepted: Counter[str] = Counter()
        self.status: int | None = None  # answer every request with this, when set
        self.down_after: int | None = None  # refuse connections after this many requests

    def __call__(self, request: httpx.Request) -> httpx.Response:
        events = msgspec.json.decode(request.content)
        self.attempts.append([e["event_id"] for e in events])
        cut = self.down_after is not None and len(self.attempts) > self.down_after
        if cut or not self.up.is_set():
            raise httpx.ConnectError("refused", request=request)
        if self.status is not None:
            return problem_answer(self.status, "scripted", "scripted")
        results: list[dict[str, Any]] = []
        for i, e in enumerate(events):
            if e.get("user_id") == "bad":
                results.append(
                    {"index": i, "status": "rejected", "event_id": e["event_id"], "rule": "r"}
                )
            else:
                self.accepted[e["event_id"]] += 1
                results.append({"index": i, "status": "accepted", "event_id": e["event_id"]})
        rejected = sum(r["status"] == "rejected" for r in results)
        doc = {
            "accepted": len(events) - rejected,
            "duplicates": 0,
            "rejected": rejected,
            "results": results,
        }
        return httpx.Response(207 if rejected else 200, content=msgspec.json.encode(doc))

    def sent(self) -> Counter[str]:
        """How many times each id was attempted."""
        return Counter(i for ids in self.attempts for i in ids)


def ok_body(n: int) -> bytes:
    results = [{"index": i, "status": "accepted"} for i in range(n)]
    return msgspec.json.encode({"accepted": n, "duplicates": 0, "rejected": 0, "results": results})


def client_for(gw: Gateway, **options: Any) -> HeadwaterClient:
    options.setdefault("retry", FAST)
    options.setdefault("flush_interval", 60)
    return HeadwaterClient("http://gw", "k", transport=httpx.MockTransport(gw), **options)


def wait_until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_failed_flush_carries_its_events_which_stay_queued() -> None:
    gw = Gateway()
    client = client_for(gw)
    ids = [client.track("view", f"u{i}", "web") for i in range(3)]
    with pytest.raises(PublishFailedError, match="gave up after 3 attempts") as failed:
        client.flush()
    assert failed.value.event_ids == ids
    assert [e["user_id"] for e in failed.value.events] == ["u0", "u1", "u2"]
    assert client.queued == 3
    gw.up.set()
    report = client.flush()
    client.close()
    assert report.accepted == 3
    assert gw.accepted == dict.fromkeys(ids, 1)
    # Every attempt, failed or not, carried the same ids: retries never mint new ones.
    assert all(attempt == ids for attempt in gw.attempts)


def test_the_error_carries_the_refusals_seen_before_the_failure() -> None:
    gw = Gateway()
    gw.up.set()
    client = client_for(gw, batch_size=2)
    gw.down_after = 1  # the first batch is answered, then the network fails
    events = [
        {"event_type": "view", "user_id": user, "surface": "web", "event_id": f"e-{user}"}
        for user in ("bad", "u1", "u2")
    ]
    # Queued and sent under the send lock: the background thread cannot take the first
    # (full) batch and answer it outside this call, as it could between track and flush.
    with pytest.raises(PublishFailedError) as failed:
        client.publish(events)
    assert (failed.value.accepted, len(failed.value.rejected)) == (1, 1)
    assert failed.value.rejected[0].event["user_id"] == "bad"
    assert failed.value.event_ids == ["e-u2"]
    gw.down_after = None
    client.close()


def test_an_automatic_flush_while_the_gateway_is_down_loses_nothing() -> None:
    gw = Gateway()
    errors: list[PublishFailedError] = []
    client = client_for(gw, batch_size=100, on_error=errors.append)
    ids = [client.track("view", f"u{i}", "web") for i in range(1_250)]  # 12 full batches
    wait_until(lambda: len(errors) == 1)  # the background thread tried, failed, said so
    assert client.queued == 1_250
    assert errors[0].event_ids[:100] == ids[:100]
    gw.up.set()
    wait_until(lambda: client.queued < 100)  # full batches go without a flush
    client.close()
    assert gw.accepted == dict.fromkeys(ids, 1)


def test_overflow_reports_exactly_the_events_not_kept() -> None:
    gw = Gateway()
    overflowed: list[list[dict[str, Any]]] = []
    client = client_for(gw, max_queue_events=100, on_overflow=overflowed.append)
    ids = [client.track("view", f"u{i}", "web") for i in range(130)]
    dropped = [e["event_id"] for batch in overflowed for e in batch]
    assert dropped == ids[100:]
    assert client.overflowed == 30
    assert [e["event_id"] for e in client.pending()] == ids[:100]
    gw.up.set()
    client.close()
    assert sorted(gw.accepted) == sorted(ids[:100])
    assert not set(gw.sent()) & set(dropped), "an overflowed event is never sent"


def test_a_failed_batch_back_in_the_queue_never_overflows() -> None:
    gw = Gateway()
    overflowed: list[list[dict[str, Any]]] = []
    client = client_for(gw, batch_size=10, max_queue_events=10, on_overflow=overflowed.append)
    ids = [client.track("view", f"u{i}", "web") for i in range(10)]
    with pytest.raises(PublishFailedError):
        client.flush()  # in flight, then requeued: still the same ten, none lost
    assert [e["event_id"] for e in client.pending()] == ids
    assert not overflowed
    gw.up.set()
    client.close()
    assert sorted(gw.accepted) == sorted(ids)


def test_a_rejected_event_is_final_the_rest_of_its_batch_accepted() -> None:
    gw = Gateway()
    gw.up.set()
    seen: list[RejectedEvent] = []
    client = client_for(gw, batch_size=5, flush_interval=0.02, on_rejection=seen.append)
    bad = client.track("view", "bad", "web")
    good = [client.track("view", f"u{i}", "web") for i in range(4)]
    wait_until(lambda: client.queued == 0)
    time.sleep(0.2)  # ten more flush intervals: nothing is sent again
    client.close()
    assert [r.event_id for r in seen] == [bad]
    assert gw.sent()[bad] == 1
    assert gw.accepted == dict.fromkeys(good, 1)
    assert len(client.totals.rejected) == 1


def test_retry_after_is_honoured() -> None:
    stamps: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        stamps.append(time.monotonic())
        if len(stamps) == 1:
            return problem_answer(429, "rate-limited", "slow", **{"Retry-After": "0.3"})
        return httpx.Response(200, content=ok_body(1))

    client = HeadwaterClient(
        "http://gw", "k", retry=FAST, flush_interval=60, transport=httpx.MockTransport(handler)
    )
    report = client.publish([{"event_id": "e1"}])
    client.close()
    assert report.retries == 1
    assert stamps[1] - stamps[0] >= 0.3


def test_a_body_too_large_is_split_and_only_the_culprit_refused() -> None:
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        events = msgspec.json.decode(request.content)
        sizes.append(len(events))
        if any(e["user_id"] == "huge" for e in events):
            return problem_answer(413, "too-large", "body over 1048576 bytes")
        return httpx.Response(200, content=ok_body(len(events)))

    seen: list[RejectedEvent] = []
    client = HeadwaterClient(
        "http://gw",
        "k",
        flush_interval=60,
        on_rejection=seen.append,
        transport=httpx.MockTransport(handler),
    )
    for i in range(8):
        client.track("view", "huge" if i == 5 else f"u{i}", "web")
    report = client.flush()
    client.close()
    assert (report.accepted, [r.rule for r in seen]) == (7, ["http_413"])
    assert seen[0].message == "too-large: body over 1048576 bytes"
    assert seen[0].event["user_id"] == "huge"
    assert sizes[0] == 8


def test_a_refused_key_keeps_the_events_and_says_so() -> None:
    gw = Gateway()
    gw.up.set()
    gw.status = 401
    errors: list[PublishFailedError] = []
    client = client_for(gw, batch_size=2, on_error=errors.append)
    ids = [client.track("view", f"u{i}", "web") for i in range(2)]
    wait_until(lambda: bool(errors))
    assert isinstance(errors[0], PublishUnauthorizedError)
    assert errors[0].event_ids == ids
    assert client.queued == 2
    gw.status = None  # the key was fixed on the gateway
    report = client.flush()
    client.close()
    assert report.accepted == 2


def test_a_user_callback_that_raises_does_not_stop_the_sender() -> None:
    gw = Gateway()
    gw.up.set()

    def broken(rejected: RejectedEvent) -> None:
        raise ValueError("bug in the caller's callback")

    client = client_for(gw, batch_size=2, flush_interval=0.02, on_rejection=broken)
    client.track("view", "bad", "web")
    client.track("view", "u1", "web")
    later = client.track("view", "u2", "web")
    wait_until(lambda: client.queued == 0)
    client.close()
    assert gw.accepted[later] == 1


def test_an_event_published_without_an_id_gets_one_kept_through_retries() -> None:
    gw = Gateway()
    client = client_for(gw)
    with pytest.raises(PublishFailedError) as failed:
        client.publish([{"event_type": "view", "user_id": "u1", "surface": "web"}])
    (given,) = failed.value.event_ids
    gw.up.set()
    client.close()
    assert len(given) == 26
    assert gw.sent() == {given: 4}, "three failed attempts and the last, one id"


def test_publish_reports_its_own_events_while_the_sender_is_eager() -> None:
    gw = Gateway()
    gw.up.set()
    client = client_for(gw, batch_size=1, flush_interval=0.001)
    reports = [client.publish([{"event_id": f"e{i}"}]) for i in range(200)]
    client.close()
    assert [r.accepted for r in reports] == [1] * 200


def test_an_unreadable_success_is_sent_again() -> None:
    bodies = iter([b"<html>a proxy</html>", ok_body(1)])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=next(bodies))

    client = HeadwaterClient(
        "http://gw", "k", retry=FAST, flush_interval=60, transport=httpx.MockTransport(handler)
    )
    report = client.publish([{"event_id": "e1"}])
    client.close()
    assert (report.accepted, report.retries) == (1, 1)


def test_a_sent_event_leaves_no_byte_in_the_spool_files(tmp_path: Path) -> None:
    """Removed events are zeroed in their pages, and an empty spool's write-ahead log is
    truncated: the producer's disk keeps nothing of what was sent."""
    from headwater.client._spool import Spool

    spool = Spool(tmp_path / "events.spool")
    events = [{"event_id": f"e{i}", "user_id": "spooled-user-7x", "payload": {}} for i in range(50)]
    spool.add(events)
    spool.remove([e["event_id"] for e in events[:25]])
    spool.remove([e["event_id"] for e in events[25:]])
    files = [tmp_path / "events.spool", tmp_path / "events.spool-wal"]
    assert all(b"spooled-user-7x" not in f.read_bytes() for f in files if f.exists())
    spool.close()
    assert b"spooled-user-7x" not in (tmp_path / "events.spool").read_bytes()
