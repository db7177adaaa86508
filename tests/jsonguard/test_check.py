"""The guard on the documents it exists for: smuggled duplicate keys, runaway nesting,
NDJSON, objects large enough to be hashed, and everything else left alone.

Each test runs the compiled and the Python scanner (``_scanners``).
"""

from __future__ import annotations

import json
from types import ModuleType

import msgspec
import pytest

import headwater._jsonguard as guard
from headwater._jsonguard import _python
from headwater.demo.traffic import Traffic
from headwater.errors import MalformedBatchError
from tests.jsonguard._scanners import NAMES, compiled, scanner, verdict


@pytest.fixture(params=NAMES)
def scan(request: pytest.FixtureRequest) -> ModuleType:
    return scanner(request.param)


def refusal(scan: ModuleType, data: bytes, **kwargs: int) -> str:
    with pytest.raises(MalformedBatchError) as caught:
        scan.check_json(data, **kwargs)
    return str(caught.value)


def test_the_smuggled_user_id_is_refused(scan: ModuleType) -> None:
    body = b'[{"user_id":"victim","user_id":"attacker"}]'
    assert msgspec.json.decode(body) == [{"user_id": "attacker"}]  # what the guard is for
    assert refusal(scan, body) == 'duplicate key "user_id" at $[0].user_id'


def test_an_escaped_spelling_is_the_same_key(scan: ModuleType) -> None:
    body = rb'[{"user_id":"victim","user\u005fid":"attacker"}]'
    assert refusal(scan, body) == 'duplicate key "user_id" at $[0].user_id'
    # Every escape decodes: short ones, \u in either case, surrogate pairs.
    assert "duplicate key" in refusal(scan, rb'{"a\"b\/":1,"a\u0022b/":2}')
    assert "duplicate key" in refusal(scan, b'{"\\u00E9":1,"\xc3\xa9":2}')
    assert "duplicate key" in refusal(scan, rb'{"\ud83d\ude00":1,"\uD83D\uDE00":2}')
    assert "duplicate key" in refusal(scan, rb'{"\t":1,"\u0009":2}')
    # Keys that differ once decoded stay distinct.
    scan.check_json(rb'{"a\\u0062":1,"ab":2,"a\u005c":3,"a/":4}')


def test_a_duplicate_in_a_nested_payload_names_its_path(scan: ModuleType) -> None:
    texts = [json.dumps(e) for e in Traffic(seed=3).batch(5)]
    assert '"payload": {"' in texts[3]
    texts[3] = texts[3].replace('"payload": {', '"payload": {"sku": "a", "sku": "b", ')
    body = ("[" + ", ".join(texts) + "]").encode()
    assert refusal(scan, body) == 'duplicate key "sku" at $[3].payload.sku'


def test_paths_quote_keys_that_are_not_names(scan: ModuleType) -> None:
    message = refusal(scan, b'{"a b":[0,{"x":{"\xc3\xa9":1,"\xc3\xa9":2}}]}')
    assert message == 'duplicate key "é" at $["a b"][1].x["é"]'
    long_key = "k" * 100
    message = refusal(scan, f'[{{"{long_key}": 1, "x": 2, "{long_key}": 3}}]'.encode())
    assert message == f'duplicate key "{"k" * 64}…" at $[0]["{"k" * 64}…"]'


def test_depth_64_passes_and_65_is_refused(scan: ModuleType) -> None:
    # A batch is level 1, an event 2, its payload 3: 61 levels more inside the payload.
    inner = "[" * 61 + "]" * 61
    event = json.dumps({"payload": {"nested": "@"}}).replace('"@"', inner)
    scan.check_json(f"[{event}]".encode())
    deeper = event.replace(inner, "[" + inner + "]")
    message = refusal(scan, f"[{deeper}]".encode())
    assert message.startswith("JSON nested deeper than 64 levels at $[0].payload.nested[0]")
    scan.check_json(b"[" * 64 + b"]" * 64)
    assert "deeper than 64 levels" in refusal(scan, b"[" * 65 + b"]" * 65)
    assert "deeper than 64 levels" in refusal(scan, b'{"a":' * 65 + b"1" + b"}" * 65)


def test_nesting_far_past_the_limit_is_refused_without_recursion(scan: ModuleType) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(RecursionError):
        msgspec.json.decode(body)
    assert "deeper than 64 levels" in refusal(scan, body)
    assert "deeper than 3 levels" in refusal(scan, b"[[[[]]]]", max_depth=3)
    scan.check_json(b"[[[]]]", max_depth=3)
    scan.check_json(b"[" * 256 + b"]" * 256, max_depth=256)


