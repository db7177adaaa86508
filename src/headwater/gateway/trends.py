"""The dashboard's last hour: a bounded ring of samples taken at a fixed interval.

One thread per gateway process samples every ``interval_s`` (``HEADWATER_DASHBOARD_SAMPLE``,
10 s: 360 points make the hour) whether or not a dashboard is open, so what a tab shows
does not depend on when it was opened, and the work does not grow with the tabs. Each
sample is encoded once; a tab reads those bytes, or a 304 when it already has them.

A point holds, over the interval before it: events accepted and rejected per second per
producer team, publish latency p50/p99 and 429/503 answers per second (from this
process's counters and histograms), freshness p50/p99 per event type (from the
``headwater_freshness_seconds`` histogram of the consumers running in this process); and
at its time: lag per consumer group and erasure requests open and overdue. The nightly
batch's last runs ride along with each encoding.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import msgspec
from prometheus_client import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from headwater.application import Application
from headwater.bus.base import group_lag
from headwater.gateway.observe_answers import DashboardTrends
from headwater.metrics import EVENTS_ACCEPTED, EVENTS_REJECTED, FRESHNESS_SECONDS, PUBLISH_SECONDS
from headwater.metrics.histogram import BatchHistogramFiles, multiprocess_dir

__all__ = ["ResponseCounts", "TrendRing", "histogram_quantile", "process_metrics"]

log = logging.getLogger("headwater.dashboard")
_T = TypeVar("_T")

#: The hour a ring covers, and the most points it keeps whatever the interval.
WINDOW_S = 3600.0
MAX_POINTS = 3600
#: Series kept per chart (teams, groups, event types): a ring's memory has a ceiling.
MAX_SERIES = 64
#: Statuses counted for the dashboard (rate limited, unavailable).
COUNTED_STATUSES = (429, 503)


class ResponseCounts:
    """Answers per HTTP status since the process started (the request middleware counts)."""

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()

    def add(self, status: int) -> None:
        """Count one answer."""
        with self._lock:
            self._counts[status] = self._counts.get(status, 0) + 1

    def totals(self) -> dict[int, int]:
        """Every status seen and its count."""
        with self._lock:
            return dict(self._counts)


_SOURCES = (EVENTS_ACCEPTED, EVENTS_REJECTED, PUBLISH_SECONDS, FRESHNESS_SECONDS)


def process_metrics() -> Iterable[Metric]:
    """The families a ring reads: the publish and ingest counters and the freshness and
    publish histograms; under ``up --processes`` every process's, summed from the
    multiprocess directory (the freshness histogram is the feature consumer's)."""
    directory = multiprocess_dir()
    if directory is None:
        for metric in _SOURCES:
            yield from metric.collect()
        return
    names = {family.name for metric in _SOURCES for family in metric.describe()}
    # prometheus-client's multiprocess functions carry no annotations.
    files = MultiProcessCollector(None, path=str(directory))  # type: ignore[no-untyped-call]
    for collector in (files, BatchHistogramFiles(directory)):
        yield from (family for family in collector.collect() if family.name in names)


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q`` quantile of cumulative bucket counts (upper bound -> count), linearly
    interpolated within the bucket as Prometheus's ``histogram_quantile`` does; None
    when the histogram is empty. A rank in the open last bucket answers the highest
    finite bound."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            share = (rank - below) / inside if inside > 0 else 1.0
            return lower + (bound - lower) * share
        lower, below = bound, count
    return lower


class _Totals(msgspec.Struct):
    """Cumulative figures read at one instant."""

    at: float
    accepted: dict[str, float]
    rejected: dict[str, float]
    publish: dict[float, float]
    freshness: dict[str, dict[float, float]]
    statuses: dict[int, int]


def _read(families: Iterable[Metric], statuses: dict[int, int], at: float) -> _Totals:
    totals = _Totals(at, {}, {}, {}, {}, statuses)
    for family in families:
        for s in family.samples:
            if s.name == "headwater_events_accepted_total":
                team = s.labels["producer"]
                totals.accepted[team] = totals.accepted.get(team, 0.0) + s.value
            elif s.name == "headwater_events_rejected_total":
                team = s.labels["producer"]
                totals.rejected[team] = totals.rejected.get(team, 0.0) + s.value
            elif s.name == "headwater_publish_seconds_bucket":
                totals.publish[float(s.labels["le"])] = s.value
            elif s.name == "headwater_freshness_seconds_bucket":
                per_type = totals.freshness.setdefault(s.labels["event_type"], {})
                per_type[float(s.labels["le"])] = s.value
    return totals


def _delta(now: float, before: float | None) -> float:
    # A counter that went down was reset (its process restarted): count from zero.
    if before is None or now < before:
        return now
    return now - before


def _bucket_delta(now: dict[float, float], before: dict[float, float] | None) -> dict[float, float]:
    return {le: _delta(v, (before or {}).get(le)) for le, v in now.items()}


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _capped(values: dict[str, Any]) -> dict[str, Any]:
    return {k: values[k] for k in sorted(values)[:MAX_SERIES]}


class Point(msgspec.Struct, frozen=True):
    """One sample: rates over the interval before ``t``, levels at ``t``."""

    t: float
    ingest: dict[str, tuple[float, float]]  # team -> (accepted/s, rejected/s)
    lag: dict[str, tuple[int, float]]  # group -> (events, seconds)
    freshness: dict[str, tuple[float | None, float | None]]  # event type -> (p50, p99) s
    publish: tuple[float | None, float | None, float]  # p50 s, p99 s, batches/s
    responses: tuple[float, float]  # 429/s, 503/s
    erasures: tuple[int | None, int | None]  # open, overdue


class TrendRing:
    """The last hour of samples of one process, and their encoding for the dashboard."""

    def __init__(
        self,
        application: Application,
        *,
        interval_s: float = 10.0,
        responses: ResponseCounts | None = None,
        metrics: Callable[[], Iterable[Metric]] = process_metrics,
        batch_runs: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("the sampling interval must be positive")
        self.application = application
        self.interval_s = interval_s
        self.capacity = min(MAX_POINTS, math.ceil(WINDOW_S / interval_s))
        self.points: deque[Point] = deque(maxlen=self.capacity)
        self.responses = responses or ResponseCounts()
        self.metrics = metrics
        self.batch_runs = batch_runs or self._batch_runs
        self._last: _Totals | None = None
        self._lock = threading.Lock()
        self._encoded = b""
        self._etag = '"0"'
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._batch_state: Any = None
        self._encoded = self._encode([])

    # -- reading --------------------------------------------------------------

    def encoded(self) -> tuple[bytes, str]:
        """The last encoding of the ring (JSON) and its entity tag."""
        with self._lock:
            return self._encoded, self._etag

    # -- sampling -------------------------------------------------------------

    def sample(self, now: float | None = None) -> Point:
        """Take one point now, add it to the ring and encode the ring again."""
        now = round(time.time() if now is None else now, 3)
        totals = _read(self.metrics(), self.responses.totals(), now)
        last, self._last = self._last, totals
        elapsed = max(1e-9, now - last.at) if last else self.interval_s
        point = Point(
            t=now,
            ingest=self._ingest(totals, last, elapsed),
            lag=self._lag(),
            freshness=_capped(
                {
                    etype: self._quantiles(buckets, last.freshness.get(etype, {}) if last else None)
                    for etype, buckets in totals.freshness.items()
                }
            ),
            publish=self._publish(totals, last, elapsed),
            responses=self._responses(totals, last, elapsed),
            erasures=self._erasures(),
        )
        runs: list[dict[str, Any]] = self._safe("batch runs", self.batch_runs, [])
        with self._lock:
            self.points.append(point)
            self._seq += 1
            self._encoded = self._encode(runs)
            self._etag = f'"{self._seq}"'
        return point

    def _ingest(
        self, totals: _Totals, last: _Totals | None, elapsed: float
    ) -> dict[str, tuple[float, float]]:
        out: dict[str, tuple[float, float]] = {}
        for team in set(totals.accepted) | set(totals.rejected):
            if last is None:
                out[team] = (0.0, 0.0)
                continue
            acc = _delta(totals.accepted.get(team, 0.0), last.accepted.get(team))
            rej = _delta(totals.rejected.get(team, 0.0), last.rejected.get(team))
            out[team] = (round(acc / elapsed, 3), round(rej / elapsed, 3))
        return _capped(out)

    @staticmethod
    def _responses(totals: _Totals, last: _Totals | None, elapsed: float) -> tuple[float, float]:
        if last is None:
            return (0.0, 0.0)
        rate_429, rate_503 = (
            round(_delta(totals.statuses.get(s, 0), last.statuses.get(s, 0)) / elapsed, 4)
            for s in COUNTED_STATUSES
        )
        return (rate_429, rate_503)

    @staticmethod
    def _quantiles(
        now: dict[float, float], before: dict[float, float] | None
    ) -> tuple[float | None, float | None]:
        if before is None:
            return (None, None)
        delta = _bucket_delta(now, before)
        return (
            _rounded(histogram_quantile(0.5, delta)),
            _rounded(histogram_quantile(0.99, delta)),
        )

    def _publish(
        self, totals: _Totals, last: _Totals | None, elapsed: float
    ) -> tuple[float | None, float | None, float]:
        if last is None:
            return (None, None, 0.0)
        p50, p99 = self._quantiles(totals.publish, last.publish)
        delta = _bucket_delta(totals.publish, last.publish)
        batches = delta.get(math.inf, 0.0)
        return (p50, p99, round(batches / elapsed, 3))

    def _lag(self) -> dict[str, tuple[int, float]]:
        def read() -> dict[str, tuple[int, float]]:
            app = self.application
            out = {}
            for group in app.lag_groups[:MAX_SERIES]:
                events, seconds = group_lag(app.bus.lag(group))
                out[group] = (events, round(seconds, 3))
            return out

        return self._safe("consumer lag", read, {})

    def _erasures(self) -> tuple[int | None, int | None]:
        counts: dict[str, int] | None = self._safe(
            "erasure counts", self.application.ledger.counts, None
        )
        if counts is None:
            return (None, None)
        return (counts.get("open", 0), counts.get("overdue", 0))

    def _batch_runs(self) -> list[dict[str, Any]]:
        from headwater.batch.state import BatchState

        if self._batch_state is None:
            self._batch_state = BatchState(self.application.control)
        return [
            {
                "id": r.id,
                "kind": r.kind,
                "status": r.status,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "days": len(r.days),
                "as_of": r.as_of,
                "host": r.host,
            }
            for r in self._batch_state.runs(5)
        ]

    def _safe(self, what: str, read: Callable[[], _T], default: _T) -> _T:
        try:
            return read()
        except Exception:  # a down backend leaves a gap in its chart, not a dead ring
            log.warning("dashboard sample: reading %s failed", what, exc_info=True)
            return default

    # -- encoding -------------------------------------------------------------

    def _encode(self, runs: list[dict[str, Any]]) -> bytes:
        # Converted to the documented structure: a key it lacks fails at once.
        return msgspec.json.encode(msgspec.convert(self._document(runs), DashboardTrends))

    def _document(self, runs: list[dict[str, Any]]) -> dict[str, Any]:
        points = list(self.points)
        n = len(points)

        def columns(
            family: Callable[[Point], Mapping[str, tuple[Any, ...]]], names: tuple[str, ...]
        ) -> dict[str, dict[str, list[Any]]]:
            out: dict[str, dict[str, list[Any]]] = {}
            for i, p in enumerate(points):
                for key, values in family(p).items():
                    series = out.get(key)
                    if series is None:
                        if len(out) >= MAX_SERIES:
                            continue
                        series = out[key] = {name: [None] * n for name in names}
                    for name, value in zip(names, values, strict=True):
                        series[name][i] = value
            return dict(sorted(out.items()))

        return {
            "interval_s": self.interval_s,
            "capacity": self.capacity,
            "t": [p.t for p in points],
            "ingest": columns(lambda p: p.ingest, ("accepted", "rejected")),
            "lag": columns(lambda p: p.lag, ("events", "seconds")),
            "freshness": columns(lambda p: p.freshness, ("p50", "p99")),
            "publish": columns(lambda p: {"all": p.publish}, ("p50", "p99", "batches"))["all"]
            if points
            else {"p50": [], "p99": [], "batches": []},
            "responses": {
                str(s): [p.responses[i] for p in points] for i, s in enumerate(COUNTED_STATUSES)
            },
            "erasures": {
                "open": [p.erasures[0] for p in points],
                "overdue": [p.erasures[1] for p in points],
            },
            "batch_runs": runs,
        }

    # -- the sampling thread ----------------------------------------------------

    def start(self) -> None:
        """Sample every ``interval_s`` on a thread of its own until ``stop``."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="dashboard-trends", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (the ring keeps what it has)."""
        self._stop.set()
        if self._thread is not None:
            # A sample waiting on a backend that does not answer must not hold up a
            # shutdown: the thread is a daemon, and its last sample is discarded.
            self._thread.join(2)
            self._thread = None

    def _run(self) -> None:
        # The first sample at once (a tab opened right away sees the levels), then
        # fixed-rate ticks; after a sample slower than the interval, the next follows it.
        next_at = time.monotonic()
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at = max(next_at + self.interval_s, time.monotonic())
            try:
                self.sample()
            except Exception:  # keep the hour going: one failed sample leaves one gap
                log.exception("dashboard sample failed")
