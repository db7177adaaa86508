"""What is particular to each rate-limiter backend: errors, the registry, Redis expiry and
script cache, the PostgreSQL table."""

from __future__ import annotations

import sys
import uuid

import pytest

import headwater.ratelimit
from headwater.errors import (
    BackendUnavailableError,
    ConfigurationError,
    MissingDependencyError,
    RateLimitedError,
)
from headwater.ratelimit import SUPPORTED_LIMITERS, open_rate_limiter
from tests.conftest import server_url


def test_the_public_surface_is_pinned() -> None:
    assert sorted(headwater.ratelimit.__all__) == [
        "RateLimiter",
        "SUPPORTED_LIMITERS",
        "open_rate_limiter",
    ]
    assert sorted(SUPPORTED_LIMITERS) == [
        "memory",
        "postgres",
        "postgresql",
        "redis",
        "rediss",
        "sqlite",
    ]


def test_an_unknown_scheme_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no rate-limiter backend"):
        open_rate_limiter("kafka://127.0.0.1:9092")


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("redis://127.0.0.1:6379/0", "redis", "redis"),
        ("postgresql://127.0.0.1:5432/test", "psycopg", "postgres"),
    ],
)
def test_a_missing_driver_names_the_extra(
    url: str, module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes ``import module`` fail
    with pytest.raises(MissingDependencyError) as info:
        open_rate_limiter(url)
    assert info.value.extra == extra
    assert f"headwater[{extra}]" in str(info.value)


def test_an_unreachable_redis_is_unavailable_and_named_without_its_password() -> None:
    limiter = open_rate_limiter("redis://:hunter2@127.0.0.1:1/0?prefix=t")
    with pytest.raises(BackendUnavailableError, match=r"redis://\*\*\*@127\.0\.0\.1:1/0") as info:
        limiter.take("k", 1, 10.0, 10.0)
    assert "hunter2" not in str(info.value)
    limiter.close()


def test_an_unreachable_postgres_is_unavailable_and_named_without_its_password() -> None:
    named = r"postgresql://\*\*\*@127\.0\.0\.1:1/"
    with pytest.raises(BackendUnavailableError, match=named) as info:
        open_rate_limiter("postgresql://hw:hunter2@127.0.0.1:1/test")
    assert "hunter2" not in str(info.value)


@pytest.mark.redis
def test_redis_falls_back_to_eval_when_the_script_is_not_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from headwater.ratelimit import redis as backend

    url = f"{server_url('redis')}?prefix=hwtest-{uuid.uuid4().hex[:8]}"
    # A digest the server has never seen: EVALSHA answers NOSCRIPT, as after a restart.
    monkeypatch.setattr(backend, "_SHA", "0" * 40)
    limiter = open_rate_limiter(url)
    try:
        limiter.take("k", 3, 1e-9, 3)
        with pytest.raises(RateLimitedError):
            limiter.take("k", 1, 1e-9, 3)
    finally:
        limiter._redis.delete(f"{limiter.prefix}:rl:k")  # type: ignore[attr-defined]
        limiter.close()


@pytest.mark.redis
def test_redis_buckets_expire_once_they_would_be_full_again() -> None:
    import redis

    base = server_url("redis")
    prefix = f"hwtest-{uuid.uuid4().hex[:8]}"
    limiter = open_rate_limiter(f"{base}?prefix={prefix}")
    client = redis.Redis.from_url(base)
    try:
        limiter.take("k", 10, 10.0, 10)  # empty: full again in 1 s
        ttl_ms = client.pttl(f"{prefix}:rl:k")
        # One second to refill and one of margin.
        assert 1000 < ttl_ms <= 2000
    finally:
        client.delete(f"{prefix}:rl:k")
        client.close()
        limiter.close()


@pytest.mark.postgres
def test_postgres_keeps_buckets_in_an_unlogged_table(postgres_url: str) -> None:
    import psycopg

    open_rate_limiter(postgres_url).close()
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute(
            "SELECT relpersistence FROM pg_class WHERE oid = 'hw_rate_buckets'::regclass"
        ).fetchone()
    assert row == ("u",)


@pytest.mark.postgres
def test_postgres_reconnects_after_losing_its_connection(postgres_url: str) -> None:
    import psycopg

    limiter = open_rate_limiter(postgres_url)
    limiter.take("k", 1, 1e-9, 5)
    pid = limiter._conn.info.backend_pid  # type: ignore[attr-defined]
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(BackendUnavailableError):
        limiter.take("k", 1, 1e-9, 5)
    # The next take reconnects, and the bucket kept what was spent before.
    limiter.take("k", 4, 1e-9, 5)
    with pytest.raises(RateLimitedError):
        limiter.take("k", 1, 1e-9, 5)
    limiter.close()
