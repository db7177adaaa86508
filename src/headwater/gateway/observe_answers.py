"""The answers of the operators' routes (``observe_routes``), as msgspec structures
the OpenAPI document's schemas are generated from. Built elsewhere as plain objects,
they are converted at the route; unknown keys are refused, so a key added without its
field here fails the route's tests instead of going undocumented."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from headwater.features.backfills import BackfillRun
from headwater.features.versions import Switch
from headwater.gateway.answers import Strict
from headwater.runtime.presence import ConsumerInstance
from headwater.wire import Problem

__all__ = [
    "BackendCheck",
    "BatchRunRow",
    "ConsumerStats",
    "DashboardLive",
    "DashboardTrends",
    "DeadLetterRow",
    "DeletionsView",
    "FeaturesAsOf",
    "FeaturesStatus",
    "FieldCount",
    "GroupLag",
    "GroupStatus",
    "Health",
    "IngestionStats",
    "PartitionLagRow",
    "Readiness",
    "SloReport",
    "SloRow",
    "StatusReport",
    "TeamIngestion",
    "Unready",
]


class SloRow(Strict):
    """One producer team's event type over the window."""

    producer: str
    event_type: str
    budget_s: float
    objective: float
    window_s: float
    events: int
    within_budget: int
    compliance: float
    burn_rate: float
    max_freshness_s: float
    breached: bool


class SloReport(Strict):
    """``GET /v1/slo``: per (producer, event type), the share readable within budget."""

    window_s: float
    objective: float
    slos: list[SloRow]
    breached: list[SloRow]


class FieldCount(Strict):
    """How often a field broke a rule."""

    field: str
    rule: str
    count: int


class TeamIngestion(Strict):
    """One producer team's recent ingestion (this gateway process)."""

    team: str
    accepted_per_s: float
    rejected_per_s: float
    rejection_rate: float
    accepted_total_5m: int
    rejected_total_5m: int
    top_reasons: list[tuple[str, int]]
    top_fields: list[FieldCount]
    example_rejection: Annotated[
        dict[str, Any] | None,
        msgspec.Meta(description="A rejected event with its values masked, its field and rule"),
    ]


class IngestionStats(Strict):
    """``GET /v1/stats/ingestion``: per team, events per second and rejection reasons."""

    window_s: int
    teams: list[TeamIngestion]


class PartitionLagRow(Strict):
    """How far a group is behind on one partition."""

    partition: int
    committed: int
    end: int
    lag_events: int
    lag_seconds: float


class GroupLag(Strict):
    """One consumer group's lag, in all and per partition."""

    group: str
    lag_events: int
    lag_seconds: float
    partitions: list[PartitionLagRow]


class FeaturesAsOf(Strict):
    """The time up to which one partition's streaming features are applied."""

    partition: int
    as_of_ms: int
    age_s: float


class DeadLetterRow(Strict):
    """A record a consumer group gave up on."""

    id: str
    kind: str
    error: str
    attempts: int
    failed_at: str


class ConsumerStats(Strict):
    """``GET /v1/stats/consumers``: lag per group, feature as_of, dead letters."""

    groups: list[GroupLag]
    features_as_of: list[FeaturesAsOf]
    dead_letters: dict[str, int]
    dead_letters_total: int
    recent_dead_letters: list[DeadLetterRow]


class GroupStatus(Strict):
    """One consumer group: its lag and each instance running it."""

    group: str
    lag_events: int
    lag_seconds: float
    instances: list[ConsumerInstance]


class FeaturesStatus(Strict):
    """The current feature definitions and their backfills."""

    version: int
    definitions: Annotated[
        dict[str, dict[str, Any]],
        msgspec.Meta(description="By name@defined_in: state, updated_at, backfill progress"),
    ]
    backfills: list[BackfillRun]
    switches: list[Switch]


class StatusReport(Strict):
    """``GET /v1/status``: consumer instances and lag per group, feature definitions."""

    groups: list[GroupStatus]
    features: FeaturesStatus


class Health(Strict):
    """``GET /v1/health``: the process answers."""

    status: str


class BackendCheck(Strict, omit_defaults=True):
    """One backend asked now: whether it answered, in how many ms, or its error."""

    ok: bool
    ms: float | None = None
    error: str | None = None


class Readiness(Strict):
    """``GET /v1/ready`` when every backend answers."""

    ready: bool
    backends: dict[str, BackendCheck]
    where: Annotated[dict[str, str], msgspec.Meta(description="Each backend's URL, redacted")]


class Unready(Problem, kw_only=True):
    """``GET /v1/ready`` when a backend does not answer: a problem document that keeps
    the readiness report (``ready``, ``backends``, ``where``)."""

    ready: bool
    backends: dict[str, BackendCheck]
    where: dict[str, str]


# -- the dashboard's documents -------------------------------------------------------


class DeletionsView(Strict):
    """Erasure requests for the dashboard: counts, the open ones with their stores, and
    the latest completed."""

    counts: dict[str, int]
    open: list[dict[str, Any]]
    completed: list[dict[str, Any]]


class DashboardLive(Strict):
    """``GET /v1/dashboard/live``: the present, computed at most once per 2 s."""

    at: float
    ingestion: list[TeamIngestion]
    slo: list[SloRow]
    consumers: ConsumerStats
    deletions: DeletionsView
    features: FeaturesStatus


class BatchRunRow(Strict):
    """One of the nightly batch's last runs."""

    id: int
    kind: str
    status: str
    started_at: str
    finished_at: str | None
    days: int
    as_of: str | None
    host: str


_Series = dict[str, list[float | None]]


class DashboardTrends(Strict):
    """``GET /v1/dashboard/trends``: the last hour, one column per sample time ``t``."""

    interval_s: float
    capacity: int
    t: list[float]
    ingest: Annotated[
        dict[str, _Series], msgspec.Meta(description="Per team: accepted and rejected per s")
    ]
    lag: Annotated[dict[str, _Series], msgspec.Meta(description="Per group: events, seconds")]
    freshness: Annotated[
        dict[str, _Series], msgspec.Meta(description="Per event type: p50 and p99 seconds")
    ]
    publish: Annotated[_Series, msgspec.Meta(description="p50, p99 seconds and batches per s")]
    responses: Annotated[_Series, msgspec.Meta(description="Per counted status: answers per s")]
    erasures: Annotated[_Series, msgspec.Meta(description="Requests open and overdue")]
    batch_runs: list[BatchRunRow]
