"""Generated documents: the compiled and the Python scanner give the same verdict and
message, and both agree with a reference built from the standard library and msgspec.

Documents are arrays and objects of strings, numbers and literals, with keys drawn from
a small pool (so that objects repeat them) and spelled with random escapes, strings
full of quotes, brackets, backslashes, control characters and astral characters, and
random whitespace; a share of them then loses, gains or changes a byte, which makes
most of them malformed.

The reference: msgspec decides what is JSON (floats go to ``Decimal``, so that their
range is not in question), ``json.loads`` with an ``object_pairs_hook`` finds repeated
keys, and the depth is measured on what it returns. A document with both a repeated
key and excess depth may be refused for either: the scanners report the first in
document order, which the reference does not know.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from headwater.errors import MalformedBatchError
from tests.jsonguard._scanners import available, verdict

PROPERTY_SETTINGS = settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

KEYS = ["a", "b", "user_id", "sku", "", "é", 'a"b', "\\", "{}", "😀", "x y", "\x00", "/"]
SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f"}
SHORT_ESCAPES |= {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
WHITESPACE = st.sampled_from(["", "", "", " ", "\n", "\t", " \r\n "])
NUMBERS = st.from_regex(
    r"-?(0|[1-9][0-9]{0,6})(\.[0-9]{1,4})?([eE][+-]?[0-9]{1,3})?", fullmatch=True
)
TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from('"\\/{}[]:,\x00\x1f\n\x7fé€😀\u2028'), st.characters(codec="utf-8")
    ),
    max_size=8,
)
EDITS = st.sampled_from(list(b'"\\{}[],:0-.eEtu \n\x00\x1f\x7f\x80\xc3\xff'))

_DECODER = msgspec.json.Decoder(float_hook=Decimal)


def _unit(unit: int, upper: bool) -> str:
    text = f"\\u{unit:04x}"
    return text.upper().replace("\\U", "\\u") if upper else text


@st.composite
def encoded_string(draw: st.DrawFn, text: str) -> str:
    """``text`` as a JSON string literal, each character raw, short-escaped or \\u-escaped."""
    out = ['"']
    for ch in text:
        mode = draw(st.integers(0, 2))
        needs_escape = ch in '"\\' or ord(ch) < 0x20
        if mode == 0 and not needs_escape:
            out.append(ch)
        elif mode <= 1 and ch in SHORT_ESCAPES:
            out.append(SHORT_ESCAPES[ch])
        elif ord(ch) < 0x10000:
            out.append(_unit(ord(ch), draw(st.booleans())))
        else:
            cp = ord(ch) - 0x10000
            upper = draw(st.booleans())
            out.append(_unit(0xD800 + (cp >> 10), upper) + _unit(0xDC00 + (cp & 0x3FF), upper))
    out.append('"')
    return "".join(out)


@st.composite
def json_text(draw: st.DrawFn, depth: int = 0) -> str:
    """A JSON value whose objects may repeat keys."""
    kind = draw(st.integers(0, 2 if depth < 6 else 0))
    ws = draw(WHITESPACE)
    if kind == 0:
        scalar = draw(st.integers(0, 3))
        if scalar == 0:
            return draw(encoded_string(draw(TEXT)))
        if scalar == 1:
            return draw(NUMBERS)
        return ws + draw(st.sampled_from(["true", "false", "null"])) + ws
    if kind == 1:
        items = [draw(json_text(depth + 1)) for _ in range(draw(st.integers(0, 4)))]
        return "[" + ws + ("," + ws).join(items) + ws + "]"
    members = []
    keys = draw(st.sampled_from([KEYS, KEYS, KEYS[:3]]))  # a few objects of few names
    for _ in range(draw(st.integers(0, 5))):
        key = draw(encoded_string(draw(st.sampled_from(keys))))
        members.append(key + ws + ":" + ws + draw(json_text(depth + 1)))
    return "{" + ws + ("," + ws).join(members) + ws + "}"


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    """A generated document, sometimes with a byte deleted, inserted or replaced."""
    data = bytearray(draw(json_text()).encode("utf-8"))
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        where = draw(st.integers(0, len(data)))
        edit = draw(st.integers(0, 2))
        if edit == 0 and where < len(data):
            del data[where]
        elif edit == 1:
            data.insert(where, draw(EDITS))
        elif where < len(data):
            data[where] = draw(EDITS)
    return bytes(data)


class Members(list[tuple[str, Any]]):
    """An object as json.loads read it, every member kept (a dict would drop repeats)."""


def _depth(value: Any) -> int:
    if isinstance(value, Members):
        return 1 + max((_depth(v) for _, v in value), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def reference(data: bytes, max_depth: int) -> set[str] | None:
    """None when msgspec refuses ``data`` as not JSON; else the problems it has."""
    try:
        _DECODER.decode(data)
    except msgspec.DecodeError:
        return None
    problems = set()

    def pairs(items: list[tuple[str, Any]]) -> Members:
        if len({k for k, _ in items}) != len(items):
            problems.add("duplicate key")
        return Members(items)

    value = json.loads(data.decode("utf-8"), object_pairs_hook=pairs, parse_float=Decimal)
    if _depth(value) > max_depth:
        problems.add("JSON nested deeper")
    return problems


def _kind(message: str) -> str:
    for kind in ("ok", "not valid JSON", "duplicate key", "JSON nested deeper"):
        if kind in message:
            return kind
    raise AssertionError(message)


def _check(data: bytes, max_depth: int) -> str:
    verdicts = {
        scan.__name__: verdict(lambda scan=scan: scan.check_json(data, max_depth=max_depth))
        for scan in available()
    }
    assert len(set(verdicts.values())) == 1, verdicts
    return next(iter(verdicts.values()))


@PROPERTY_SETTINGS
@given(data=documents(), max_depth=st.sampled_from([1, 2, 3, 4, 5, 64, 64, 64]))
def test_the_scanners_agree_with_each_other_and_with_the_reference(
    data: bytes, max_depth: int
) -> None:
    found = _check(data, max_depth)
    expected = reference(data, max_depth)
    event(_kind(found))
    if expected is None:
        assert found != "ok", "accepted a document msgspec refuses"
    elif not expected:
        assert found == "ok", "refused valid JSON without duplicates"
    else:
        assert _kind(found) in expected, (found, expected)


@PROPERTY_SETTINGS
@given(
    keys=st.lists(st.sampled_from([f"k{i}" for i in range(200)]), min_size=14, max_size=120),
    escape=st.booleans(),
)
def test_large_objects_find_exactly_the_first_repeat(keys: list[str], escape: bool) -> None:
    # Past 16 keys the compiled scanner hashes: it must still find the first repeat.
    def spelled(key: str) -> str:
        return '"\\u006b' + key[1:] + '"' if escape else f'"{key}"'

    inner = "{" + ",".join(f"{spelled(k)}:{i}" for i, k in enumerate(keys)) + "}"
    body = f'[{{"first":1,"inner":{inner},"last":[{inner}]}}]'.encode()
    found = _check(body, 64)
    seen: set[str] = set()
    repeat = None
    for key in keys:
        if key in seen:
            repeat = key
            break
        seen.add(key)
    if repeat is None:
        assert found == "ok"
    else:
        assert found == f'duplicate key "{repeat}" at $[0].inner.{repeat}'


_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])


@PROPERTY_SETTINGS
@given(data=documents())
def test_an_accepted_array_has_the_shape_msgspec_reads(data: bytes) -> None:
    # The gateway counts a batch's events for the rate limit, and bounds an event's
    # size, from the shape the guard returns instead of reading the batch again.
    shapes = set()
    for scan in available():
        try:
            shapes.add(scan.check_json(data))
        except MalformedBatchError:
            return
    assert len(shapes) == 1, shapes
    (shape,) = shapes
    try:
        elements = _RAW_LIST.decode(data)
    except msgspec.ValidationError:  # JSON, not an array
        assert shape == (0, 0)
        return
    event(f"{min(len(elements), 3)} elements")
    assert shape == (len(elements), max(map(len, elements), default=0))


@settings(PROPERTY_SETTINGS, max_examples=150)
@given(
    lines=st.lists(documents(), max_size=5),
    breaks=st.lists(st.sampled_from(["\n", "\r\n", "\r", "\n\n", "\n \t\x0b\n"]), max_size=6),
    allow=st.booleans(),
)
def test_ndjson_is_each_line_checked_alone(
    lines: list[bytes], breaks: list[str], allow: bool
) -> None:
    body = b"".join(
        line + (breaks[i % len(breaks)] if breaks else "\n").encode()
        for i, line in enumerate(lines)
    )
    verdicts = {
        scan.__name__: verdict(
            lambda scan=scan: scan.check_ndjson(body, max_depth=4, allow_malformed_lines=allow)
        )
        for scan in available()
    }
    assert len(set(verdicts.values())) == 1, verdicts
    # The same as checking each line that bytes.splitlines cuts, in order.
    expected = "ok"
    for number, line in enumerate(body.splitlines(), 1):
        if not line.strip():
            continue
        found = _check(line, 4)
        if found == "ok" or (allow and found.startswith("not valid JSON")):
            continue
        expected = f"line {number}: {found}"
        break
    assert next(iter(verdicts.values())) == expected
