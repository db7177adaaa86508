"""A gateway process in miniature: takes from one key as fast as it can, on a signal.

    python _hammer.py URL KEY TAKES RATE BURST

Prints ``ready``, waits for a line on stdin (so that every process starts at once),
then tries ``TAKES`` takes of one event and prints how many were admitted.
"""

from __future__ import annotations

import sys

from headwater.errors import RateLimitedError
from headwater.ratelimit import open_rate_limiter


def main(url: str, key: str, takes: int, rate: float, burst: float) -> int:
    limiter = open_rate_limiter(url)
    print("ready", flush=True)
    sys.stdin.readline()
    admitted = 0
    for _ in range(takes):
        try:
            limiter.take(key, 1, rate, burst)
        except RateLimitedError:
            continue
        admitted += 1
    limiter.close()
    return admitted


if __name__ == "__main__":
    url, key, takes, rate, burst = sys.argv[1:]
    print(main(url, key, int(takes), float(rate), float(burst)), flush=True)
