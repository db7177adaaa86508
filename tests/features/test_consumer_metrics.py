"""Freshness is observed once per publish request with its count: the same histogram."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from headwater.features.consumer import _observe_many

BUCKETS = (0.01, 0.1, 1.0, 10.0)


def _histogram() -> Histogram:
    return Histogram("h", "h", buckets=BUCKETS, registry=CollectorRegistry())


def _samples(h: Histogram) -> dict[str, float]:
    return {
        f"{s.name}{s.labels.get('le', '')}": s.value
        for metric in h.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def test_observing_a_value_with_a_count_equals_observing_it_that_many_times() -> None:
    one_by_one, grouped = _histogram(), _histogram()
    for value, count in ((0.05, 3), (0.5, 1), (0.01, 4), (42.0, 2), (0.0, 5)):
        for _ in range(count):
            one_by_one.observe(value)
        _observe_many(grouped, value, count)
    expected, got = _samples(one_by_one), _samples(grouped)
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        assert abs(got[name] - value) < 1e-9, name
