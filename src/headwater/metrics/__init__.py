"""Prometheus metrics of every component, in one registry per process.

What a scrape returns, and how one scrape sees every process of ``headwater up
--processes`` (prometheus-client's multiprocess mode), is in ``exposition``; the
histogram fed a whole batch of observations at once is in ``histogram``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from headwater.metrics.histogram import BatchHistogram

__all__ = [
    "BATCH_RUN_SECONDS",
    "BUS_EXPIRED_UNREAD",
    "ERASURE_ALERTS",
    "ERASURE_CONFIRM_SECONDS",
    "ERASURE_DEADLINE_ALERTS",
    "ERASURE_VERIFY_SECONDS",
    "EVENTS_ACCEPTED",
    "EVENTS_REJECTED",
    "FEATURE_LATE_EVENTS",
    "FENCED_BATCHES",
    "FRESHNESS_EVENTS",
    "FRESHNESS_SECONDS",
    "HTTP_REQUESTS",
    "PUBLISH_SECONDS",
    "REGISTRY",
    "RESURRECTIONS_BLOCKED",
    "SLO_BREACH",
]

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_ACCEPTED = Counter(
    "headwater_events_accepted_total",
    "Events accepted by the contract and published",
    ["producer", "event_type"],
    registry=REGISTRY,
)
EVENTS_REJECTED = Counter(
    "headwater_events_rejected_total",
    "Events the contract rejected",
    ["producer", "event_type", "reason"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "headwater_http_requests_total",
    "Requests answered by the API, per route template, method and status code",
    ["route", "method", "status"],
    registry=REGISTRY,
)
PUBLISH_SECONDS = Histogram(
    "headwater_publish_seconds",
    "Time to validate and durably publish one batch",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
#: Recorded by the feature consumer once per batch, as counts per bucket.
FRESHNESS_SECONDS = BatchHistogram(
    "headwater_freshness_seconds",
    "From publish accepted to the feature being readable, per event type",
    ["event_type"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
    registry=REGISTRY,
)
FRESHNESS_EVENTS = Counter(
    "headwater_freshness_events_total",
    "Events that became readable as features, per producer team and event type, and "
    "whether within the type's freshness budget (the SLI of the freshness SLO: divided by "
    "headwater_events_accepted_total, events accepted and not yet readable count as bad)",
    ["producer", "event_type", "within_budget"],
    registry=REGISTRY,
)
FEATURE_LATE_EVENTS = Counter(
    "headwater_feature_late_events_total",
    "Events later than the lateness bound (kept out of windowed features)",
    ["event_type"],
    registry=REGISTRY,
)
ERASURE_CONFIRM_SECONDS = Histogram(
    "headwater_erasure_confirm_seconds",
    "From erasure request to a participant's confirmation",
    ["participant"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, 86_400),
    registry=REGISTRY,
)
ERASURE_VERIFY_SECONDS = Histogram(
    "headwater_erasure_verify_seconds",
    "One independent check of a store, run for every request ready in a pass",
    ["participant"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
    registry=REGISTRY,
)
ERASURE_ALERTS = Counter(
    "headwater_erasure_alerts_total",
    "Alerts raised for overdue or failed erasure participants",
    ["participant"],
    registry=REGISTRY,
)
ERASURE_DEADLINE_ALERTS = Counter(
    "headwater_erasure_deadline_alerts_total",
    "Erasure requests warned about (a fraction of the time to the deadline passed with "
    "stores outstanding) or past their deadline",
    ["kind"],
    registry=REGISTRY,
)
RESURRECTIONS_BLOCKED = Counter(
    "headwater_erased_user_events_dropped_total",
    "Events of an erased user from before the erasure, dropped by a consumer",
    ["participant"],
    registry=REGISTRY,
)
BATCH_RUN_SECONDS = Histogram(
    "headwater_batch_run_seconds",
    "Nightly batch run durations",
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600),
    registry=REGISTRY,
)
SLO_BREACH = Gauge(
    "headwater_slo_breach",
    "1 while a producer team's event type is out of its freshness objective",
    ["producer", "event_type"],
    registry=REGISTRY,
    # Under multiprocess mode: the highest value among the live processes (the
    # orchestrator's SLO watch sets it; a dead process's value goes with it).
    multiprocess_mode="livemax",
)
BUS_EXPIRED_UNREAD = Counter(
    "headwater_bus_records_expired_unread_total",
    "Records the bus's retention removed before a consumer group read them, counted by "
    "the member that read past them (SQLite and Kafka buses; JetStream numbers records "
    "across partitions and cannot count them)",
    ["group", "partition"],
    registry=REGISTRY,
)
FENCED_BATCHES = Counter(
    "headwater_consumer_fenced_batches_total",
    "Batches a consumer dropped because another member had claimed their partitions",
    ["group"],
    registry=REGISTRY,
)
