"""The thread client's POST of a batch: ``http.client`` on one kept-alive connection,
read and failed as ``_http1.Http1Poster`` reads and fails (see ``_http1``)."""

from __future__ import annotations

import http.client
import threading
import zlib

from headwater.client._core import Answer
from headwater.client._http1 import MAX_BODY_BYTES, ProtocolError, Target, decoded, why

__all__ = ["BlockingPoster"]


class BlockingPoster:
    """The blocking twin of Http1Poster for HeadwaterClient's thread, on ``http.client``
    (a fifth of httpx's CPU a POST)."""

    def __init__(self, target: Target, timeout: float) -> None:
        self._target = target
        self.timeout = timeout
        self._connection: http.client.HTTPConnection | None = None
        self._used = False
        self._answering = False  # the head of the answer in hand arrived
        self._lock = threading.Lock()

    def post(self, path: str, body: bytes, content_type: str) -> Answer:
        """As Http1Poster.post, blocking."""
        return self.request("POST", path, body, content_type)

    def request(
        self, method: str, path: str, body: bytes = b"", content_type: str | None = None
    ) -> Answer:
        """As Http1Poster.request, blocking."""
        headers = dict(self._target.headers)
        if content_type:
            headers["Content-Type"] = content_type
        with self._lock:
            for _ in range(2):
                reused = self._connection is not None and self._used
                try:
                    return self._exchange(method, self._target.prefix + path, body, headers)
                except (
                    http.client.RemoteDisconnected,
                    BrokenPipeError,
                    ConnectionResetError,
                ) as exc:
                    self._drop()
                    # See Http1Poster.post: a kept-alive connection dropped unanswered.
                    if not reused or self._answering:
                        return (None, b"", None, why(exc))
                except (OSError, http.client.HTTPException, ProtocolError, zlib.error) as exc:
                    self._drop()
                    return (None, b"", None, why(exc))
                except BaseException:
                    self._drop()
                    raise
            raise AssertionError("unreachable")  # pragma: no cover - the loop returns

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _exchange(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        connection = self._connected()
        self._answering = False
        connection.request(method, path, body if body or method == "POST" else None, headers)
        response = connection.getresponse()
        self._answering = True  # from here a cut is a cut answer, not a lost request
        if response.length is not None:  # sized: read() raises IncompleteRead if cut short
            if response.length > MAX_BODY_BYTES:
                raise ProtocolError(f"answer of {response.length} bytes; at most {MAX_BODY_BYTES}")
            content = response.read()
        else:  # chunked (a cut raises IncompleteRead) or to the close
            content = response.read(MAX_BODY_BYTES + 1)
            if len(content) > MAX_BODY_BYTES:
                raise ProtocolError(f"answer over {MAX_BODY_BYTES} bytes")
        if response.will_close or not response.isclosed():
            self._drop()  # closing, or a body past what was read
        self._used = True
        content = decoded(content, response.getheader("Content-Encoding"))
        return (response.status, content, response.getheader("Retry-After"), "")

    def _connected(self) -> http.client.HTTPConnection:
        if self._connection is None:
            t = self._target
            if t.tls:
                self._connection = http.client.HTTPSConnection(
                    t.host, t.port, timeout=self.timeout, context=t.context
                )
            else:
                self._connection = http.client.HTTPConnection(t.host, t.port, timeout=self.timeout)
            self._used = False
        return self._connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
