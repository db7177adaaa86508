"""HTTP status and body for each headwater error."""

from __future__ import annotations

import math

import msgspec
from fastapi import FastAPI, Request
from fastapi.responses import Response

from headwater.errors import (
    AuthenticationError,
    BackendUnavailableError,
    BatchTooLargeError,
    ConfigurationError,
    ContractDefinitionError,
    ErasureError,
    HeadwaterError,
    IncompatibleChangeError,
    MalformedBatchError,
    MissingDependencyError,
    NoErasureParticipantsError,
    PermissionDeniedError,
    RateLimitedError,
    RequestTimeoutError,
    UnknownErasureRequestError,
    UnknownEventTypeError,
)

__all__ = ["install_error_handlers", "json_response"]

_STATUS: list[tuple[type[HeadwaterError], int, str]] = [
    (AuthenticationError, 401, "unauthenticated"),
    (PermissionDeniedError, 403, "forbidden"),
    (RateLimitedError, 429, "rate_limited"),
    (BatchTooLargeError, 413, "too_large"),
    (RequestTimeoutError, 408, "timeout"),
    (MalformedBatchError, 400, "malformed"),
    (BackendUnavailableError, 503, "unavailable"),
    (IncompatibleChangeError, 409, "incompatible_change"),
    (ContractDefinitionError, 422, "invalid_definition"),
    (UnknownEventTypeError, 404, "not_found"),
    (UnknownErasureRequestError, 404, "not_found"),
    (NoErasureParticipantsError, 503, "unavailable"),
    (ErasureError, 400, "invalid_request"),
    (MissingDependencyError, 500, "internal"),
    # Raised while serving only for arguments (a key's team, a role, an unknown key id).
    (ConfigurationError, 400, "invalid_request"),
]

_ENC = msgspec.json.Encoder()


def json_response(
    body: object,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """A JSON response encoded with msgspec."""
    return Response(
        _ENC.encode(body), status_code=status, media_type="application/json", headers=headers
    )


def _respond(exc: HeadwaterError) -> Response:
    status, code = next(
        ((s, c) for cls, s, c in _STATUS if isinstance(exc, cls)), (500, "internal")
    )
    body: dict[str, object] = {"error": code, "message": str(exc)}
    headers: dict[str, str] = {}
    if isinstance(exc, IncompatibleChangeError):
        body["violations"] = msgspec.to_builtins(exc.violations)
    if isinstance(exc, RateLimitedError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, BackendUnavailableError):
        headers["Retry-After"] = "1"
        body["message"] = f"{exc} - nothing of this batch was accepted; retry it whole"
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, BatchTooLargeError | RequestTimeoutError):
        # The rest of the body is not read: the connection cannot carry another request.
        headers["Connection"] = "close"
    return json_response(body, status, headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map the exception tree to HTTP answers."""

    async def handle(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HeadwaterError)
        return _respond(exc)

    app.add_exception_handler(HeadwaterError, handle)
