"""Every rate-limiter backend keeps the same token bucket, and shared ones share it."""

from __future__ import annotations

import math
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from headwater.errors import RateLimitedError
from headwater.ratelimit import RateLimiter, open_rate_limiter

#: A rate so low that nothing refills during a test.
STILL = 1e-9


def _key() -> str:
    return f"k-{uuid.uuid4().hex[:8]}"


def _refused(limiter: RateLimiter, key: str, events: int, rate: float, burst: float) -> float:
    """The retry_after of a take that must be refused."""
    with pytest.raises(RateLimitedError) as info:
        limiter.take(key, events, rate, burst)
    return info.value.retry_after


@pytest.fixture
def limiter(limiter_url: str) -> Iterator[RateLimiter]:
    opened = open_rate_limiter(limiter_url)
    yield opened
    opened.close()


def test_a_full_bucket_admits_its_burst_then_refuses(limiter: RateLimiter) -> None:
    key = _key()
    for _ in range(10):
        limiter.take(key, 10, STILL, 100)
    wait = _refused(limiter, key, 1, STILL, 100)
    # Never refills: a long wait, finite so that a Retry-After header can carry it.
    assert 1e6 < wait < math.inf


def test_a_refusal_says_how_long_until_the_tokens_exist(limiter: RateLimiter) -> None:
    key = _key()
    limiter.take(key, 10, 10.0, 10)
    wait = _refused(limiter, key, 5, 10.0, 10)
    # 5 tokens at 10/s: half a second, less what refilled since the first take.
    assert 0.3 < wait <= 0.5
    assert wait == pytest.approx(0.5, abs=0.2)


def test_the_bucket_refills_at_the_rate(limiter: RateLimiter) -> None:
    key = _key()
    limiter.take(key, 10, 40.0, 10)
    _refused(limiter, key, 10, 40.0, 10)
    time.sleep(0.3)  # 12 tokens' worth, capped at 10
    limiter.take(key, 10, 40.0, 10)


def test_the_refill_stops_at_the_burst(limiter: RateLimiter) -> None:
    key = _key()
    limiter.take(key, 5, 50.0, 5)
    time.sleep(0.25)  # 12.5 tokens' worth, but the bucket holds 5
    limiter.take(key, 5, 50.0, 5)
    wait = _refused(limiter, key, 5, 50.0, 5)
    assert 0.0 < wait <= 0.1


def test_a_request_larger_than_the_burst_passes_on_a_full_bucket_and_leaves_a_debt(
    limiter: RateLimiter,
) -> None:
    key = _key()
    limiter.take(key, 25, 50.0, 10)
    # 15 tokens owed, and one more to spend: 16 tokens at 50/s.
    wait = _refused(limiter, key, 1, 50.0, 10)
    assert 0.2 < wait <= 0.32
    time.sleep(wait + 0.03)
    limiter.take(key, 1, 50.0, 10)


def test_a_request_larger_than_the_burst_waits_for_a_full_bucket(limiter: RateLimiter) -> None:
    key = _key()
    limiter.take(key, 4, 20.0, 10)
    # Not refused forever: it needs a full bucket (10), not its own 25: 4 tokens at 20/s.
    wait = _refused(limiter, key, 25, 20.0, 10)
    assert 0.0 < wait <= 0.2
    time.sleep(wait + 0.03)
    limiter.take(key, 25, 20.0, 10)


def test_keys_have_separate_buckets(limiter: RateLimiter) -> None:
    first, second = _key(), _key()
    limiter.take(first, 50, STILL, 50)
    _refused(limiter, first, 1, STILL, 50)
    limiter.take(second, 50, STILL, 50)
    _refused(limiter, second, 1, STILL, 50)


def test_a_changed_rate_or_burst_starts_a_fresh_full_bucket(limiter: RateLimiter) -> None:
    key = _key()
    limiter.take(key, 5, STILL, 5)
    _refused(limiter, key, 1, STILL, 5)
    limiter.take(key, 6, STILL, 6)  # new burst: a full bucket of 6
    _refused(limiter, key, 1, STILL, 6)
    limiter.take(key, 6, 2 * STILL, 6)  # new rate: full again
    _refused(limiter, key, 1, 2 * STILL, 6)


def test_a_burst_below_one_admits_one_event_then_refuses(limiter: RateLimiter) -> None:
    key = _key()
    limiter.take(key, 1, STILL, 0.5)
    _refused(limiter, key, 1, STILL, 0.5)


def test_concurrent_takes_stay_within_burst_plus_refill(limiter_url: str) -> None:
    # Four threads, each with its own limiter (a gateway each) where the backend is
    # shared, one limiter for all of them in memory.
    shared = not limiter_url.startswith("memory:")
    limiters = [open_rate_limiter(limiter_url) for _ in range(4 if shared else 1)]
    key, rate, burst = _key(), 50.0, 40.0
    admitted = [0] * 4
    start = threading.Barrier(4)

    def hammer(i: int) -> None:
        limiter = limiters[i % len(limiters)]
        start.wait()
        for _ in range(60):
            try:
                limiter.take(key, 1, rate, burst)
            except RateLimitedError:
                continue
            admitted[i] += 1

    began = time.time()
    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - began
    for limiter in limiters:
        limiter.close()
    assert burst <= sum(admitted) <= burst + rate * elapsed, (admitted, elapsed)


def test_oversized_requests_under_concurrency_overshoot_by_one_request_at_most(
    limiter_url: str,
) -> None:
    shared = not limiter_url.startswith("memory:")
    limiters = [open_rate_limiter(limiter_url) for _ in range(3 if shared else 1)]
    key, rate, burst, biggest = _key(), 20.0, 30.0, 45
    admitted = [0] * 3
    start = threading.Barrier(3)

    def hammer(i: int) -> None:
        limiter = limiters[i % len(limiters)]
        sizes = random.Random(i).choices([1, 3, 7, biggest], weights=[5, 3, 2, 1], k=60)
        start.wait()
        for events in sizes:
            try:
                limiter.take(key, events, rate, burst)
            except RateLimitedError:
                continue
            admitted[i] += events

    began = time.time()
    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - began
    for limiter in limiters:
        limiter.close()
    assert sum(admitted) <= burst + rate * elapsed + biggest, (admitted, elapsed)


def test_two_gateways_on_one_url_share_one_budget(shared_url: str) -> None:
    first, second = open_rate_limiter(shared_url), open_rate_limiter(shared_url)
    key = _key()
    first.take(key, 60, STILL, 100)
    _refused(second, key, 60, STILL, 100)
    second.take(key, 40, STILL, 100)
    _refused(first, key, 1, STILL, 100)
    first.close()
    second.close()


def test_gateway_processes_on_one_url_share_one_budget(shared_url: str) -> None:
    key, burst = _key(), 100
    hammer = Path(__file__).with_name("_hammer.py")
    procs = [
        subprocess.Popen(
            [sys.executable, str(hammer), shared_url, key, "60", str(STILL), str(burst)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:  # every process starts taking at once
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        admitted = [int(proc.communicate(timeout=60)[0]) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate()
    # 240 tries of one event against one bucket of 100 that never refills.
    assert sum(admitted) == burst, admitted
    assert all(proc.returncode == 0 for proc in procs)
