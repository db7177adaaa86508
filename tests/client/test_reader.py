"""The read clients on their own HTTP/1.1 connections, against scripted servers: the
request's exact bytes, reads side by side on connections of their own, and every
failure as BackendUnavailableError. Against a real gateway:
``tests/features/test_end_to_end.py::test_python_read_clients`` and the tests after it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from headwater.client import AsyncFeatureClient, FeatureClient
from headwater.errors import BackendUnavailableError, HeadwaterError
from tests.client.test_http1 import Seen, scripted, sized

FOUND = json.dumps(
    {
        "user_id": "a/b",
        "features": {"counts": {"view": 1}},
        "as_of": "2026-12-06T10:00:00.000Z",
        "age_s": 0.2,
        "stale": False,
        "stale_features": [],
    }
).encode()


def test_a_read_is_a_get_of_the_encoded_id_and_a_batch_a_post_of_json() -> None:
    async def run() -> list[tuple[bytes, bytes]]:
        async with scripted(lambda n, seen: sized(FOUND)) as (url, seen):
            async with AsyncFeatureClient(url + "/base/", "k1") as client:
                assert (await client.get("a/b", ["counts", "window"])).found
            await asyncio.to_thread(_blocking_reads, url + "/base")
            return seen.requests

    requests = asyncio.run(run())
    first = requests[0][0].decode()
    assert first.startswith(
        "GET /base/v1/users/a%2Fb/features?features=counts%2Cwindow HTTP/1.1\r\n"
    )
    assert "Authorization: Bearer k1\r\n" in first
    assert "content-length" not in first.lower()
    assert requests[1][0].decode().startswith("GET /base/v1/users/a%2Fb/features HTTP/1.1")
    batch_head, batch_body = requests[2]
    assert batch_head.decode().startswith("POST /base/v1/features/batch HTTP/1.1\r\n")
    assert "Content-Type: application/json\r\n" in batch_head.decode()
    assert json.loads(batch_body) == {"user_ids": ["a/b", "c"], "features": None}


def _blocking_reads(url: str) -> None:
    with FeatureClient(url, "k1") as client:
        assert client.get("a/b").found
        with pytest.raises(BackendUnavailableError, match="unreadable answer"):
            client.get_many(["a/b", "c"])  # the server answers a single user's body


@pytest.mark.parametrize("kind", ["async", "blocking"])
def test_concurrent_reads_of_one_client_each_have_a_connection(kind: str) -> None:
    """Six reads at once: the server answers none until all six have arrived, so reads
    queued behind one connection would time out. A second round reuses the six."""
    in_flight = 6

    async def run() -> Seen:
        arrived = asyncio.Event()

        async def answer(n: int, seen: Seen) -> bytes:
            if len(seen.requests) % in_flight == 0:
                arrived.set()
            await asyncio.wait_for(arrived.wait(), 5)
            return sized(FOUND)

        async with scripted(answer) as (url, seen):
            if kind == "async":
                async with AsyncFeatureClient(url, "k", timeout=5) as client:
                    for _ in range(2):
                        arrived.clear()
                        got = await asyncio.gather(*(client.get("a/b") for _ in range(in_flight)))
                        assert all(u.found for u in got)
            else:
                with FeatureClient(url, "k", timeout=5) as client:
                    for _ in range(2):
                        arrived.clear()
                        got = await asyncio.gather(
                            *(asyncio.to_thread(client.get, "a/b") for _ in range(in_flight))
                        )
                        assert all(u.found for u in got)
            return seen

    seen = asyncio.run(run())
    assert len(seen.requests) == 2 * in_flight
    assert seen.connections == in_flight


@pytest.mark.parametrize(
    ("answer", "error", "match"),
    [
        (
            sized(b'{"error": "busy"}', status="503 Service Unavailable"),
            BackendUnavailableError,
            "HTTP 503",
        ),
        (sized(b"<html>maintenance</html>"), BackendUnavailableError, "unreadable answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 90\r\n\r\n{", BackendUnavailableError, "no answer"),
        (None, BackendUnavailableError, "no answer"),
        (sized(b'{"error": "not_found"}', status="404 Not Found"), HeadwaterError, "HTTP 404"),
    ],
)
def test_each_failure_of_the_api_is_an_error_of_headwater(
    answer: bytes | None, error: type[Exception], match: str
) -> None:
    async def run() -> None:
        async with scripted(lambda n, seen: answer) as (url, _):
            async with AsyncFeatureClient(url, "k", timeout=1) as client:
                with pytest.raises(error, match=match):
                    await client.get("u1")

            def blocking() -> None:
                with (
                    FeatureClient(url, "k", timeout=1) as client,
                    pytest.raises(error, match=match),
                ):
                    client.get("u1")

            await asyncio.to_thread(blocking)

    asyncio.run(run())


def test_a_transport_failure_through_httpx_is_unavailable_too() -> None:
    """With a transport given (or a proxy named by the environment) the clients read
    through httpx; its exceptions do not reach the caller."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with (
        FeatureClient("http://api", "k", transport=httpx.MockTransport(refuse)) as client,
        pytest.raises(BackendUnavailableError, match="no answer: ConnectError: refused"),
    ):
        client.get("u1")

    async def run() -> None:
        async with AsyncFeatureClient(
            "http://api", "k", transport=httpx.MockTransport(refuse)
        ) as client:
            with pytest.raises(BackendUnavailableError, match="no answer: ConnectError"):
                await client.get_many(["u1"])

    asyncio.run(run())


async def _found_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app that answers every read with ``FOUND``."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": FOUND})


def test_an_async_client_reads_in_one_event_loop_after_another() -> None:
    """Reads that wait for a connection (one allowed) in two ``asyncio.run`` in turn,
    the client closed at the end of each: the wait belongs to each loop, not to the
    first one, and a read after ``aclose`` opens a new connection."""
    from tests._live import serve

    async def read(client: AsyncFeatureClient) -> None:
        got = await asyncio.gather(*(client.get("a/b") for _ in range(3)))
        assert all(u.found for u in got)
        await client.aclose()

    with serve(_found_app) as url:  # type: ignore[arg-type]
        client = AsyncFeatureClient(url, "k", max_connections=1)
        asyncio.run(read(client))
        asyncio.run(read(client))


def test_a_read_in_flight_when_the_client_closes_closes_its_connection() -> None:
    """``close`` while a thread reads: that read ends, and its connection is closed,
    not kept for a client that was closed."""
    import threading

    async def run() -> Seen:
        release = asyncio.Event()

        async def answer(n: int, seen: Seen) -> bytes:
            await asyncio.wait_for(release.wait(), 5)
            return sized(FOUND)

        async with scripted(answer) as (url, seen):
            client = FeatureClient(url, "k", timeout=5)
            reading = threading.Thread(target=client.get, args=("a/b",))
            reading.start()
            while not seen.requests:
                await asyncio.sleep(0.01)
            client.close()
            release.set()
            await asyncio.to_thread(reading.join, 5)
            assert client._http._idle == []  # type: ignore[union-attr]
        return seen

    assert len(asyncio.run(run()).requests) == 1
