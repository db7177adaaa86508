"""Read features over HTTP: what a recommendation service calls at request time."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

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


_one = msgspec.json.Decoder(UserFeatures)
_many = msgspec.json.Decoder(FeatureBatch)


def _auth(api_key: str) -> dict[str, str]:
    # A key with the reader role (the recommendation service's).
    return {"Authorization": f"Bearer {api_key}"}


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
        r = self._http.get(f"/v1/users/{user_id}/features", params=_params(features))
        return _one.decode(_check(r))

    def get_many(
        self, user_ids: Sequence[str], features: Sequence[str] | None = None
    ) -> list[UserFeatures]:
        """Several users' features in one call, in the order asked."""
        body = {"user_ids": list(user_ids), "features": list(features) if features else None}
        r = self._http.post("/v1/features/batch", json=body)
        return _many.decode(_check(r)).users

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
        r = await self._http.get(f"/v1/users/{user_id}/features", params=_params(features))
        return _one.decode(_check(r))

    async def get_many(
        self, user_ids: Sequence[str], features: Sequence[str] | None = None
    ) -> list[UserFeatures]:
        """Several users' features in one call."""
        body = {"user_ids": list(user_ids), "features": list(features) if features else None}
        r = await self._http.post("/v1/features/batch", json=body)
        return _many.decode(_check(r)).users

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
