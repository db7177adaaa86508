"""The rate-limiter port: a token bucket per producer key, and its arithmetic.

Every backend keeps the same four numbers per key (the rate and burst the bucket was
made with, its tokens and the time they were counted) and applies the same rule; the
memory and SQLite backends call :func:`take_from` here, Redis and PostgreSQL repeat it
in Lua and SQL so that it runs on the server in one atomic step.
"""

from __future__ import annotations

from typing import Protocol

from headwater.errors import RateLimitedError

__all__ = ["Bucket", "RateLimiter", "capacity", "refused", "take_from", "wait_for"]

#: The wait reported when a bucket never refills (rate 0): a year, a finite number that a
#: Retry-After header can carry.
NEVER_S = 365 * 86_400.0


class RateLimiter(Protocol):
    """Token buckets keyed by producer key id; the bucket counts events, not requests.

    Instances opened on the same shared URL (SQLite file, Redis, PostgreSQL) share one
    bucket per key, so a producer gets one limit however many gateways serve it.
    """

    url: str

    def take(self, key_id: str, events: int, rate: float, burst: float) -> None:
        """Spend ``events`` tokens of ``key_id``'s bucket or raise ``RateLimitedError``.

        The bucket holds ``max(burst, 1)`` tokens, refills at ``rate`` tokens/s and
        starts full. A request larger than the bucket passes on a full bucket and leaves
        a debt, so big batches are slowed down, never refused forever. A bucket stored
        with another rate or burst is replaced by a fresh full one with the new values.
        ``RateLimitedError.retry_after`` is the seconds until enough tokens exist.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class Bucket:
    """One key's bucket: the limits it was made with, its tokens and when they were counted.

    Mutable, and updated in place by :func:`take_from`: the in-memory limiter spends a
    few microseconds per take, and a new object per take would double that.
    """

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, tokens: float, stamp: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = tokens
        self.stamp = stamp

    def astuple(self) -> tuple[float, float, float, float]:
        """``(rate, burst, tokens, stamp)``, the order a stored row keeps them in."""
        return (self.rate, self.burst, self.tokens, self.stamp)


def capacity(burst: float) -> float:
    """The tokens a full bucket holds: at least one, so every key can send one event."""
    return burst if burst > 1.0 else 1.0


def take_from(
    bucket: Bucket | None, events: int, rate: float, burst: float, now: float
) -> tuple[Bucket, float | None]:
    """Try to spend ``events`` at time ``now`` (seconds): the bucket after (``bucket``
    updated in place, or a new one), and None when they were spent or else the seconds
    to wait. On a refusal the bucket holds the refill, so storing it or not gives the
    same answers later."""
    cap = capacity(burst)
    if bucket is None or bucket.rate != rate or bucket.burst != burst:
        bucket = Bucket(rate, burst, cap, now)
    else:
        elapsed = now - bucket.stamp
        # A clock that stepped back refills nothing rather than draining the bucket.
        if elapsed > 0.0:
            bucket.tokens = min(cap, bucket.tokens + elapsed * rate)
        bucket.stamp = now
    # A batch larger than the bucket passes on a full bucket and leaves a debt.
    need = events if events < cap else cap
    if bucket.tokens >= need:
        bucket.tokens -= events
        return bucket, None
    return bucket, wait_for(need - bucket.tokens, rate)


def wait_for(missing: float, rate: float) -> float:
    """The seconds until ``missing`` tokens have been refilled at ``rate`` tokens/s."""
    return min(missing / rate, NEVER_S) if rate > 0 else NEVER_S


def refused(rate: float, burst: float, wait: float) -> RateLimitedError:
    """The error a refused ``take`` raises, the same for every backend."""
    return RateLimitedError(
        f"over the rate limit of {rate:g} events/s (burst {burst:g}); retry in {wait:.2f}s",
        retry_after=wait,
    )
