"""The producer SDK: batching, retries on 429/503/network errors, no retry on rejections.

What happens to events that cannot be delivered (queue, spool, overflow, background
sending): test_never_drops.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater import wire
from headwater.application import Application
from headwater.client import (
    AsyncHeadwaterClient,
    HeadwaterClient,
    RejectedEvent,
    RetryPolicy,
    new_event_id,
)
from headwater.errors import AuthenticationError, PermissionDeniedError, PublishFailedError
from headwater.gateway.app import create_app
from tests._gateway_fixtures import problem_answer
from tests._live import serve

FAST = RetryPolicy(max_retries=3, base_s=0.001, cap_s=0.01)


@pytest.fixture
def live(hw: Application) -> Iterator[str]:
    with serve(create_app(hw)) as url:
        yield url


def ok_body(n: int) -> bytes:
    return msgspec.json.encode(
        {
            "accepted": n,
            "duplicates": 0,
            "rejected": 0,
            "results": [{"index": i, "status": "accepted"} for i in range(n)],
        }
    )


def test_event_ids_are_unique_and_time_ordered() -> None:
    ids = [new_event_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(i) == 26 for i in ids)


#: Crockford's base32 alphabet, as the ULID specification writes it.
_ULID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _ulid_text(value: int) -> str:
    """A 128-bit value as ``new_event_id`` spells it: the time's 10 characters, then the
    random part's 16."""
    return wire._ms_text(value >> 80 & ((1 << 48) - 1)) + wire._random_text(value)


def _ulid_reference(value: int) -> str:
    """The ULID text spelled out one five-bit group at a time (its specification)."""
    return "".join(_ULID_ALPHABET[(value >> (5 * (25 - k))) & 31] for k in range(26))


@given(st.integers(min_value=0, max_value=(1 << 128) - 1))
def test_the_ulid_text_is_each_five_bit_group_in_crockfords_alphabet(value: int) -> None:
    assert _ulid_text(value) == _ulid_reference(value)


def test_an_event_id_spells_its_millisecond_and_its_random_bits() -> None:
    before = int(time.time() * 1000)
    event_id = new_event_id("web-")
    after = int(time.time() * 1000)
    value = 0
    for char in event_id.removeprefix("web-"):
        value = value * 32 + _ULID_ALPHABET.index(char)
    assert before <= value >> 80 <= after
    assert _ulid_text(value) == event_id.removeprefix("web-")


@given(
    st.integers(min_value=0, max_value=(1 << 48) - 1),
    st.integers(min_value=0, max_value=(1 << 80) - 1),
    st.integers(min_value=1, max_value=3000),
)
def test_a_batch_of_ids_is_each_id_of_its_millisecond_counted_up(
    ms: int, first: int, count: int
) -> None:
    texts = wire._id_texts("web-", ms, first, count)
    assert texts == [
        "web-" + _ulid_reference((ms << 80) | ((first + k) & ((1 << 80) - 1))) for k in range(count)
    ]


def test_batches_of_ids_are_unique_and_ordered_with_single_ids() -> None:
    ids = [*wire.new_event_ids(1500), new_event_id(), *wire.new_event_ids(3000)]
    ids += wire.new_event_ids(0)
    assert len(ids) == len(set(ids)) == 4501
    assert ids == sorted(ids)


def test_end_to_end_with_rejections_reported(live: str, hw: Application) -> None:
    secret, _ = hw.keys.create("web")
    seen: list[RejectedEvent] = []
    with HeadwaterClient(live, secret, batch_size=100, on_rejection=seen.append) as client:
        for i in range(250):
            client.track("view", f"u{i % 10}", "web", item_id=f"i{i}", payload={"dwell_ms": i})
        client.track("view", "u1", "tv", item_id="i1")
        client.flush()
        # Full batches went from the background thread, the rest with the flush.
        assert client.queued == 0
    assert client.totals.accepted == 250
    assert len(seen) == 1
    assert (seen[0].field, seen[0].rule) == ("surface", "surface_not_allowed")
    assert seen[0].event["surface"] == "tv"


def test_async_end_to_end(live: str, hw: Application) -> None:
    secret, _ = hw.keys.create("ios")

    async def main() -> int:
        async with AsyncHeadwaterClient(live, secret) as client:
            for i in range(30):
                await client.track("save", f"u{i}", "ios", item_id="i9", payload={"action": "add"})
            report = await client.flush()
            return report.accepted

    assert asyncio.run(main()) == 30


def test_retries_429_and_503_then_succeeds() -> None:
    answers = iter(
        [
            problem_answer(429, "rate-limited", "slow", **{"Retry-After": "0"}),
            problem_answer(503, "backend-unavailable", "down"),
            httpx.Response(200, content=ok_body(1)),
        ]
    )
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return next(answers)

    client = HeadwaterClient(
        "http://gw", "k", retry=FAST, flush_interval=60, transport=httpx.MockTransport(handler)
    )
    report = client.publish([{"event_id": "e1"}])
    client.close()
    assert (report.accepted, report.retries, len(calls)) == (1, 2, 3)
    assert calls[0].content == calls[2].content, "the whole batch is resent"


def test_network_errors_are_retried_then_give_up() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = HeadwaterClient(
        "http://gw", "k", retry=FAST, flush_interval=60, transport=httpx.MockTransport(handler)
    )
    with pytest.raises(PublishFailedError, match="gave up after 4 attempts") as failed:
        client.publish([{"event_id": "e1"}])
    assert failed.value.event_ids == ["e1"]
    assert client.queued == 1, "the event stays queued"
    with pytest.raises(PublishFailedError, match="1 events stay queued"):
        client.close()


@pytest.mark.parametrize(
    ("status", "kind", "error"),
    [(401, "unauthenticated", AuthenticationError), (403, "forbidden", PermissionDeniedError)],
)
@pytest.mark.parametrize("shape", ["problem", "before problem documents"])
def test_client_errors_are_not_retried(
    status: int, kind: str, error: type[Exception], shape: str
) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if shape == "problem":
            return problem_answer(status, kind, "no such key")
        # A gateway older than the problem documents answered {"error", "message"}.
        return httpx.Response(status, json={"error": kind, "message": "no such key"})

    client = HeadwaterClient(
        "http://gw", "k", retry=FAST, flush_interval=60, transport=httpx.MockTransport(handler)
    )
    with pytest.raises(error, match=f"HTTP {status} {kind}: no such key;") as refused:
        client.publish([{"event_id": "e1"}])
    assert len(calls) == 1
    assert isinstance(refused.value, PublishFailedError)
    assert refused.value.event_ids == ["e1"], "the events are carried, and stay queued"
    with pytest.raises(error):
        client.close()


def test_batches_respect_count_and_bytes() -> None:
    sizes = []

    def handler(request: httpx.Request) -> httpx.Response:
        n = len(msgspec.json.decode(request.content))
        sizes.append((n, len(request.content)))
        return httpx.Response(200, content=ok_body(n))

    client = HeadwaterClient(
        "http://gw",
        "k",
        batch_size=500,
        max_batch_bytes=20_000,
        flush_interval=60,
        transport=httpx.MockTransport(handler),
    )
    events = [
        {"event_id": f"e{i}", "pad": "x" * 100, "timestamp": datetime.now(UTC).isoformat()}
        for i in range(1200)
    ]
    report = client.publish(events)
    client.close()
    assert report.accepted == 1200
    assert all(size <= 20_000 for _, size in sizes)
    assert sum(n for n, _ in sizes) == 1200
