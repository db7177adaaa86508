"""Request bodies read within bounds: size, time, decompression, and JSON shape.

A route reads its body only after the caller was authorized, and through
``read_body``: a declared ``Content-Length`` over the route's limit is refused before
one byte is read, a chunked body as soon as it passes the limit, and a body that does
not arrive within the timeout gets 408. gzip is inflated to the limit and no further.
"""

from __future__ import annotations

import asyncio
import os
import re
import zlib
from typing import Any, TypeVar

import msgspec
from fastapi import Request

from headwater._duration import parse_duration
from headwater._jsonguard import check_json
from headwater.errors import BatchTooLargeError, MalformedBatchError, RequestTimeoutError

__all__ = ["BODY_TIMEOUT_S", "decode_json", "inflate", "read_body"]

_T = TypeVar("_T")


def _timeout() -> float:
    raw = os.environ.get("HEADWATER_BODY_TIMEOUT", "").strip()
    return parse_duration(raw, "HEADWATER_BODY_TIMEOUT") if raw else 15.0


#: Longest a request body may take to arrive, whole (``HEADWATER_BODY_TIMEOUT``).
BODY_TIMEOUT_S = _timeout()


async def read_body(request: Request, limit: int, *, timeout_s: float | None = None) -> bytes:
    """The body, at most ``limit`` bytes (413 beyond), arrived within ``timeout_s`` (408)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise MalformedBatchError("Content-Length is not a number") from None
        if size > limit:
            raise BatchTooLargeError(f"body of {size} bytes; this endpoint takes at most {limit}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (BODY_TIMEOUT_S if timeout_s is None else timeout_s)
    parts: list[bytes] = []
    received = 0
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise RequestTimeoutError("the request body did not arrive in time")
        try:
            message = await asyncio.wait_for(request.receive(), left)
        except TimeoutError:
            raise RequestTimeoutError("the request body did not arrive in time") from None
        if message["type"] == "http.disconnect":
            raise MalformedBatchError("the client went away before the body arrived")
        chunk = message.get("body", b"")
        if chunk:
            received += len(chunk)
            if received > limit:
                raise BatchTooLargeError(
                    f"body over {limit} bytes; this endpoint takes at most that"
                )
            parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body without its ``Content-Encoding`` (gzip or none), at most ``limit`` bytes:
    a gzip bomb is refused after ``limit`` bytes, never expanded."""
    if not encoding or encoding.lower() == "identity":
        return body
    if encoding.lower() not in ("gzip", "x-gzip"):
        raise MalformedBatchError(f"unsupported Content-Encoding {encoding!r} (use gzip)")
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise MalformedBatchError(f"body is not valid gzip: {exc}") from None
    if len(out) > limit or decompressor.unconsumed_tail:
        raise BatchTooLargeError(f"decompressed body exceeds {limit} bytes")
    return out


def decode_json(body: bytes, type_: type[_T], what: str) -> _T:
    """A small JSON body as ``type_``; anything else is a 400 that says what was expected
    (a key given twice and deep nesting included)."""
    check_json(body)
    try:
        return msgspec.json.decode(body, type=type_)
    except (msgspec.DecodeError, RecursionError) as exc:
        rule, field = _rule(exc)
        raise MalformedBatchError(
            f"expected {what}: {_reason(exc)}", rule=rule, field=field
        ) from None


def _reason(exc: Any) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)


#: msgspec's words for what a value broke, and the rule each is reported as.
_RULES = (
    ("Object missing required field", "missing_field"),
    ("Object contains unknown field", "unknown_field"),
    ("Expected", "invalid_value"),
)
_PATH = re.compile(r" - at `(\$[^`]*)`$")
_FIELD = re.compile(r"field `([^`]+)`")


def _rule(exc: Exception) -> tuple[str, str | None]:
    """The rule and JSON path of a decoding error (``missing_field``, ``$.user_id``)."""
    if not isinstance(exc, msgspec.ValidationError):
        return ("max_depth" if isinstance(exc, RecursionError) else "not_json"), None
    text = str(exc)
    rule = next((r for prefix, r in _RULES if text.startswith(prefix)), "invalid_value")
    at = _PATH.search(text)
    path = at.group(1) if at else "$"
    named = _FIELD.search(text)
    if named and rule in ("missing_field", "unknown_field"):
        path = f"{path}.{named.group(1)}"
    return rule, path
