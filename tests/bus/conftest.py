"""Bus fixtures: one URL per backend, each private to its test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import server_url

BACKENDS = [
    "sqlite",
    pytest.param("kafka", marks=pytest.mark.kafka),
    pytest.param("nats", marks=pytest.mark.nats),
]


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real broker from HEADWATER_TEST_KAFKA_URL, else librdkafka's in-process mock cluster."""
    real = os.environ.get("HEADWATER_TEST_KAFKA_URL")
    if real:
        yield real.split("://", 1)[1].split("?", 1)[0]
        return
    from headwater.bus.kafka import MockCluster

    with MockCluster(brokers=3, partitions=4) as cluster:
        yield cluster.bootstrap_servers


@pytest.fixture(params=BACKENDS)
def bus_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh bus of 4 partitions on each backend in turn (fast group timeouts)."""
    name = f"t{uuid.uuid4().hex[:10]}"
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bus.db'}?partitions=4&session_timeout=1.5s&heartbeat=0.1s"
    elif request.param == "kafka":
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        yield f"kafka://{bootstrap}?topic={name}&partitions=4&session_timeout=6s"
    else:
        base = server_url("nats")
        url = f"{base}?topic={name}&partitions=4&session_timeout=1.5s&heartbeat=0.1s"
        yield url
        from headwater.bus.nats import delete_bus

        delete_bus(url)
