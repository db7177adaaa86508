"""The words of the guard's refusals, shared by the compiled and the Python scanner.

Both scanners find the first problem in document order and describe it here, so that
one document gets one message whichever scanner read it (a property test holds them to
that). Only refusals come here, and the shape (``JsonShape``) of an accepted document.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import NamedTuple

from headwater.errors import MalformedBatchError

#: Nesting allowed by default: an event is two levels inside a batch, its payload three.
DEFAULT_MAX_DEPTH = 64
#: The highest ``max_depth`` accepted: msgspec recurses once per level, and the gateway
#: must stay well below Python's recursion limit when it decodes what the guard let by.
MAX_DEPTH_LIMIT = 256

# Why a document is not JSON; the scanners pass the index into REASONS.
EOF = 0
CHARACTER = 1
NUMBER = 2
STRING = 3
UTF8 = 4
REASONS = (
    "unexpected end of data",
    "unexpected character",
    "invalid number",
    "invalid string",
    "invalid UTF-8",
)

#: A longer key is cut in messages: they go back to the client and into logs.
_SHOWN_KEY_CHARS = 64
#: A deeper path shows its first and last segments only.
_SHOWN_SEGMENTS = 16
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class JsonShape(NamedTuple):
    """What the guard read of an accepted document that is an array: its elements, and
    the length in bytes of the longest (from its first byte to its last, as msgspec's
    ``Raw`` holds it); both 0 for an empty array and for a document that is not one."""

    elements: int
    longest: int


def check_max_depth(max_depth: int) -> None:
    """Refuse a nesting limit outside 1..MAX_DEPTH_LIMIT (a caller's mistake)."""
    if not 1 <= max_depth <= MAX_DEPTH_LIMIT:
        raise ValueError(f"max_depth must be between 1 and {MAX_DEPTH_LIMIT}, not {max_depth}")


def decode_key(raw: bytes) -> str:
    """The text of a key from the bytes between its quotes (already validated)."""
    if b"\\" in raw:
        text: str = json.loads(b'"' + raw + b'"')
        return text
    return raw.decode("utf-8")


def _shown(key: str) -> str:
    return key if len(key) <= _SHOWN_KEY_CHARS else key[:_SHOWN_KEY_CHARS] + "…"


def _segment(segment: int | str) -> str:
    if isinstance(segment, int):
        return f"[{segment}]"
    key = _shown(segment)
    if _NAME.match(key):
        return f".{key}"
    return f"[{json.dumps(key, ensure_ascii=False)}]"


def render_path(path: Sequence[int | str]) -> str:
    """A JSON path such as ``$[3].payload.sku``: array indices and object keys."""
    if len(path) > _SHOWN_SEGMENTS:
        half = _SHOWN_SEGMENTS // 2
        head = "".join(_segment(s) for s in path[:half])
        tail = "".join(_segment(s) for s in path[-half:])
        return f"${head}…{tail}"
    return "$" + "".join(_segment(s) for s in path)


def _where(line: int) -> str:
    return f"line {line}: " if line else ""


def not_json(reason: int, position: int, line: int = 0) -> MalformedBatchError:
    """The document (or NDJSON line) is not JSON; ``position`` is its byte offset."""
    return MalformedBatchError(
        f"{_where(line)}not valid JSON: {REASONS[reason]} at byte {position}", rule="not_json"
    )


def duplicate_key(path: Sequence[int | str], line: int = 0) -> MalformedBatchError:
    """An object repeats a key; ``path`` ends with the repeated key."""
    key = path[-1]
    assert isinstance(key, str)
    shown = json.dumps(_shown(key), ensure_ascii=False)
    where = render_path(path)
    return MalformedBatchError(
        f"{_where(line)}duplicate key {shown} at {where}", rule="duplicate_key", field=where
    )


def too_deep(path: Sequence[int | str], max_depth: int, line: int = 0) -> MalformedBatchError:
    """A container opens more than ``max_depth`` levels down, at ``path``."""
    where = render_path(path)
    return MalformedBatchError(
        f"{_where(line)}JSON nested deeper than {max_depth} levels at {where}",
        rule="max_depth",
        field=where,
    )
