"""Freshness is recorded once per batch, as counts per histogram bucket: the histogram
ends exactly as one ``observe`` call per event leaves it."""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

from headwater.features.consumer import _observe_counts

BUCKETS = (0.01, 0.1, 1.0, 10.0)
OBSERVED = ((0.05, 3), (0.5, 1), (0.01, 4), (42.0, 2), (0.0, 5), (0.07, 2))


def _histogram() -> Histogram:
    return Histogram("h", "h", buckets=BUCKETS, registry=CollectorRegistry())


def _samples(h: Histogram) -> dict[str, float]:
    return {
        f"{s.name}{s.labels.get('le', '')}": s.value
        for metric in h.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def _per_bucket() -> tuple[list[int], list[float]]:
    bounds = [*BUCKETS, math.inf]
    counts, sums = [0] * len(bounds), [0.0] * len(bounds)
    for value, count in OBSERVED:
        i = bisect_left(bounds, value)
        counts[i] += count
        sums[i] += value * count
    return counts, sums


def _assert_same(expected: dict[str, float], got: dict[str, float]) -> None:
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        assert abs(got[name] - value) < 1e-9, name


def _one_by_one() -> Histogram:
    h = _histogram()
    for value, count in OBSERVED:
        for _ in range(count):
            h.observe(value)
    return h


def test_bucket_counts_record_what_one_observation_per_event_records() -> None:
    grouped = _histogram()
    _observe_counts(grouped, *_per_bucket())
    _assert_same(_samples(_one_by_one()), _samples(grouped))


class _PublicOnly:
    """A histogram seen only through its public ``observe``."""

    def __init__(self, inner: Histogram) -> None:
        self.inner = inner

    def observe(self, value: float) -> None:
        self.inner.observe(value)


def test_without_the_histograms_internals_the_public_path_records_the_same() -> None:
    inner = _histogram()
    public: Any = _PublicOnly(inner)
    _observe_counts(public, *_per_bucket())
    _assert_same(_samples(_one_by_one()), _samples(inner))
