"""The parts of one publish batch, in process: validation, encoding, de-duplication,
the bus write, the JSON guard and the rate limiter, each timed over the same batches.

Runs against whichever headwater is importable, so an older checkout can be paired with
this one: ``PYTHONPATH=<checkout>/src .venv/bin/python bench/bench_publish_parts.py``.
Older checkouts without the claim, the guard or the limiter report what they have.

    .venv/bin/python bench/bench_publish_parts.py [--batches 300]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

import headwater
from headwater.bus import open_bus
from headwater.bus.base import Message
from headwater.contract.loader import default_definitions
from headwater.contract.signal import encode_signal
from headwater.contract.validator import SignalValidator
from headwater.control import open_control_database
from headwater.dedupe import open_idempotency_window
from headwater.demo.traffic import Traffic

try:
    from headwater.registry.contracts import ContractRegistry
except ImportError:  # older checkouts
    from headwater.contract.registry import ContractRegistry  # type: ignore[no-redef]
try:
    from headwater.contract.limits import Limits
except ImportError:  # older checkouts
    from headwater.contract.validator import Limits  # type: ignore[no-redef,attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=300)
    n = parser.parse_args().batches
    traffic = Traffic(users=100_000, items=50_000, seed=1)
    bodies = [msgspec.json.encode(traffic.batch(500)) for _ in range(n)]
    tmp = tempfile.mkdtemp()
    db = open_control_database(f"sqlite:///{tmp}/control.db")
    registry = ContractRegistry(db)
    registry.apply(default_definitions())
    validator = SignalValidator(registry.current(), Limits())
    bus = open_bus(f"sqlite:///{tmp}/bus.db")
    window: Any = open_idempotency_window(f"sqlite:///{tmp}/dedupe.db")
    now = datetime.now(UTC)
    micros: dict[str, float] = {}

    def timed(name: str, fn: Callable[[int], Any]) -> list[Any]:
        start = time.perf_counter()
        out = [fn(i) for i in range(n)]
        micros[name] = round((time.perf_counter() - start) / n * 1e6)
        return out

    shapes: list[Any] = [None] * n
    try:
        from headwater._jsonguard import check_json

        shapes = timed("guard", lambda i: check_json(bodies[i]))
    except ImportError:
        pass

    def validate(i: int) -> Any:
        # As the gateway validates: with the longest event the guard measured, where
        # the guard returns it (older checkouts' guard returns nothing).
        if shapes[i] is None:
            return validator.validate_json(bodies[i], now=now)
        return validator.validate_json(bodies[i], now=now, longest_event=shapes[i].longest)

    results = timed("validate", validate)

    def encode(i: int) -> list[Message]:
        out = []
        for event in results[i].accepted:
            event.producer, event.received_at = "web", now
            event.schema_version = type(event).schema_version_of_type
            out.append(Message(event.user_id, encode_signal(event)))
        return out

    messages = timed("encode", encode)
    entries = [[(e.event_id, e.user_id) for e in r.accepted] for r in results]
    if hasattr(window, "claim"):
        timed("dedupe_claim", lambda i: window.claim(entries[i], f"c_{i}"))
        timed("dedupe_confirm", lambda i: window.confirm(f"c_{i}"))
    else:
        timed("dedupe_seen", lambda i: window.seen([e for e, _ in entries[i]]))
        timed("dedupe_remember", lambda i: window.remember(entries[i]))
    timed("bus_publish", lambda i: bus.publish(messages[i]))
    try:
        from headwater.ratelimit import open_rate_limiter

        limiter = open_rate_limiter(f"sqlite:///{tmp}/ratelimit.db")
        timed("ratelimit", lambda _i: limiter.take("k1", 500, 1e9, 1e9))
    except ImportError:
        pass
    bus.close()
    source = str(headwater.__file__).split("/src/")[0]
    total = sum(micros.values())
    print(json.dumps({"publish_parts_us_per_batch": {"source": source, **micros, "total": total}}))


if __name__ == "__main__":
    main()
