"""Each event id published once, whatever the gateways do: a hedged copy of a batch at
another gateway waits for the first and reports duplicates; a gateway that died after
the bus acknowledged its batch, or before it published, leaves a claim that the next
send resolves by asking the bus."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from headwater.access.keys import ApiKey
from headwater.application import Application
from headwater.config import Settings
from tests._gateway_fixtures import ids_on_bus


def _body(ids: list[str]) -> bytes:
    now = datetime.now(UTC).isoformat()
    return msgspec.json.encode(
        [
            {
                "event_id": i,
                "event_type": "view",
                "user_id": f"u{n % 3}",
                "item_id": "i1",
                "surface": "web",
                "timestamp": now,
                "payload": {},
            }
            for n, i in enumerate(ids)
        ]
    )


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[tuple[Application, Application, ApiKey]]:
    settings = Settings.from_env(tmp_path / "hw")
    a, b = Application(settings), Application(settings)
    a.register_shipped_contracts()
    _, key = a.keys.create("web")
    for app in (a, b):
        app.ingestor.lease_s = 0.5
    yield a, b, key
    a.close()
    b.close()


def test_a_hedged_copy_waits_for_the_first_and_reports_duplicates(
    gateways: tuple[Application, Application, ApiKey],
) -> None:
    a, b, key = gateways
    body = _body([f"h{i}" for i in range(20)])
    first = a.ingestor.prepare(body, key)
    a.ingestor.claim(first)  # claimed, not yet on the bus
    answer: dict[str, object] = {}
    copy = threading.Thread(target=lambda: answer.update(out=b.ingestor.ingest(body, key)))
    copy.start()
    time.sleep(0.2)
    assert copy.is_alive(), "the copy waits while the first send holds the claim"
    a.ingestor.submit(first).result()  # published and confirmed
    copy.join(10)
    outcome = answer["out"]
    assert outcome.duplicates == 20  # type: ignore[attr-defined]
    assert outcome.accepted == 0  # type: ignore[attr-defined]
    assert sorted(ids_on_bus(a.bus)) == sorted(f"h{i}" for i in range(20))


def test_two_copies_that_each_won_part_of_a_batch_do_not_wait_on_each_other(
    gateways: tuple[Application, Application, ApiKey],
) -> None:
    """On a Redis Cluster a batch is claimed slot by slot, so two hedged copies can each
    win part of it. Each publishes and confirms its own part before it waits for the
    other's: neither waits out the lease, and no id is published twice."""
    a, b, key = gateways
    b.ingestor.lease_s = 30.0  # waiting out the lease would take the test's whole time
    ids = [f"p{i}" for i in range(20)]
    first, second = ids[:10], ids[10:]
    part = a.ingestor.prepare(_body(first), key)
    a.ingestor.claim(part)  # the part that copy A won
    answer: dict[str, object] = {}
    copy = threading.Thread(target=lambda: answer.update(out=b.ingestor.ingest(_body(ids), key)))
    copy.start()
    deadline = time.monotonic() + 5
    while b.ingestor.window.seen(second) != set(second) and time.monotonic() < deadline:
        time.sleep(0.05)
    # B's own part is on the bus and confirmed while A's part is still held by A.
    assert b.ingestor.window.seen(second) == set(second)
    assert copy.is_alive()
    assert sorted(ids_on_bus(a.bus)) == sorted(second)
    a.ingestor.submit(part).result()
    copy.join(10)
    outcome = answer["out"]
    assert outcome.accepted == 10  # type: ignore[attr-defined]
    assert outcome.duplicates == 10  # type: ignore[attr-defined]
    assert sorted(ids_on_bus(a.bus)) == sorted(ids)


def test_a_gateway_dead_after_the_bus_acknowledged_is_not_published_twice(
    gateways: tuple[Application, Application, ApiKey],
) -> None:
    a, b, key = gateways
    body = _body([f"d{i}" for i in range(10)])
    dead = a.ingestor.prepare(body, key)
    a.ingestor.claim(dead)
    a.bus.publish(dead.messages)  # ... and the gateway dies: no confirm
    outcome = b.ingestor.ingest(body, key)  # the producer's retry, at another gateway
    assert outcome.duplicates == 10
    assert sorted(ids_on_bus(a.bus)) == sorted(f"d{i}" for i in range(10))


def test_a_gateway_dead_before_publishing_leaves_nothing_lost(
    gateways: tuple[Application, Application, ApiKey],
) -> None:
    a, b, key = gateways
    body = _body([f"p{i}" for i in range(10)])
    a.ingestor.claim(a.ingestor.prepare(body, key))  # ... and the gateway dies
    outcome = b.ingestor.ingest(body, key)
    assert outcome.accepted == 10
    assert sorted(ids_on_bus(a.bus)) == sorted(f"p{i}" for i in range(10))
    again = a.ingestor.ingest(body, key)
    assert again.duplicates == 10
    assert len(ids_on_bus(a.bus)) == 10
