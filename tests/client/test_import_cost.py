"""The asyncio producer client's cost per request: no search of the import path.

httpx's connection pool asks which async library runs it on every request, by
``import sniffio``. Without sniffio installed that import fails each time after a
search of every directory on ``sys.path``: under a producer's load it was about a
sixth of the client's CPU (bench/bench_freshness.py, py-spy). headwater depends on
sniffio so that the import is a lookup in ``sys.modules``.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import sys
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.machinery import ModuleSpec
from types import ModuleType

import pytest

from headwater.client import AsyncHeadwaterClient


class _Answer(BaseHTTPRequestHandler):
    """A gateway that accepts every batch (the client's answer shape)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"accepted": 2, "duplicates": 0, "results": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class _Searches(importlib.abc.MetaPathFinder):
    """Counts the searches of the import path for each module name."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        self.names.append(fullname)
        return None


@pytest.fixture
def gateway() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_async_client_searches_no_import_path_per_request(gateway: str) -> None:
    async def publish(n: int) -> None:
        client = AsyncHeadwaterClient(gateway, "key")
        try:
            for i in range(n):
                event = {"event_type": "view", "user_id": f"u{i}", "surface": "web"}
                await client.publish([event, {**event, "user_id": f"v{i}"}])
        finally:
            await client.aclose()

    asyncio.run(publish(2))  # the first requests import what the client needs
    searches = _Searches()
    sys.meta_path.insert(0, searches)
    try:
        asyncio.run(publish(20))
    finally:
        sys.meta_path.remove(searches)
    assert searches.names == []
