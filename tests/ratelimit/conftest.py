"""Rate-limiter fixtures: a private URL per backend and test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import server_url

REDIS = pytest.param("redis", marks=pytest.mark.redis)
POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)
#: Backends whose instances on one URL share their buckets (every one but memory://).
SHARED = ["sqlite", REDIS, POSTGRES]


def _url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if kind == "memory":
        yield "memory://"
    elif kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'ratelimit.db'}"
    elif kind == "postgres":
        yield str(request.getfixturevalue("postgres_url"))
    else:
        import redis

        prefix = f"hwtest-{uuid.uuid4().hex[:8]}"
        base = server_url("redis")
        yield f"{base}?prefix={prefix}"
        client = redis.Redis.from_url(base)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(params=["memory", *SHARED])
def limiter_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh rate limiter URL on each backend in turn."""
    yield from _url(request.param, request, tmp_path)


@pytest.fixture(params=SHARED)
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh URL on each backend that gateways can share."""
    yield from _url(request.param, request, tmp_path)
