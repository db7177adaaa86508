"""Per-producer rate limits: a token bucket per key, in each gateway process.

Limits are enforced by every gateway process on its own; behind a load balancer of N
gateways a producer's effective ceiling is up to N times its limit (documented in the
README). The bucket counts events, not requests.
"""

from __future__ import annotations

import threading
import time

from headwater.errors import RateLimitedError

__all__ = ["RateLimiter"]


class _Bucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()


class RateLimiter:
    """Token buckets keyed by producer key id."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key_id: str, events: int, rate: float, burst: float) -> None:
        """Spend ``events`` tokens or raise RateLimitedError with the seconds to wait."""
        with self._lock:
            bucket = self._buckets.get(key_id)
            if bucket is None or bucket.rate != rate or bucket.burst != burst:
                bucket = self._buckets[key_id] = _Bucket(rate, max(burst, 1.0))
            now = time.monotonic()
            bucket.tokens = min(bucket.burst, bucket.tokens + (now - bucket.stamp) * bucket.rate)
            bucket.stamp = now
            # A batch larger than the burst passes on a full bucket and leaves a debt,
            # so big batches are slowed down, never refused forever.
            if bucket.tokens >= min(events, bucket.burst):
                bucket.tokens -= events
                return
            wait = (min(events, bucket.burst) - bucket.tokens) / bucket.rate
        raise RateLimitedError(
            f"over the rate limit of {rate:g} events/s (burst {burst:g}); retry in {wait:.2f}s",
            retry_after=wait,
        )