@pytest.mark.parametrize("max_depth", [0, -1, 257])
def test_a_depth_limit_out_of_range_is_a_caller_error(scan: ModuleType, max_depth: int) -> None:
    with pytest.raises(ValueError, match="max_depth must be between 1 and 256"):
        scan.check_json(b"[]", max_depth=max_depth)
    with pytest.raises(ValueError, match="max_depth must be between 1 and 256"):
        scan.check_ndjson(b"[]", max_depth=max_depth)


def test_a_realistic_batch_passes(scan: ModuleType) -> None:
    events = Traffic(seed=11, invalid_rate=0.05).batch(500)
    scan.check_json(msgspec.json.encode(events))
    scan.check_json(json.dumps(events, indent=2, ensure_ascii=True).encode())
    scan.check_json(json.dumps(events, ensure_ascii=False).encode())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not valid JSON: unexpected end of data at byte 0"),
        (b"[1,2", "not valid JSON: unexpected end of data at byte 4"),
        (b"[1,]", "not valid JSON: unexpected character at byte 3"),
        (b'{"a":1,}', "not valid JSON: unexpected character at byte 7"),
        (b'{"a" 1}', "not valid JSON: unexpected character at byte 5"),
        (b"{1:2}", "not valid JSON: unexpected character at byte 1"),
        (b"[1] x", "not valid JSON: unexpected character at byte 4"),
        (b"\xef\xbb\xbf[]", "not valid JSON: unexpected character at byte 0"),
        (b"[NaN]", "not valid JSON: unexpected character at byte 1"),
        (b"[-Infinity]", "not valid JSON: invalid number at byte 2"),
        (b"[tru]", "not valid JSON: unexpected character at byte 1"),
        (b"[01]", "not valid JSON: unexpected character at byte 2"),
        (b"[1.]", "not valid JSON: invalid number at byte 3"),
        (b"[1e+]", "not valid JSON: invalid number at byte 4"),
        (b"[.5]", "not valid JSON: unexpected character at byte 1"),
        (b'["a\x01"]', "not valid JSON: invalid string at byte 3"),
        (b'["\\x"]', "not valid JSON: invalid string at byte 2"),
        (b'["\\u12G4"]', "not valid JSON: invalid string at byte 2"),
        (b'["\\ud800"]', "not valid JSON: invalid string at byte 2"),
        (b'["\\udc00"]', "not valid JSON: invalid string at byte 2"),
        (b'["\\ud800\\u0041"]', "not valid JSON: invalid string at byte 2"),
        (b'["\xff"]', "not valid JSON: invalid UTF-8 at byte 2"),
        (b'["\xc0\x80"]', "not valid JSON: invalid UTF-8 at byte 2"),
        (b'["\xed\xa0\x80"]', "not valid JSON: invalid UTF-8 at byte 2"),
        (b'["\xf4\x90\x80\x80"]', "not valid JSON: invalid UTF-8 at byte 2"),
        (b'["abc', "not valid JSON: unexpected end of data at byte 5"),
    ],
)
def test_what_msgspec_refuses_is_refused(scan: ModuleType, body: bytes, message: str) -> None:
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(body)
    assert refusal(scan, body) == message


@pytest.mark.parametrize(
    "body",
    [
        b"1",
        b' "x" ',
        b"[]",
        b"{}",
        b"[ ]",
        b"{ }",
        b"\t\r\n[\r\n1 , 2\t]\n",
        b"[-0, 0.5, 1E+2, 1e-400, -12.5e3]",
        b"[1e400, 123456789012345678901234567890]",  # out of range: the decoder's business
        b'["\\"\\\\\\/\\b\\f\\n\\r\\t\\u0000\\uFFFF\\ud83d\\ude00"]',
        b'["\x7f\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf", "{[\\"]}:,"]',
        b'{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}',  # one key in many objects
        b'[{"":1,"\\u0000":2," ":3}]',
    ],
)
def test_valid_json_without_duplicates_passes(scan: ModuleType, body: bytes) -> None:
    scan.check_json(body)


def test_large_objects_are_hashed_and_still_exact(scan: ModuleType) -> None:
    keys = [f"key{i}" for i in range(2000)]
    big = {k: i for i, k in enumerate(keys)}
    body = json.dumps([big, {"inner": big, "after": 1}]).encode()
    scan.check_json(body)
    # A repeat long after the object switched to hashing, of an early and a late key.
    for repeated in ("key3", "key1999"):
        text = json.dumps(big)[:-1] + f', "{repeated}": 0}}'
        message = refusal(scan, f'[{{"x":{text}}}]'.encode())
        assert message == f'duplicate key "{repeated}" at $[0].x.{repeated}'
    # The repeat spelled with escapes, in a hashed object.
    text = json.dumps(big)[:-1] + r', "key\u0031\u0030": 0}'
    assert refusal(scan, text.encode()) == 'duplicate key "key10" at $.key10'
    # An outer object that keeps growing after an inner hashed one closed.
    outer = {f"o{i}": (big if i == 20 else i) for i in range(100)}
    text = json.dumps(outer)[:-1] + ', "o20": 1}'
    assert refusal(scan, text.encode()) == 'duplicate key "o20" at $.o20'


