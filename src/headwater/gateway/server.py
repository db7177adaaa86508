"""The HTTP server under the gateway: uvicorn, with the limits a public endpoint needs.

uvicorn bounds a request's body by flow control but not the time its headers take, nor
their size: a client that trickles a header line every few seconds holds a connection
(and its memory) forever. Here a connection whose request line and headers do not
arrive within ``HEADER_TIMEOUT_S`` is closed, and so is one whose headers pass
``MAX_HEADER_BYTES``. Bodies are bounded in size and time where they are read
(``gateway.bodies``: 413, 408), and here too, for every request: a body still arriving
``BODY_TIMEOUT_S`` (plus ``BODY_GRACE_S``, so a route's own 408 goes out first) after
its headers closes the connection, whether or not the route reads it (a route without a
body, or one that answered 401 or 403 before reading it).

These guards live in a subclass of uvicorn's httptools protocol; httptools is a
dependency of headwater. Should it be missing, uvicorn falls back to h11 and only the
bounds of ``gateway.bodies`` apply (no header deadline or cap, no body deadline on
routes that do not read one).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from headwater._duration import parse_duration
from headwater.gateway.bodies import BODY_TIMEOUT_S

__all__ = ["BODY_GRACE_S", "HEADER_TIMEOUT_S", "KEEP_ALIVE_S", "MAX_HEADER_BYTES", "server_config"]

#: How long an idle kept-alive connection stays open (seconds). Longer than the idle
#: expiry of HTTP clients (httpx, and so the SDK: 5 s), so that the client drops an idle
#: connection first: with equal times (this was 5 s), a request sent on a connection the
#: server was closing at that moment failed with no answer (seen once in CI).
KEEP_ALIVE_S = 15
#: Longest a request line and its headers may take to arrive (``HEADWATER_HEADER_TIMEOUT``).
HEADER_TIMEOUT_S = parse_duration(
    os.environ.get("HEADWATER_HEADER_TIMEOUT", "").strip() or "10s", "HEADWATER_HEADER_TIMEOUT"
)
#: Most bytes of request line and headers one request may send.
MAX_HEADER_BYTES = 64 * 1024
#: How much longer than ``BODY_TIMEOUT_S`` a connection waits for its body before it is
#: closed: a route reading the body answers 408 first.
BODY_GRACE_S = 1.0


def _guarded_protocol() -> type[Any] | None:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools not installed: uvicorn's h11 server, as it comes
        return None

    class GuardedHttpProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with a deadline and a size cap on headers, and a
        deadline on each request's body."""

        _header_timer: asyncio.TimerHandle | None = None
        _header_bytes = 0
        _body_timer: asyncio.TimerHandle | None = None
        _in_body = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            before_headers = self._header_timer is not None
            super().data_received(data)
            if before_headers and self._header_timer is not None:
                # Still no end of headers after these bytes: count them.
                self._header_bytes += len(data)
                if self._header_bytes > MAX_HEADER_BYTES:
                    self._close()
            if self._in_body and self._body_timer is None and not self.transport.is_closing():
                # Headers complete, body not: its deadline runs from now. A body that
                # came with its headers (most requests) never starts a timer.
                self._body_timer = self.loop.call_later(BODY_TIMEOUT_S + BODY_GRACE_S, self._close)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()  # each request on a kept-alive connection has its own deadline

        def on_headers_complete(self) -> None:
            self._disarm()
            self._in_body = True
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._end_body()
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self._end_body()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._header_bytes = 0
            self._header_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._close)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _end_body(self) -> None:
            self._in_body = False
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None

        def _close(self) -> None:
            self._disarm()
            self._end_body()
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedHttpProtocol


def server_config(app: Any, *, host: str, port: int, log_level: str = "warning") -> Any:
    """The uvicorn configuration every headwater gateway runs with."""
    import uvicorn

    protocol = _guarded_protocol()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        http=protocol if protocol is not None else "auto",
        timeout_keep_alive=KEEP_ALIVE_S,
    )
