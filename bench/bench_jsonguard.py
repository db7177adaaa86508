"""Cost of the JSON guard (duplicate keys, depth) beside msgspec decoding the same bytes.

    .venv/bin/python bench/bench_jsonguard.py

Builds realistic 500-event batches with the demo traffic generator (as
``bench_validate.py`` does) and measures, pinned to one core, best of several
repetitions, the time per batch of:

(a) ``check_json`` (the compiled scanner) on the batches as msgspec encodes them,
(b) ``msgspec.json.decode`` of the same bytes into Python objects, and the ratio a / b,
(c) ``check_json`` on the same events written by ``json.dumps`` (spaces after ``,`` and
    ``:``, non-ASCII text left unescaped), beside its own decode,
(d) ``check_ndjson`` on the events as NDJSON, beside decoding each line,
(e) the worst case for the duplicate check: one 1 MB object of distinct keys (the
    compiled scanner hashes every key past the 16th), beside its decode,
(f) the Python scanner (the fallback where no C compiler was found) on (a)'s batches.

The garbage collector is off while timing, which makes msgspec's decode (and so the
ratio's denominator) as fast as it gets. Prints one JSON object on stdout; compare the
ratios, measured in the same run, before the absolute figures.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version

import msgspec

from _common import emit, pin_one_core  # bench/ is on sys.path when run as a script
from headwater._jsonguard import COMPILED, _python, check_json, check_ndjson
from headwater.demo.traffic import Traffic
from headwater.errors import MalformedBatchError

BATCH = 500
BATCHES = 200
PYTHON_BATCHES = 10
REPEATS = 7
TARGET_RATIO = 0.05
TARGET_MS_PER_121KB = 0.3


def per_call_ms(fn: Callable[[bytes], object], bodies: list[bytes]) -> float:
    """The best, over REPEATS runs through ``bodies``, of the mean time of one call."""
    best = float("inf")
    gc.collect()
    gc.disable()
    try:
        for _ in range(REPEATS):
            start = time.perf_counter()
            for body in bodies:
                fn(body)
            best = min(best, (time.perf_counter() - start) / len(bodies))
    finally:
        gc.enable()
    return best * 1000


def decode_lines(body: bytes) -> None:
    decode = msgspec.json.decode
    for line in body.splitlines():
        if line.strip():
            decode(line)


def compare(
    check: Callable[[bytes], object], decode: Callable[[bytes], object], bodies: list[bytes]
) -> dict[str, float]:
    check_ms = per_call_ms(check, bodies)
    decode_ms = per_call_ms(decode, bodies)
    kb = sum(len(b) for b in bodies) / len(bodies) / 1000
    return {
        "batch_kb": round(kb, 1),
        "check_ms": round(check_ms, 4),
        "decode_ms": round(decode_ms, 4),
        "ratio": round(check_ms / decode_ms, 4),
        "check_mb_per_s": round(kb / check_ms, 0),
    }


def main() -> None:
    pin_one_core()
    now = datetime.now(UTC)
    traffic = Traffic(seed=7, now=lambda: now)
    events = [traffic.batch(BATCH) for _ in range(BATCHES)]
    compact = [msgspec.json.encode(batch) for batch in events]
    spaced = [json.dumps(batch, ensure_ascii=False).encode() for batch in events]
    ndjson = [b"\n".join(msgspec.json.encode(e) for e in batch) + b"\n" for batch in events]
    big = [json.dumps({f"key_{i:07d}": i for i in range(62_000)}).encode()]

    # Sanity before timing: every body passes, and a smuggled key in the last is found.
    for body in compact + spaced + big:
        check_json(body)
    _python.check_json(compact[0])
    for body in ndjson:
        check_ndjson(body)
    smuggled = compact[-1][:-2] + b',"user_id":"x"}]'
    try:
        check_json(smuggled)
    except MalformedBatchError as exc:
        refused = str(exc)
    else:
        refused = ""
    if not refused.startswith("duplicate key"):
        raise AssertionError(f"the smuggled key went through: {refused!r}")

    typical = compare(check_json, msgspec.json.decode, compact)
    python_ms = per_call_ms(_python.check_json, compact[:PYTHON_BATCHES])
    figures = {
        "msgspec": version("msgspec"),
        "compiled": COMPILED,
        "batch_size": BATCH,
        "batches": BATCHES,
        "repeats": REPEATS,
        "compact": typical,
        "spaced_unicode": compare(check_json, msgspec.json.decode, spaced),
        "ndjson": compare(check_ndjson, decode_lines, ndjson),
        "one_mb_object": compare(check_json, msgspec.json.decode, big),
        "python_fallback_ms": round(python_ms, 3),
        "python_fallback_ratio": round(python_ms / typical["decode_ms"], 2),
        "target_ratio": TARGET_RATIO,
        "target_ms_per_121kb": TARGET_MS_PER_121KB,
        "targets_met": COMPILED
        and (
            typical["ratio"] <= TARGET_RATIO
            or typical["check_ms"] * 121 / typical["batch_kb"] <= TARGET_MS_PER_121KB
        ),
    }
    emit("jsonguard", figures)


if __name__ == "__main__":
    main()
