"""Read features over HTTP: what a recommendation service calls at request time.

Each client reads over one kept-alive HTTP/1.1 connection of its own (``_http1``, as
the producer SDK posts): a read is a few hundred bytes, and httpx's layers around it
cost several times what the read itself does. httpx stays where the environment names a
proxy for the URL, and where a test passes a transport.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TypeVar
from urllib.parse import quote, urlencode

import httpx
import msgspec

from headwater.client._core import Answer
from headwater.client._http1 import Http1Poster, Target, uses_proxy
from headwater.client._http1_blocking import BlockingPoster
from headwater.errors import (
    AuthenticationError,
    BackendUnavailableError,
    HeadwaterError,
    PermissionDeniedError,
)
from headwater.wire import FeatureBatch, UserFeatures, read_problem

__all__ = ["AsyncFeatureClient", "FeatureClient", "UserFeatures"]


T = TypeVar("T")
_one = msgspec.json.Decoder(UserFeatures)
_many = msgspec.json.Decoder(FeatureBatch)
_JSON = "application/json"
_BATCH = "/v1/features/batch"


#: Reads in flight at once per client (each on a connection of its own), as many as a
#: recommendation service's request handlers ask at a time, up to this.
MAX_CONNECTIONS = 32


class _Connections:
    """Up to ``size`` blocking connections, each serving one read at a time: threads
    that share a client read side by side, not one after another. ``close`` closes
    them, and a read in flight closes its own when it ends; a read after it opens new
    ones."""

    def __init__(self, make: Callable[[], BlockingPoster], size: int) -> None:
        self._make = make
        self._idle: list[BlockingPoster] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)
        self._closes = 0  # the closes so far: a connection taken before one is not kept

    def request(self, method: str, path: str, body: bytes) -> Answer:
        with self._slots:
            with self._lock:
                poster = self._idle.pop() if self._idle else self._make()
                taken = self._closes
            try:
                return poster.request(method, path, body, _JSON if body else None)
            finally:
                with self._lock:
                    kept = taken == self._closes
                    if kept:
                        self._idle.append(poster)
                if not kept:
                    poster.close()

    def close(self) -> None:
        with self._lock:
            self._closes += 1
            idle, self._idle = self._idle, []
        for poster in idle:
            poster.close()


class _AsyncConnections:
    """The asyncio twin of _Connections: concurrent reads of one client each get a
    connection of their own, up to ``size``."""

    def __init__(self, make: Callable[[], Http1Poster], size: int) -> None:
        self._make = make
        self._size = size
        self._idle: list[Http1Poster] = []
        # An asyncio semaphore belongs to the event loop it first waits on: one per loop
        # (a client used in two ``asyncio.run`` in turn, closed at the end of each).
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.BoundedSemaphore] | None = None
        self._closes = 0

    async def request(self, method: str, path: str, body: bytes) -> Answer:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.BoundedSemaphore(self._size))
        async with self._slots[1]:
            poster = self._idle.pop() if self._idle else self._make()
            taken = self._closes
            try:
                return await poster.request(method, path, body, _JSON if body else None)
            finally:
                # Cancelled mid-read, the poster dropped its connection: it makes another.
                if taken == self._closes:
                    self._idle.append(poster)
                else:
                    await poster.aclose()

    async def aclose(self) -> None:
        self._closes += 1
        idle, self._idle = self._idle, []
        for poster in idle:
            await poster.aclose()


def _auth(api_key: str) -> dict[str, str]:
    # A key with the reader role (the recommendation service's).
    return {"Authorization": f"Bearer {api_key}"}


def _path(user_id: str, features: Sequence[str] | None) -> str:
    """The user's features path, the id percent-encoded whole: a ``/``, ``?``, ``#`` or
    ``%`` in it is part of the id, and ``.`` or ``..`` is not a step up the path."""
    segment = quote(user_id, safe="")
    if segment in (".", ".."):
        segment = segment.replace(".", "%2E")
    query = f"?{urlencode({'features': ','.join(features)})}" if features else ""
    return f"/v1/users/{segment}/features{query}"


def _batch(user_ids: Sequence[str], features: Sequence[str] | None) -> bytes:
    return msgspec.json.encode(
        {"user_ids": list(user_ids), "features": list(features) if features else None}
    )


def _transport_failure(error: httpx.HTTPError) -> Answer:
    """httpx's failure as a poster reports one: no status, and why."""
    return (None, b"", None, f"{type(error).__name__}: {error}")


