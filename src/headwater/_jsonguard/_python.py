"""The guard in Python, for installs without the compiled scanner (``_compiled.pyx``).

The same machine as the compiled one, token by token instead of byte by byte: regular
expressions take strings and numbers whole, and the first problem in document order
wins, so that both scanners refuse a document with the same message.
"""

from __future__ import annotations

import re

from headwater._jsonguard._messages import (
    CHARACTER,
    DEFAULT_MAX_DEPTH,
    EOF,
    NUMBER,
    STRING,
    UTF8,
    JsonShape,
    check_max_depth,
    decode_key,
    duplicate_key,
    not_json,
    too_deep,
)

__all__ = ["check_json", "check_ndjson"]

_WS = re.compile(rb"[ \t\n\r]*")
_WS_BYTES = frozenset(b" \t\n\r")
# The longest run of valid string content: what stops it is the closing quote or the
# problem. Nothing follows the group in the pattern, so it never backtracks.
_CONTENT = re.compile(rb'(?:[^"\\\x00-\x1f]+|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*')
# Tokenizes valid content's escapes (``\\\\u...`` is an escaped backslash, then text).
_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)
_DIGITS = re.compile(rb"[0-9]*")
_DIGIT_BYTES = frozenset(b"0123456789")
_LITERALS = {ord("t"): b"true", ord("f"): b"false", ord("n"): b"null"}
_QUOTE, _MINUS, _ZERO, _DOT, _COMMA, _COLON = b'"-0.,:'
_OPEN_OBJECT, _CLOSE_OBJECT, _OPEN_ARRAY, _CLOSE_ARRAY = b"{}[]"

_VALUE, _AFTER, _KEY = 0, 1, 2


class _Syntax(Exception):  # noqa: N818 - internal signal, never seen by callers
    """Where and why the document stops being JSON (told apart from duplicates and depth,
    which ``allow_malformed_lines`` does not pass over)."""

    def __init__(self, reason: int, position: int) -> None:
        super().__init__(reason, position)
        self.reason = reason
        self.position = position


