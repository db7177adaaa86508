"""Refuse JSON that two readers could read differently: repeated keys, runaway nesting.

``{"user_id": "victim", "user_id": "attacker"}`` is accepted by msgspec, as by most
fast parsers, and the last value wins; a reviewer or an intermediary that keeps the
first reads another event than the one stored. ``check_json`` refuses, with a
``MalformedBatchError`` that names the key and its JSON path, any object that repeats a
key anywhere in the document (keys compare by their decoded text, so ``"user_id"`` and
``"user\\u005fid"`` are one key), and any container nested deeper than ``max_depth``
(msgspec would raise ``RecursionError`` near Python's recursion limit instead). It
refuses what msgspec refuses as malformed, too, invalid UTF-8 included, and only that:
the range of numbers is the decoder's business (``1e400`` is JSON that msgspec declines
to hold as a float, and the validator rejects that event alone).

Nothing is decoded: the check reads the bytes once and allocates no Python object per
key, so it can run before the decoder on every publish. ``check_ndjson`` checks each line
of newline-delimited JSON as its own document.

The scanner is compiled to C (``_compiled.pyx``) where headwater was installed with a C
compiler (``COMPILED``); elsewhere a Python scanner (``_python.py``) gives the same
verdicts and messages, more slowly.
"""

from __future__ import annotations

from headwater._jsonguard._messages import DEFAULT_MAX_DEPTH, MAX_DEPTH_LIMIT, JsonShape

try:
    from headwater._jsonguard._compiled import check_json as _check_json
    from headwater._jsonguard._compiled import check_ndjson as _check_ndjson

    #: True when the compiled scanner is built and importable.
    COMPILED = True
except ImportError:  # installed where no C compiler was found: the Python scanner
    from headwater._jsonguard._python import check_json as _check_json
    from headwater._jsonguard._python import check_ndjson as _check_ndjson

    COMPILED = False

__all__ = [
    "COMPILED",
    "DEFAULT_MAX_DEPTH",
    "MAX_DEPTH_LIMIT",
    "JsonShape",
    "check_json",
    "check_ndjson",
]


def check_json(data: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> JsonShape:
    """Raise ``MalformedBatchError`` unless ``data`` is one JSON document whose objects
    never repeat a key and whose containers nest at most ``max_depth`` deep.

    The message says what and where: ``duplicate key "sku" at $[3].payload.sku``,
    ``JSON nested deeper than 64 levels at $[0].payload.a``, or, for a document that is
    not JSON, ``not valid JSON: invalid string at byte 17``. ``max_depth`` counts every
    array and object (a batch of events with flat payloads is 3 deep) and must be
    between 1 and ``MAX_DEPTH_LIMIT`` (``ValueError`` otherwise).

    What it returns, read in the same pass: for a document that is an array, how many
    elements it has and the length in bytes of the longest (``JsonShape``): the
    gateway's event count for the rate limit, and its bound on an event's size, without
    reading the batch again.
    """
    return _check_json(data, max_depth=max_depth)


def check_ndjson(
    data: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH, allow_malformed_lines: bool = False
) -> None:
    """``check_json`` for each line of newline-delimited JSON; messages start with the
    line's number (``line 4: duplicate key ...``, 1-based, blank lines counted).

    Lines are cut as ``bytes.splitlines`` cuts them (at ``\\n``, ``\\r`` and ``\\r\\n``)
    and blank lines are passed over, as the validator does. A line that is not JSON is
    refused, unless ``allow_malformed_lines``: then it is passed over, for the decoder
    to reject that event alone as the NDJSON contract says (duplicate keys and depth
    are refused either way).
    """
    _check_ndjson(data, max_depth=max_depth, allow_malformed_lines=allow_malformed_lines)