def _answer(response: httpx.Response) -> Answer:
    return (response.status_code, response.content, None, "")


def _decoded(decoder: msgspec.json.Decoder[T], answer: Answer) -> T:
    """The answer's body, or the error it stands for: no answer (no connection, a
    timeout, a cut answer) and a 5xx are BackendUnavailableError, as is a 200 that is
    not the API's answer (a proxy's page, a body cut short)."""
    status, body, _, why = answer
    if status is None:
        raise BackendUnavailableError(f"features API: no answer: {why}")
    if status != 200:
        problem = read_problem(status, body)
        what = f"features API: HTTP {status} {problem.kind}: {problem.detail}"
        if status >= 500:
            raise BackendUnavailableError(what)
        if status == 401:
            raise AuthenticationError(what)
        if status == 403:
            raise PermissionDeniedError(what)
        raise HeadwaterError(what)
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as e:
        raise BackendUnavailableError(f"features API: unreadable answer: {e}") from None


class FeatureClient:
    """``GET /v1/users/{id}/features`` and the batch read, typed; up to
    ``max_connections`` reads side by side (threads sharing the client)."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 2.0,
        max_connections: int = MAX_CONNECTIONS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http: _Connections | httpx.Client
        base, headers = url.rstrip("/"), _auth(api_key)
        if transport is None and not uses_proxy(url):
            target = Target(base, headers)  # a bad URL or header fails here
            self._http = _Connections(lambda: BlockingPoster(target, timeout), max_connections)
        else:
            self._http = httpx.Client(
                base_url=base,
                timeout=timeout,
                transport=transport,
                headers=headers,
                limits=httpx.Limits(max_connections=max_connections),
            )

    def get(self, user_id: str, features: Sequence[str] | None = None) -> UserFeatures:
        """One user's features (``features`` selects some; all by default)."""
        return _decoded(_one, self._request("GET", _path(user_id, features)))

    def get_many(
        self, user_ids: Sequence[str], features: Sequence[str] | None = None
    ) -> list[UserFeatures]:
        """Several users' features in one call, in the order asked."""
        return _decoded(_many, self._request("POST", _BATCH, _batch(user_ids, features))).users

    def _request(self, method: str, path: str, body: bytes = b"") -> Answer:
        http = self._http
        if isinstance(http, _Connections):
            return http.request(method, path, body)
        try:
            headers = {"Content-Type": _JSON} if body else None
            return _answer(http.request(method, path, content=body or None, headers=headers))
        except httpx.HTTPError as e:
            return _transport_failure(e)

    def close(self) -> None:
        """Close the connections; a read in flight closes its own when it ends."""
        self._http.close()

    def __enter__(self) -> FeatureClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncFeatureClient:
    """The asyncio twin of FeatureClient."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 2.0,
        max_connections: int = MAX_CONNECTIONS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http: _AsyncConnections | httpx.AsyncClient
        base, headers = url.rstrip("/"), _auth(api_key)
        if transport is None and not uses_proxy(url):
            target = Target(base, headers)  # a bad URL or header fails here
            self._http = _AsyncConnections(lambda: Http1Poster(target, timeout), max_connections)
        else:
            self._http = httpx.AsyncClient(
                base_url=base,
                timeout=timeout,
                transport=transport,
                headers=headers,
                limits=httpx.Limits(max_connections=max_connections),
            )

    async def get(self, user_id: str, features: Sequence[str] | None = None) -> UserFeatures:
        """One user's features."""
        return _decoded(_one, await self._request("GET", _path(user_id, features)))

    async def get_many(
        self, user_ids: Sequence[str], features: Sequence[str] | None = None
    ) -> list[UserFeatures]:
        """Several users' features in one call."""
        answer = await self._request("POST", _BATCH, _batch(user_ids, features))
        return _decoded(_many, answer).users

    async def _request(self, method: str, path: str, body: bytes = b"") -> Answer:
        http = self._http
        if isinstance(http, _AsyncConnections):
            return await http.request(method, path, body)
        try:
            headers = {"Content-Type": _JSON} if body else None
            response = await http.request(method, path, content=body or None, headers=headers)
        except httpx.HTTPError as e:
            return _transport_failure(e)
        return _answer(response)

    async def aclose(self) -> None:
        """Close the connections; a read in flight closes its own when it ends."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncFeatureClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
