"""Exactly once under faults, on the embedded stack, on NATS + Redis + PostgreSQL, and
on NATS + a Redis Cluster that loses a master mid-stream + PostgreSQL.

See ``checker.py``: two gateways, feature and archive consumers as processes, hedged
and timed-out resends, SIGKILLs, a consumer joining during a backlog. 0 lost, 0 double.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests._redis_cluster import local_cluster, redis_server_binary
from tests.conftest import IN_CI, server_url
from tests.history.checker import run

pytestmark = pytest.mark.slow

#: Fast failure detection for a test: members and claims of killed processes expire soon.
FAST = {
    "HEADWATER_CLAIM_LEASE": "2s",
    "HEADWATER_ARCHIVE_FLUSH_SECONDS": "0.5s",
    "HEADWATER_ARCHIVE_FLUSH_ROWS": "2000",
    "HEADWATER_LOG_LEVEL": "WARNING",
}


def _env(**urls: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    return {**base, **FAST, **urls}


def test_exactly_once_on_the_embedded_stack(tmp_path: Path) -> None:
    home = tmp_path / "hw"
    env = _env(HEADWATER_BUS_URL=f"sqlite:///{home}/bus.db?session_timeout=2s&heartbeat=0.2s")
    report = run(home, env)
    assert report.ok, report.summary()
    assert sum(report.faults.values()) >= 5, report.summary()
    assert report.hedged > 0
    assert report.timed_out_resends > 0


@pytest.mark.nats
@pytest.mark.redis
@pytest.mark.postgres
def test_exactly_once_on_nats_redis_and_postgresql(tmp_path: Path, postgres_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    redis = f"{server_url('redis')}?prefix=hist{tag}"
    env = _env(
        HEADWATER_BUS_URL=(
            f"{server_url('nats')}?topic=hist{tag}&partitions=4&session_timeout=2s&heartbeat=0.2s"
        ),
        HEADWATER_ONLINE_URL=redis,
        HEADWATER_DEDUPE_URL=redis,
        HEADWATER_CONTROL_URL=postgres_url,
        HEADWATER_ERASURE_KEY="ab" * 32,
    )
    report = run(tmp_path / "hw", env)
    assert report.ok, report.summary()
    assert sum(report.faults.values()) >= 5, report.summary()


@pytest.mark.nats
@pytest.mark.postgres
@pytest.mark.redis_cluster
def test_exactly_once_on_a_redis_cluster_losing_a_master(tmp_path: Path, postgres_url: str) -> None:
    """The online store and the idempotency window on a Redis Cluster (three masters,
    one replica each); six seconds into the publishing the master holding partition
    0's rows and position is SIGKILLed, its replica takes over (node timeout 1 s), and
    then the node comes back, as a replica. Acknowledged writes waited for the replica
    (``WAIT 1``), so none is lost: 0 lost, 0 double."""
    if redis_server_binary() is None:
        message = "redis-server is not installed"
        if IN_CI:
            pytest.fail(f"{message}; CI requires it", pytrace=False)
        pytest.skip(message)
    tag = uuid.uuid4().hex[:8]
    with local_cluster(tmp_path / "cluster") as cluster:
        prefix = f"hist{tag}"
        url = f"{cluster.url}/?prefix={prefix}&partitions=4"
        env = _env(
            HEADWATER_BUS_URL=(
                f"{server_url('nats')}?topic=hist{tag}&partitions=4"
                "&session_timeout=2s&heartbeat=0.2s"
            ),
            HEADWATER_ONLINE_URL=url,
            HEADWATER_DEDUPE_URL=url,
            HEADWATER_CONTROL_URL=postgres_url,
            HEADWATER_ERASURE_KEY="ab" * 32,
        )
        promoted: list[tuple[int, int]] = []

        def kill_a_master() -> str:
            killed, master = cluster.fail_over(f"{{{prefix}:p0}}:positions:features")
            promoted.append((killed, master))
            # Back as a replica of the promoted one, once the promotion is done.
            cluster.restart(killed)
            return "SIGKILL redis cluster master"

        report = run(tmp_path / "hw", env, midway=kill_a_master)
        assert report.faults["SIGKILL redis cluster master"] == 1, report.summary()
        assert promoted
        assert report.ok, report.summary()
