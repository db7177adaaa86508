"""A producer's POST of a batch: HTTP/1.1 on one kept-alive connection.

httpx spends about 1 ms of CPU around each POST of a batch (its client, pool and
connection layers, anyio's wrappers and h11's events: BENCHMARKS.md, "The producer SDK's
POST"), several times what the SDK spends on the batch itself. A producer sends one
request at a time to one address, so it needs none of that machinery. ``Http1Poster``
(the async client's) writes the request on an asyncio stream and reads the answer (a
``Content-Length`` body, a chunked one, or one that ends with the connection; gzip or
deflate undone), with a timeout for each phase: the connect, the write, the answer's
head and its body. ``BlockingPoster`` (the thread client's, in ``_http1_blocking``) does
the same on ``http.client``. Both send a request once more on a new connection when a
kept-alive one turns out closed before any answer; a batch sent twice is one batch,
since the gateway de-duplicates by event id.

The clients keep httpx where these do not apply: a test's transport, and a proxy named
by the environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` and ``NO_PROXY``, as
httpx reads them). Certificates are verified as httpx verifies them (``SSL_CERT_FILE``,
``SSL_CERT_DIR``, else certifi's bundle).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import os
import ssl
import urllib.request
import zlib
from urllib.parse import urlsplit

from headwater.client._core import Answer

__all__ = [
    "MAX_BODY_BYTES",
    "Http1Poster",
    "ProtocolError",
    "Target",
    "decoded",
    "uses_proxy",
    "why",
]

#: The most an answer's status line and headers may take, and its body.
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Reads of the answer: asyncio's stream reader asks the socket for up to this much.
_READ_LIMIT = 256 * 1024


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 this client can read."""


def uses_proxy(url: str) -> bool:
    """Whether the environment routes ``url`` through a proxy (as httpx reads it)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.netloc)


@functools.cache
def _user_agent() -> str:
    try:
        return f"headwater-python/{importlib.metadata.version('headwater')}"
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "headwater-python"


def _tls_context() -> ssl.SSLContext:
    if os.environ.get("SSL_CERT_FILE"):
        context = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    elif os.environ.get("SSL_CERT_DIR"):
        context = ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    else:
        import certifi  # httpx's own dependency: the bundle httpx verifies with

        context = ssl.create_default_context(cafile=certifi.where())
    context.set_alpn_protocols(["http/1.1"])
    return context


class _Connection:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, loop: object
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.loop = loop
        self.used = False  # an answer was read on it: the server may since have closed it
        self.answering = False  # the head of the answer in hand arrived

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


class Target:
    """Where a poster sends, and the header lines every request of it carries."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.prefix = parts.path.rstrip("/")
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        default_port = self.port == (443 if self.tls else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.headers = {
            "Host": host if default_port else f"{host}:{self.port}",
            "User-Agent": _user_agent(),
            "Accept-Encoding": "gzip, deflate",
            **headers,
        }
        for name, value in self.headers.items():
            if any(c in f"{name}{value}" for c in "\r\n\0"):
                raise ValueError(f"header {name!r} holds a line break")
        self.context = _tls_context() if self.tls else None


class Http1Poster:
    """Requests to one URL, one at a time, over a connection kept between them (the
    producer's POSTs; the read client's GETs and POSTs)."""

    def __init__(self, target: Target, timeout: float) -> None:
        # A Target is shared by the connections to one URL (the read clients' pool): one
        # TLS context, its certificates loaded once.
        self._target = target
        self.timeout = timeout
        self._head = "".join(f"{k}: {v}\r\n" for k, v in target.headers.items())
        self._connection: _Connection | None = None
        self._lock = asyncio.Lock()

    async def post(self, path: str, body: bytes, content_type: str) -> Answer:
        """POST ``body`` to ``path`` under the URL's own path: (status, body, Retry-After,
        "") or, when no answer came, (None, b"", None, why)."""
        return await self.request("POST", path, body, content_type)

    async def request(
        self, method: str, path: str, body: bytes = b"", content_type: str | None = None
    ) -> Answer:
        """``method`` (GET, POST) on ``path`` (with its query, percent-encoded), as
        :meth:`post` answers. A body goes with its type and length."""
        sized = f"Content-Type: {content_type}\r\n" if content_type else ""
        if body or method == "POST":
            sized += f"Content-Length: {len(body)}\r\n"
        request = (
            f"{method} {self._target.prefix}{path} HTTP/1.1\r\n{self._head}{sized}\r\n"
        ).encode("latin-1")
        async with self._lock:
            for _ in range(2):
                connection = await self._connected()
                if isinstance(connection, str):
                    return (None, b"", None, connection)
                reused = connection.used
                try:
                    return await self._exchange(connection, request, body)
                except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
                    self._drop()
                    # A kept-alive connection the server closed without a byte of answer
                    # (its idle timeout, usually): the request goes once more on a new
                    # connection (a batch sent twice is one batch: the gateway
                    # de-duplicates by event id).
                    if not (reused and not connection.answering and _unanswered(exc)):
                        return (None, b"", None, why(exc))
                except (TimeoutError, asyncio.LimitOverrunError, ProtocolError, zlib.error) as exc:
                    self._drop()
                    return (None, b"", None, why(exc))
                except BaseException:
                    self._drop()  # cancelled mid-exchange: the connection's state is unknown
                    raise
            raise AssertionError("unreachable")  # pragma: no cover - the loop returns

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.loop is asyncio.get_running_loop():
            connection.close()
            with contextlib.suppress(OSError):  # reset by the server: gone either way
                await connection.writer.wait_closed()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    async def _connected(self) -> _Connection | str:
        loop = asyncio.get_running_loop()
        connection = self._connection
        if connection is not None and (connection.loop is not loop or connection.reader.at_eof()):
            # Closed by the server while idle, or made on an event loop that has ended.
            self._connection = None
            if connection.loop is loop:
                connection.close()
            connection = None
        if connection is None:
            try:
                async with asyncio.timeout(self.timeout):
                    reader, writer = await asyncio.open_connection(
                        self._target.host,
                        self._target.port,
                        ssl=self._target.context,
                        server_hostname=self._target.host if self._target.tls else None,
                        limit=_READ_LIMIT,
                    )
            except (OSError, TimeoutError) as exc:
                return why(exc)
            connection = self._connection = _Connection(reader, writer, loop)
        return connection

    async def _exchange(self, connection: _Connection, request: bytes, body: bytes) -> Answer:
        writer, reader = connection.writer, connection.reader
        connection.answering = False
        writer.write(request)
        writer.write(body)
        async with asyncio.timeout(self.timeout):
            await writer.drain()
        while True:
            status, headers, version = await self._head_of(reader)
            if 100 <= status < 200:
                continue  # an interim answer (103 Early Hints, say): the real one follows
            break
        connection.answering = True  # from here a cut is a cut answer, not a lost request
        content = await self._body_of(reader, status, headers)
        connection.used = True
        keep = headers.get("connection", "").lower()
        if "close" in keep or (version == "HTTP/1.0" and "keep-alive" not in keep):
            self._drop()
        elif "content-length" not in headers and "transfer-encoding" not in headers:
            self._drop()  # its body ran to the end of the connection
        content = decoded(content, headers.get("content-encoding"))
        return (status, content, headers.get("retry-after"), "")

    async def _head_of(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, str], str]:
        async with asyncio.timeout(self.timeout):
            raw = await reader.readuntil(b"\r\n\r\n")
        if len(raw) > MAX_HEAD_BYTES:
            raise ProtocolError(f"answer's head over {MAX_HEAD_BYTES} bytes")
        lines = raw[:-4].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if version not in ("HTTP/1.1", "HTTP/1.0") or not code.isdigit() or len(code) != 3:
            raise ProtocolError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise ProtocolError(f"malformed header line: {line[:80]!r}")
            key = name.lower()
            value = value.strip()
            # Repeated headers join with a comma (RFC 9110, 5.3).
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return int(code), headers, version

    async def _body_of(
        self, reader: asyncio.StreamReader, status: int, headers: dict[str, str]
    ) -> bytes:
        if status in (204, 304):
            return b""
        async with asyncio.timeout(self.timeout):
            if "chunked" in headers.get("transfer-encoding", "").lower():
                return await _chunked(reader)
            if "content-length" in headers:
                length = _length(headers["content-length"])
                return await reader.readexactly(length)
        # No length given: the body is what comes until the server closes.
        parts: list[bytes] = []
        size = 0
        while True:
            async with asyncio.timeout(self.timeout):
                part = await reader.read(_READ_LIMIT)
            if not part:
                return b"".join(parts)
            size += len(part)
            if size > MAX_BODY_BYTES:
                raise ProtocolError(f"answer over {MAX_BODY_BYTES} bytes")
            parts.append(part)


