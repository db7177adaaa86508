"""Shared fixtures: server URLs for backend tests, and the rule that CI never skips them."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from headwater.contract.definition import RegisteredEventType
from headwater.contract.loader import default_definitions
from headwater.contract.validator import SignalValidator
from tests._redis_cluster import ClusterStartError, LocalCluster, local_cluster, redis_server_binary

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

SERVERS = {
    "postgres": ("HEADWATER_TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/test"),
    "redis": ("HEADWATER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
    "nats": ("HEADWATER_TEST_NATS_URL", "nats://127.0.0.1:4222"),
}


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 2.0):
            return True
    except OSError:
        return False


def server_url(kind: str) -> str:
    """The URL of a test server; skip locally, fail under CI=true, when it is not there."""
    env, default = SERVERS[kind]
    url = os.environ.get(env, default)
    if not _reachable(url):
        message = f"{kind} server not reachable at {url} (set {env})"
        if IN_CI:
            pytest.fail(f"{message}; CI requires it", pytrace=False)
        pytest.skip(message)
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL with a private schema for this test, dropped afterwards."""
    import psycopg

    base = server_url("postgres")
    schema = f"hw_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def redis_url() -> str:
    """A Redis URL (database 15); tests use a unique key prefix each."""
    return server_url("redis")


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A private Redis Cluster for the session: three masters and one replica each, on
    free ports (``tests/_redis_cluster.py``). Skipped locally without ``redis-server``;
    a failure under CI=true."""
    if redis_server_binary() is None:
        message = "redis-server is not installed (needed for the Redis Cluster tests)"
        if IN_CI:
            pytest.fail(f"{message}; CI requires it", pytrace=False)
        pytest.skip(message)
    for attempt in range(1, 4):  # a port taken by someone else: again, on other ports
        started = local_cluster(tmp_path_factory.mktemp("redis-cluster"))
        try:
            cluster = started.__enter__()
        except ClusterStartError:
            if attempt == 3:
                raise
            continue
        try:
            yield cluster
        finally:
            started.__exit__(None, None, None)
        return


@pytest.fixture
def redis_cluster_url(redis_cluster: LocalCluster) -> str:
    """The session cluster's ``redis+cluster://`` URL (tests add a unique prefix)."""
    return redis_cluster.url


@pytest.fixture
def nats_url() -> str:
    """The NATS JetStream URL."""
    return server_url("nats")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite control-plane URL in this test's directory."""
    return f"sqlite:///{tmp_path / 'control.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def control_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every control-plane backend in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'control.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def default_registered() -> list[RegisteredEventType]:
    """The shipped contracts, registered as version 1."""
    return [RegisteredEventType(d, 1) for d in default_definitions().values()]


@pytest.fixture(scope="session")
def validator(default_registered: list[RegisteredEventType]) -> SignalValidator:
    """A validator over the shipped contracts."""
    return SignalValidator(default_registered)


@pytest.fixture
def now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)
