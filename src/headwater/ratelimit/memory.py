"""The in-process rate limiter: buckets in a dict, for tests and a single gateway process."""

from __future__ import annotations

import threading
import time

from headwater.ratelimit.base import Bucket, refused, take_from

__all__ = ["MemoryRateLimiter"]


class MemoryRateLimiter:
    """Token buckets in this process's memory (``memory://``).

    Behind N gateway processes a producer gets N times its limit: use a shared backend
    (``sqlite:///``, ``redis://``, ``postgresql://``) there.
    """

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key_id: str, events: int, rate: float, burst: float) -> None:
        with self._lock:
            # Monotonic: the only clock here is this process's, and it never steps back.
            bucket, wait = take_from(
                self._buckets.get(key_id), events, rate, burst, time.monotonic()
            )
            self._buckets[key_id] = bucket
        if wait is not None:
            raise refused(rate, burst, wait)

    def close(self) -> None:
        with self._lock:
            self._buckets.clear()