def _length(value: str) -> int:
    values = {v.strip() for v in value.split(",")}
    if len(values) != 1 or not (only := values.pop()).isdigit():
        raise ProtocolError(f"Content-Length is not one number: {value[:40]!r}")
    length = int(only)
    if length > MAX_BODY_BYTES:
        raise ProtocolError(f"answer of {length} bytes; at most {MAX_BODY_BYTES}")
    return length


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        digits = line[:-2].split(b";", 1)[0].strip()  # a chunk extension is ignored
        try:
            chunk = int(digits, 16)
        except ValueError:
            raise ProtocolError(f"malformed chunk size: {line[:40]!r}") from None
        if chunk < 0 or not digits.isalnum():
            raise ProtocolError(f"malformed chunk size: {line[:40]!r}")
        if chunk == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailer fields, not needed
            return b"".join(parts)
        size += chunk
        if size > MAX_BODY_BYTES:
            raise ProtocolError(f"answer over {MAX_BODY_BYTES} bytes")
        parts.append(await reader.readexactly(chunk))
        if await reader.readexactly(2) != b"\r\n":
            raise ProtocolError("a chunk does not end where its size says")


def decoded(content: bytes, encoding: str | None) -> bytes:
    """The body as sent, its content coding undone (an empty body has none to undo)."""
    encoding = (encoding or "").strip().lower()
    if not content:
        return content
    if encoding in ("gzip", "x-gzip", "deflate"):
        return _inflate(content, encoding)
    if encoding not in ("", "identity"):
        raise ProtocolError(f"answer in an encoding not asked for: {encoding!r}")
    return content


def _inflate(content: bytes, encoding: str) -> bytes:
    """The body without its gzip or deflate coding, refused past ``MAX_BODY_BYTES``."""
    if encoding == "deflate" and content[:1] != b"\x78":
        wbits = -zlib.MAX_WBITS  # raw deflate, as some servers send it
    else:
        wbits = zlib.MAX_WBITS | (16 if encoding != "deflate" else 0)
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(content, MAX_BODY_BYTES)
    if inflater.unconsumed_tail:
        raise ProtocolError(f"answer inflates past {MAX_BODY_BYTES} bytes")
    if not inflater.eof:
        raise ProtocolError(f"{encoding} answer cut short")
    return out


def _unanswered(exc: BaseException) -> bool:
    """Whether the server closed before it answered anything."""
    if isinstance(exc, asyncio.IncompleteReadError):
        return not exc.partial
    return isinstance(exc, ConnectionResetError | BrokenPipeError | EOFError)


def why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):  # socket.timeout too
        return "TimeoutError: no answer within the timeout"
    return f"{type(exc).__name__}: {exc}"
