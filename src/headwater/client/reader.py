"""Read features over HTTP: what a recommendation service calls at request time."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import TypeVar
from urllib.parse import quote

import httpx
import msgspec

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


def _auth(api_key: str) -> dict[str, str]:
    # A key with the reader role (the recommendation service's).
    return {"Authorization": f"Bearer {api_key}"}


def _path(user_id: str) -> str:
    """The user's features path, the id percent-encoded whole: a ``/``, ``?``, ``#`` or
    ``%`` in it is part of the id, and ``.`` or ``..`` is not a step up the path."""
    segment = quote(user_id, safe="")
    if segment in (".", ".."):
        segment = segment.replace(".", "%2E")
    return f"/v1/users/{segment}/features"


def _unavailable(error: httpx.HTTPError) -> BackendUnavailableError:
    """A transport failure (no connection, a timeout, a cut answer): the API is out of
    reach, as a 503 says."""
    return BackendUnavailableError(f"features API: no answer: {type(error).__name__}: {error}")


def _decoded(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as e:
        # Not the API's answer: a proxy's page, a body cut short.
        raise BackendUnavailableError(f"features API: unreadable answer: {e}") from None


def _check(response: httpx.Response) -> bytes:
    status = response.status_code
    if status == 200:
        return response.content
    problem = read_problem(status, response.content)
    what = f"features API: HTTP {status} {problem.kind}: {problem.detail}"
    if status >= 500:
        raise BackendUnavailableError(what)
    if status == 401:
        raise AuthenticationError(what)
    if status == 403:
        raise PermissionDeniedError(what)
    raise HeadwaterError(what)


def _params(features: Sequence[str] | None) -> dict[str, str]:
    return {"features": ",".join(features)} if features else {}


class FeatureClient:
    """``GET /v1/users/{id}/features`` and the batch read, typed."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 2.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            timeout=timeout,
            transport=transport,
            headers=_auth(api_key),
        )

    def get(self, user_id: str, features: Sequence[str] | None = None) -> UserFeatures:
        """One user's features (``features`` selects some; all by default)."""
        try:
            r = self._http.get(_path(user_id), params=_params(features))
        except httpx.HTTPError as e:
            raise _unavailable(e) from e
        return _decoded(_one, _check(r))

    def get_many(
        self, user_ids: Sequence[str], features: Sequence[str] | None = None
    ) -> list[UserFeatures]:
        """Several users' features in one call, in the order asked."""
        body = {"user_ids": list(user_ids), "features": list(features) if features else None}
        try:
            r = self._http.post("/v1/features/batch", json=body)
        except httpx.HTTPError as e:
            raise _unavailable(e) from e
        return _decoded(_many, _check(r)).users

    def close(self) -> None:
        """Close the connection."""
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
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            timeout=timeout,
            transport=transport,
            headers=_auth(api_key),
        )

    async def get(self, user_id: str, features: Sequence[str] | None = None) -> UserFeatures:
        """One user's features."""
        try:
            r = await self._http.get(_path(user_id), params=_params(features))
        except httpx.HTTPError as e:
            raise _unavailable(e) from e
        return _decoded(_one, _check(r))

    async def get_many(
        self, user_ids: Sequence[str], features: Sequence[str] | None = None
    ) -> list[UserFeatures]:
        """Several users' features in one call."""
        body = {"user_ids": list(user_ids), "features": list(features) if features else None}
        try:
            r = await self._http.post("/v1/features/batch", json=body)
        except httpx.HTTPError as e:
            raise _unavailable(e) from e
        return _decoded(_many, _check(r)).users

    async def aclose(self) -> None:
        """Close the connection."""
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
