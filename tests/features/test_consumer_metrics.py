"""Freshness is recorded once per batch, as counts per histogram bucket: the histogram
ends exactly as one ``observe`` call per event leaves it."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.registry import Collector

from headwater.features.consumer import _BatchAges
from headwater.metrics import FRESHNESS_SECONDS
from headwater.metrics.histogram import BatchHistogram

BUCKETS = (0.01, 0.1, 1.0, 10.0)
OBSERVED = ((0.05, 3), (0.5, 1), (0.01, 4), (42.0, 2), (0.0, 5), (0.07, 2))


def _samples(collector: Collector, **labels: str) -> dict[str, float]:
    return {
        f"{s.name}{s.labels.get('le', '')}": s.value
        for metric in collector.collect()
        for s in metric.samples
        if not s.name.endswith("_created") and all(s.labels.get(k) == v for k, v in labels.items())
    }


def _per_bucket(observed: Iterable[tuple[float, int]]) -> tuple[list[int], list[float]]:
    bounds = [*BUCKETS, math.inf]
    counts, sums = [0] * len(bounds), [0.0] * len(bounds)
    for value, count in observed:
        i = bisect_left(bounds, value)
        counts[i] += count
        sums[i] += value * count
    return counts, sums


def _assert_same(expected: dict[str, float], got: dict[str, float]) -> None:
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        assert abs(got[name] - value) < 1e-9, name


def _one_by_one() -> Histogram:
    h = Histogram("h", "h", buckets=BUCKETS, registry=CollectorRegistry())
    for value, count in OBSERVED:
        for _ in range(count):
            h.observe(value)
    return h


def test_bucket_counts_record_what_one_observation_per_event_records() -> None:
    grouped = BatchHistogram("h", "h", [], BUCKETS)
    grouped.observe_counts((), *_per_bucket(OBSERVED[:3]))
    grouped.observe_counts((), *_per_bucket(OBSERVED[3:]))
    _assert_same(_samples(_one_by_one()), _samples(grouped))


def test_single_observations_land_in_the_same_buckets_as_prometheus_client() -> None:
    single = BatchHistogram("h", "h", [], BUCKETS)
    for value, count in OBSERVED:
        for _ in range(count):
            single.observe(value)
    _assert_same(_samples(_one_by_one()), _samples(single))


def test_the_consumers_batch_ages_reach_the_freshness_histogram() -> None:
    before = _samples(FRESHNESS_SECONDS, event_type="probe_type")
    ages = _BatchAges({})
    ages.add("web", 0.3, {"probe_type": 4})
    ages.add("app", 7.0, {"probe_type": 1})
    assert ages.record(None, now=0.0) == {"probe_type": 5}
    after = _samples(FRESHNESS_SECONDS, event_type="probe_type")
    assert (
        after["headwater_freshness_seconds_count"]
        - before.get("headwater_freshness_seconds_count", 0.0)
        == 5
    )
    assert (
        after["headwater_freshness_seconds_bucket0.5"]
        - before.get("headwater_freshness_seconds_bucket0.5", 0.0)
        == 4
    )
    assert (
        abs(
            after["headwater_freshness_seconds_sum"]
            - before.get("headwater_freshness_seconds_sum", 0.0)
            - (4 * 0.3 + 7.0)
        )
        < 1e-9
    )