def check_json(data: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> JsonShape:
    """Raise ``MalformedBatchError`` unless ``data`` is one JSON document whose objects
    never repeat a key and whose containers nest at most ``max_depth`` deep; its shape."""
    check_max_depth(max_depth)
    try:
        return _scan(bytes(data), max_depth, 0)
    except _Syntax as exc:
        raise not_json(exc.reason, exc.position) from None


def check_ndjson(
    data: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH, allow_malformed_lines: bool = False
) -> None:
    """``check_json`` for each non-blank line of newline-delimited JSON (lines as
    ``bytes.splitlines`` cuts them); with ``allow_malformed_lines`` a line that is not
    JSON is passed over, for the decoder to reject that event alone."""
    check_max_depth(max_depth)
    for number, line in enumerate(bytes(data).splitlines(), 1):
        if not line.strip():
            continue
        try:
            _scan(line, max_depth, number)
        except _Syntax as exc:
            if not allow_malformed_lines:
                raise not_json(exc.reason, exc.position, number) from None


def _skip(data: bytes, i: int) -> int:
    if i < len(data) and data[i] in _WS_BYTES:
        m = _WS.match(data, i)
        assert m is not None  # the pattern matches the empty string
        return m.end()
    return i


def _string(data: bytes, i: int) -> int:
    """The index after the string whose content starts at ``i``, or the first problem."""
    m = _CONTENT.match(data, i)
    assert m is not None  # the pattern matches the empty string
    q = m.end()
    problem: tuple[int, int] | None = None
    if q >= len(data):
        problem = (q, EOF)
    elif data[q] != _QUOTE:
        problem = (q, STRING)  # a control character or a bad escape
    content = data[i:q]
    if not content.isascii():
        try:
            content.decode("utf-8")
        except UnicodeDecodeError as exc:
            problem = (i + exc.start, UTF8)  # always before q
    if b"\\u" in content:
        lone = _lone_surrogate(content)
        if lone is not None and (problem is None or i + lone < problem[0]):
            problem = (i + lone, STRING)
    if problem is not None:
        raise _Syntax(problem[1], problem[0])
    return q + 1


def _lone_surrogate(content: bytes) -> int | None:
    """Where the first ``\\u`` surrogate escape that is not one half of a pair starts."""
    pending = -1  # start of a high surrogate waiting for its low half
    expect = -1  # where that low half must start
    for m in _ESCAPE.finditer(content):
        unit = int(m.group(1), 16) if m.group(1) else -1
        if pending >= 0:
            if m.start() != expect or not 0xDC00 <= unit <= 0xDFFF:
                return pending
            pending = -1
            continue
        if 0xD800 <= unit <= 0xDBFF:
            pending, expect = m.start(), m.end()
        elif 0xDC00 <= unit <= 0xDFFF:
            return m.start()
    return pending if pending >= 0 else None


def _digits(data: bytes, i: int) -> int:
    """The index after at least one digit from ``i``, or an invalid number there."""
    if i >= len(data) or data[i] not in _DIGIT_BYTES:
        raise _Syntax(NUMBER, i)
    m = _DIGITS.match(data, i)
    assert m is not None  # the pattern matches the empty string
    return m.end()


def _number(data: bytes, i: int) -> int:
    """The index after ``-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?`` at ``i``."""
    if data[i] == _MINUS:
        i += 1
    i = i + 1 if i < len(data) and data[i] == _ZERO else _digits(data, i)
    if i < len(data) and data[i] == _DOT:
        i = _digits(data, i + 1)
    if i < len(data) and data[i] in b"eE":
        i += 1
        if i < len(data) and data[i] in b"+-":
            i += 1
        i = _digits(data, i)
    return i


class _Open:
    """The containers open at the scan's position: the keys each object has seen (None
    for an array), and the path to the current element (its index or its key)."""

    __slots__ = ("counts", "keys", "seen")

    def __init__(self) -> None:
        self.seen: list[set[str] | None] = []
        self.counts: list[int] = []
        self.keys: list[str] = []

    def push(self, is_object: bool) -> None:
        self.seen.append(set() if is_object else None)
        self.counts.append(0)
        self.keys.append("")

    def pop(self) -> None:
        self.seen.pop()
        self.counts.pop()
        self.keys.pop()

    def path(self) -> list[int | str]:
        return [self.keys[d] if s is not None else self.counts[d] for d, s in enumerate(self.seen)]


def _scan(data: bytes, max_depth: int, line: int) -> JsonShape:
    """Raise at the first problem of the document ``data`` (one NDJSON line: ``line``);
    the document's shape."""
    open_ = _Open()
    i = _skip(data, 0)
    state = _VALUE
    elements = longest = start = 0
    while True:
        # An element of a top-level array starts at a value one level deep, and ends
        # where the state after it begins.
        in_top_array = len(open_.seen) == 1 and open_.seen[0] is None
        if state == _VALUE:
            if in_top_array:
                start = i
            i, state = _value(data, i, open_, max_depth, line)
        elif state == _KEY:
            i = _member(data, i, open_, line)
            state = _VALUE
        else:
            if in_top_array:
                elements += 1
                longest = max(longest, i - start)
            i = _skip(data, i)
            if not open_.seen:
                if i < len(data):
                    raise _Syntax(CHARACTER, i)  # trailing characters
                return JsonShape(elements, longest)
            i, state = _after(data, i, open_)


def _value(data: bytes, i: int, open_: _Open, max_depth: int, line: int) -> tuple[int, int]:
    """Read the value at ``i``, or open its container; the index and state after it."""
    if i >= len(data):
        raise _Syntax(EOF, i)
    c = data[i]
    if c == _QUOTE:
        return _string(data, i + 1), _AFTER
    if c == _MINUS or c in _DIGIT_BYTES:
        return _number(data, i), _AFTER
    if c in _LITERALS:
        literal = _LITERALS[c]
        if not data.startswith(literal, i):
            raise _Syntax(CHARACTER, i)
        return i + len(literal), _AFTER
    if c not in (_OPEN_OBJECT, _OPEN_ARRAY):
        raise _Syntax(CHARACTER, i)
    if len(open_.seen) == max_depth:
        raise too_deep(open_.path(), max_depth, line)
    open_.push(c == _OPEN_OBJECT)
    i = _skip(data, i + 1)
    if i < len(data) and data[i] == (_CLOSE_OBJECT if c == _OPEN_OBJECT else _CLOSE_ARRAY):
        open_.pop()
        return i + 1, _AFTER
    return i, _KEY if c == _OPEN_OBJECT else _VALUE


def _after(data: bytes, i: int, open_: _Open) -> tuple[int, int]:
    """After a value inside a container: a comma and the next one, or the close."""
    if i >= len(data):
        raise _Syntax(EOF, i)
    c = data[i]
    is_object = open_.seen[-1] is not None
    if c == _COMMA:
        open_.counts[-1] += 1
        return _skip(data, i + 1), _KEY if is_object else _VALUE
    if c != (_CLOSE_OBJECT if is_object else _CLOSE_ARRAY):
        raise _Syntax(CHARACTER, i)
    open_.pop()
    return i + 1, _AFTER


def _member(data: bytes, i: int, open_: _Open, line: int) -> int:
    """Read a member's key and colon; the index of its value."""
    if i >= len(data):
        raise _Syntax(EOF, i)
    if data[i] != _QUOTE:
        raise _Syntax(CHARACTER, i)
    after = _string(data, i + 1)
    key = decode_key(data[i + 1 : after - 1])
    open_.keys[-1] = key
    members = open_.seen[-1]
    assert members is not None
    if key in members:
        raise duplicate_key(open_.path(), line)
    members.add(key)
    i = _skip(data, after)
    if i >= len(data):
        raise _Syntax(EOF, i)
    if data[i] != _COLON:
        raise _Syntax(CHARACTER, i)
    return _skip(data, i + 1)
