"""Every error answer is one problem document (RFC 9457): headwater's own errors,
FastAPI's parameter validation, Starlette's 404 and 405, and anything unexpected."""

from __future__ import annotations

import math
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import msgspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from headwater.errors import (
    AuthenticationError,
    BackendError,
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
from headwater.gateway.problems import kind
from headwater.logs import REQUEST_ID
from headwater.wire import PROBLEM_JSON, Problem, ProblemItem

__all__ = [
    "install_error_handlers",
    "internal_error",
    "json_response",
    "kind_of",
    "problem",
    "problem_response",
]

#: The kind of each headwater error, the first that matches (subclasses first).
_KINDS: list[tuple[type[HeadwaterError], str]] = [
    (AuthenticationError, "unauthenticated"),
    (PermissionDeniedError, "forbidden"),
    (RateLimitedError, "rate-limited"),
    (BatchTooLargeError, "too-large"),
    (RequestTimeoutError, "body-timeout"),
    (MalformedBatchError, "malformed-body"),
    (NoErasureParticipantsError, "no-erasure-participants"),
    (BackendUnavailableError, "backend-unavailable"),
    (IncompatibleChangeError, "incompatible-change"),
    (ContractDefinitionError, "invalid-definition"),
    (UnknownEventTypeError, "unknown-event-type"),
    (UnknownErasureRequestError, "unknown-erasure-request"),
    (ErasureError, "invalid-erasure-request"),
    (MissingDependencyError, "missing-dependency"),
    # Raised while serving only for arguments (a key's team, a role, an unknown key id).
    (ConfigurationError, "invalid-argument"),
    (BackendError, "backend-failed"),
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


def kind_of(exc: HeadwaterError) -> str:
    """The slug of the problem kind that answers ``exc``."""
    return next((slug for cls, slug in _KINDS if isinstance(exc, cls)), "internal")


def problem(
    request: Request,
    slug: str,
    detail: str,
    errors: Sequence[ProblemItem] = (),
    *,
    status: int | None = None,
) -> Problem:
    """The problem document of kind ``slug`` for ``request``."""
    k = kind(slug)
    code = status if status is not None else k.status
    title = k.title if k.status else HTTPStatus(code).phrase
    return Problem(
        type=k.type,
        title=title,
        status=code,
        detail=detail,
        instance=request.url.path,
        request_id=REQUEST_ID.get() or None,
        errors=list(errors),
    )


def problem_response(doc: Problem, headers: dict[str, str] | None = None) -> Response:
    """``doc`` as an ``application/problem+json`` answer."""
    return Response(
        _ENC.encode(doc), status_code=doc.status, media_type=PROBLEM_JSON, headers=headers
    )


def _items(exc: HeadwaterError) -> list[ProblemItem]:
    if isinstance(exc, IncompatibleChangeError):
        return [_violation(v) for v in exc.violations]
    if isinstance(exc, PermissionDeniedError):
        return [msgspec.convert(r, ProblemItem) for r in exc.refused]
    if isinstance(exc, MalformedBatchError) and exc.rule:
        return [ProblemItem(rule=exc.rule, message=str(exc), field=exc.field)]
    return []


def _violation(v: Any) -> ProblemItem:
    # ``errors.Violation`` is structural; the registry's violations carry these fields.
    return ProblemItem(
        rule=v.rule,
        message=v.message,
        field=v.field,
        event_type=v.event_type,
        from_version=v.from_version,
        to_version=v.to_version,
    )


def _headwater(request: Request, exc: HeadwaterError) -> Response:
    slug = kind_of(exc)
    detail = str(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimitedError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, BackendUnavailableError):
        headers["Retry-After"] = "1"
        detail = f"{exc} - nothing of this request was done; retry it whole"
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, BatchTooLargeError | RequestTimeoutError):
        # The rest of the body is not read: the connection cannot carry another request.
        headers["Connection"] = "close"
    return problem_response(problem(request, slug, detail, _items(exc)), headers)


def _validation(request: Request, exc: RequestValidationError) -> Response:
    items = [
        ProblemItem(
            rule=str(e.get("type", "invalid")),
            message=str(e.get("msg", "")),
            field=".".join(str(part) for part in e.get("loc", ())) or None,
        )
        for e in exc.errors()
    ]
    detail = "; ".join(f"{i.field}: {i.message}" for i in items)[:1000] or "invalid parameters"
    return problem_response(problem(request, "invalid-parameters", detail, items))


def _http(request: Request, exc: HTTPException) -> Response:
    slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "about:blank")
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if slug == "not-found":
        detail = f"no route answers {request.url.path}"
    doc = problem(request, slug, detail, status=exc.status_code)
    return problem_response(doc, dict(exc.headers or {}))


def internal_error(request: Request) -> Response:
    """The answer to an exception nothing expected: a problem without the exception's
    text (it may hold a user's data); the log has it, under the request id."""
    detail = "an unexpected error; the gateway's log has it under this request id"
    return problem_response(problem(request, "internal", detail))


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error with a problem document."""

    async def on_headwater(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HeadwaterError)
        return _headwater(request, exc)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _validation(request, exc)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _http(request, exc)

    async def on_unexpected(request: Request, _exc: Exception) -> Response:
        # Only what fails outside the request-id middleware, which answers the rest.
        return internal_error(request)

    app.add_exception_handler(HeadwaterError, on_headwater)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