def test_many_open_keys_and_escaped_keys(scan: ModuleType) -> None:
    # Three levels of 60 keys open at once, every key escaped.
    def level(depth: int) -> str:
        members = [f'"k\\u00{40 + i:02x}{depth}": {i}' for i in range(59)]
        inner = level(depth + 1) if depth < 3 else "0"
        return "{" + ", ".join([*members, f'"next": {inner}']) + "}"

    body = level(1).encode()
    scan.check_json(body)
    doubled = body.replace(b'"next": 0', b'"next": 0, "k\\u00403": 1')
    assert refusal(scan, doubled) == 'duplicate key "k@3" at $.next.next["k@3"]'


@pytest.mark.parametrize(
    "special",
    [
        *(b'"', b"\\", b"\\n", b"\\u00e9", b"\\ud83d\\ude00"),  # quotes and escapes
        *(b"\x01", b"\x7f", b"\xc3\xa9", b"\xf0\x9f\x98\x80"),  # a control, DEL, UTF-8
        *(b"\xff", b"\xc3", b"\xe2\x82"),  # broken UTF-8
    ],
)
def test_string_content_is_read_right_at_every_offset(special: bytes) -> None:
    # The compiled scanner takes string content 16 or 8 bytes at a time: a byte that
    # ends plain content must stop it wherever it falls in or across a block.
    compiled_form = scanner("compiled")
    for before in range(40):
        for after in (0, 1, 7, 8, 15, 16, 17):
            text = b"a" * before + special + b"b" * after
            for body in (
                b'["' + text + b'"]',
                b'["' + text,
                b'{"' + text + b'":1,"' + text + b'":2}',
            ):
                expected = verdict(lambda body=body: _python.check_json(body))
                assert verdict(lambda body=body: compiled_form.check_json(body)) == expected, body


def test_bytes_like_input(scan: ModuleType) -> None:
    scan.check_json(bytearray(b'{"a":1}'))
    scan.check_json(memoryview(b'{"a":1}'))
    with pytest.raises(MalformedBatchError):
        scan.check_json(memoryview(b'{"a":1,"a":1}'))


def test_ndjson_lines_are_documents(scan: ModuleType) -> None:
    lines = [json.dumps(e) for e in Traffic(seed=5).batch(4)]
    scan.check_ndjson("\n".join(lines).encode())
    scan.check_ndjson(("\r\n".join(lines) + "\r\n").encode())
    scan.check_ndjson(b"\n \x0b\x0c\t\n" + "\r".join(lines).encode() + b"\n\n")
    scan.check_ndjson(b"")
    smuggled = lines[2][:-1] + ', "user_id": "x"}'
    body = "\n".join([lines[0], "", lines[1], smuggled]).encode()
    assert verdict(lambda: scan.check_ndjson(body)) == (
        'line 4: duplicate key "user_id" at $.user_id'
    )
    deep = "[" * 65 + "]" * 65
    assert verdict(lambda: scan.check_ndjson(f"{lines[0]}\r\n{deep}".encode())) == (
        "line 2: JSON nested deeper than 64 levels at "
        "$[0][0][0][0][0][0][0][0]…[0][0][0][0][0][0][0][0]"
    )


def test_ndjson_malformed_lines_are_refused_or_left_to_the_decoder(scan: ModuleType) -> None:
    good = json.dumps({"a": 1})
    body = f'{good}\n{{"b": 1, oops\n{good}'.encode()
    assert verdict(lambda: scan.check_ndjson(body)) == (
        "line 2: not valid JSON: unexpected character at byte 9"
    )
    scan.check_ndjson(body, allow_malformed_lines=True)
    # A line split inside a document is two malformed lines, as the validator sees it.
    assert "line 1: not valid JSON" in verdict(lambda: scan.check_ndjson(b'{"a":\n1}'))
    # Duplicates and depth are refused either way.
    body += b'\n{"c":1,"c":2}'
    assert verdict(lambda: scan.check_ndjson(body, allow_malformed_lines=True)) == (
        'line 4: duplicate key "c" at $.c'
    )


def test_the_package_uses_the_compiled_scanner_when_it_is_built() -> None:
    assert (compiled() is not None) == guard.COMPILED
    assert verdict(lambda: guard.check_json(b'{"a":1,"a":2}')) == 'duplicate key "a" at $.a'
    assert verdict(lambda: guard.check_ndjson(b'{"a":1,"a":2}', allow_malformed_lines=True)) == (
        'line 1: duplicate key "a" at $.a'
    )
    guard.check_json(b"[" * 3 + b"]" * 3, max_depth=3)


def test_the_compiled_scanner_is_built() -> None:
    scanner("compiled")  # skips where no compiler was found; fails under CI=true
