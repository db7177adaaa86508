"""The composition root: every component of a deployment, built from ``Settings``.

``Application`` opens each connection on first use and closes them all, in the reverse
of the order they were opened, in ``close``. The gateway, every consumer, the
orchestrator, the batch, ``up`` and ``up --processes`` get their dependencies here and
nowhere else; domain packages receive what they need as arguments.

Shared connections (``control``, ``bus``, ``online``, ...) serve the gateway and the
orchestrator. A consumer gets connections of its own (``open_bus``,
``open_online_store``, ...): on the embedded stack each consumer runs on its own thread
and the SQLite backends keep one connection per thread of work. Both kinds are owned
here.

The larger components are built by functions beside it, which its methods call:
``offline`` (archive and batch), ``feature_definitions``, ``erasure``, ``ingestion``,
``first_run`` (a new control plane) and ``operations`` (status, readiness, the SLO).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from headwater.access.keys import ApiKeys
from headwater.access.sessions import Sessions
from headwater.application import (
    erasure,
    feature_definitions,
    first_run,
    ingestion,
    offline,
    operations,
)
from headwater.batch.state import BatchState
from headwater.bus import Bus, open_bus
from headwater.bus.dead_letters import DeadLetterStore
from headwater.config import Settings
from headwater.contract.validator import Limits
from headwater.control import ControlDatabase, open_control_database
from headwater.dedupe import IdempotencyWindow, open_idempotency_window
from headwater.erasure.ledger import ErasureLedger
from headwater.erasure.orchestrator import ErasureOrchestrator
from headwater.erasure.subject import SubjectHasher, load_erasure_key
from headwater.erasure.tombstones import TombstoneFilter
from headwater.erasure.verify import Verifier
from headwater.features.backfills import BackfillLedger
from headwater.features.engine import FeatureEngine
from headwater.features.live import LiveDefinitions
from headwater.features.reader import FeatureReader
from headwater.features.spec import DEFAULT_FEATURES, FeatureSpec, load_features
from headwater.features.versions import FeatureVersions
from headwater.ingest.ingestor import Ingestor
from headwater.online import OnlineStore, needs_partitioner, open_online_store
from headwater.ratelimit import RateLimiter
from headwater.recommend.recommender import Recommender
from headwater.registry.contracts import ContractRegistry
from headwater.runtime.consumer import Consumer
from headwater.runtime.loop import ConsumerRuntime
from headwater.runtime.presence import ConsumerPresence
from headwater.slo import SloMonitor

if TYPE_CHECKING:
    from headwater.archive.consumer import ArchiveConsumer
    from headwater.archive.settings import ArchiveSettings
    from headwater.archive.table import ArchiveTable
    from headwater.batch.runner import BatchRunner
    from headwater.batch.scheduler import BatchScheduler
    from headwater.batch.settings import BatchSettings
    from headwater.features.backfill import Backfill

__all__ = ["Application"]

log = logging.getLogger("headwater.application")
_T = TypeVar("_T")


class Application:
    """Every connection and component of one deployment, opened on first use."""

    def __init__(self, settings: Settings, *, limits: Limits | None = None) -> None:
        self.settings = settings
        self.limits = limits
        self._shared: dict[str, Any] = {}
        self._closers: list[tuple[str, Callable[[], None]]] = []
        self._lock = threading.RLock()
        self._closed = False

    # -- ownership -------------------------------------------------------------

    def _once(self, name: str, build: Callable[[], _T]) -> _T:
        with self._lock:
            if name not in self._shared:
                if self._closed:
                    raise RuntimeError(f"the application is closed: cannot open {name}")
                self._shared[name] = build()
            return cast("_T", self._shared[name])

    def own(self, name: str, closer: Callable[[], None]) -> None:
        """Close ``closer`` with the application (after whatever was opened later)."""
        with self._lock:
            self._closers.append((name, closer))

    def close(self) -> None:
        """Close everything opened, the most recent first; a failure is logged, and the
        rest are closed all the same."""
        with self._lock:
            self._closed = True
            closers, self._closers = self._closers, []
            self._shared.clear()
        for name, closer in reversed(closers):
            try:
                closer()
            except Exception:  # one failed close must not leave the others open
                log.exception("closing %s failed", name)

    def __enter__(self) -> Application:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connections of their own, for one component -----------------------------

    def open_control(self) -> ControlDatabase:
        """A control-plane connection of its own."""
        db = open_control_database(self.settings.control_url)
        self.own("control", db.close)
        return db

    def open_bus(self) -> Bus:
        """A bus connection of its own (each consumer reads through one)."""
        bus = open_bus(self.settings.bus_url)
        self.own("bus", bus.close)
        return bus

    def open_online_store(self) -> OnlineStore:
        """An online-store connection of its own (the feature consumer writes through one).

        A Redis Cluster keeps each bus partition's keys in one slot: it is given the
        bus's partitioner."""
        url = self.settings.online_url
        bus = self.bus if needs_partitioner(url) else None
        partitioner = (bus.partition_of, bus.partitions) if bus is not None else None
        store = open_online_store(url, partitioner=partitioner)
        self.own("online store", store.close)
        return store

    def open_idempotency_window(self) -> IdempotencyWindow:
        """An idempotency-window connection of its own."""
        window = open_idempotency_window(
            self.settings.dedupe_url, window_s=self.settings.dedupe_window_s
        )
        self.own("idempotency window", window.close)
        return window

    def open_archive_table(self) -> ArchiveTable:
        """The Delta archive table (the ``archive`` extra)."""
        return offline.archive_table(self)

    def open_archive_consumer(self, group: str = "archive") -> ArchiveConsumer:
        """The archive consumer (of ``group``) over a table of its own and the archive's
        erasure ledger."""
        return offline.archive_consumer(self, group)

    def open_batch_runner(
        self, store: OnlineStore | None = None, *, batch: BatchSettings | None = None
    ) -> BatchRunner:
        """A batch runner over the archive, writing into ``store`` (a connection of its
        own when not given), with ``batch`` instead of the deployment's batch settings."""
        return offline.batch_runner(self, store, batch)

    def batch_scheduler(self) -> BatchScheduler:
        """The nightly batch of ``headwater up`` (``HEADWATER_BATCH_SCHEDULE``)."""
        return offline.batch_scheduler(self)

    # -- shared components -----------------------------------------------------

    @property
    def control(self) -> ControlDatabase:
        """The control plane: contracts, keys, the erasure ledger, dead letters."""
        return self._once("control", self.open_control)

    @property
    def bus(self) -> Bus:
        """The bus connection the gateway publishes through."""
        return self._once("bus", self.open_bus)

    @property
    def online(self) -> OnlineStore:
        """The online-store connection the read API reads through."""
        return self._once("online", self.open_online_store)

    @property
    def dedupe(self) -> IdempotencyWindow:
        """The idempotency window the gateway checks event ids against."""
        return self._once("dedupe", self.open_idempotency_window)

    @property
    def registry(self) -> ContractRegistry:
        """Every registered version of every event type."""
        return self._once("registry", lambda: ContractRegistry(self.control))

    @property
    def keys(self) -> ApiKeys:
        """The API keys (stored hashed)."""
        return self._once("keys", lambda: ApiKeys(self.control))

    @property
    def sessions(self) -> Sessions:
        """Dashboard sessions (a cookie standing for an operator's key)."""
        return self._once("sessions", lambda: Sessions(self.control, self.keys))

    @property
    def limiter(self) -> RateLimiter:
        """Per-key rate limits, one budget per key for every gateway sharing the limiter
        (``HEADWATER_RATELIMIT_URL``)."""
        return self._once("limiter", lambda: ingestion.rate_limiter(self))

    @property
    def dead_letters(self) -> DeadLetterStore:
        """Records a consumer could not apply."""
        return self._once("dead letters", lambda: DeadLetterStore(self.control))

    @property
    def ledger(self) -> ErasureLedger:
        """Erasure requests, participants and their confirmations."""
        return self._once("ledger", lambda: erasure.erasure_ledger(self))

    @property
    def batch_state(self) -> BatchState:
        """The batch's computed days and run history, in the control plane."""
        return self._once("batch state", lambda: BatchState(self.control))

    @property
    def hasher(self) -> SubjectHasher:
        """The keyed hash that names an erased user in the audit."""
        return self._once("hasher", lambda: SubjectHasher(load_erasure_key(self.settings.home)))

    @property
    def tombstones(self) -> TombstoneFilter:
        """Erased users, for the gateway's ``user_erased`` check."""
        return self._once("tombstones", self.new_tombstones)

    def new_tombstones(self) -> TombstoneFilter:
        """A tombstone filter of its own (each consumer keeps one)."""
        return TombstoneFilter(self.ledger, self.hasher)

    @property
    def ingestor(self) -> Ingestor:
        """Validation, de-duplication and publishing of producer batches."""
        return self._once("ingestor", lambda: ingestion.ingestor(self))

    @property
    def orchestrator(self) -> ErasureOrchestrator:
        """Erasure requests: created, chased, completed, audited."""
        return self._once("orchestrator", lambda: erasure.orchestrator(self))

    @property
    def verifier(self) -> Verifier:
        """The independent check of every store before a request completes."""
        from headwater.application.verification import build_verifier

        return self._once("verifier", lambda: build_verifier(self))

    def configured_features(self) -> tuple[FeatureSpec, ...]:
        """The features file of the settings (``HEADWATER_FEATURES_FILE``), else the
        built-in set: version 1 of the definitions on a control plane that has none."""
        settings = self.settings
        return load_features(settings.features_file) if settings.features_file else DEFAULT_FEATURES

    @property
    def feature_versions(self) -> FeatureVersions:
        """Every version of the feature definitions; version 1 (the configured features)
        is registered on first use when the control plane has none."""
        return self._once("feature versions", lambda: feature_definitions.feature_versions(self))

    def live_definitions(self) -> LiveDefinitions:
        """The control plane's current feature definitions for one consumer or reader,
        followed without a restart."""
        return feature_definitions.live_definitions(self)

    @property
    def feature_backfills(self) -> BackfillLedger:
        """Backfill runs of feature definitions and their hand-overs to the stream."""
        return self._once("feature backfills", lambda: BackfillLedger(self.control))

    def erased_subjects(self) -> dict[str, int]:
        """Every erased user's subject hash with its erasure time (ms), from the ledger."""
        return erasure.erased_subjects(self)

    def new_backfill(self) -> Backfill:
        """Backfills of feature definitions from the archive (the ``archive`` extra), into
        a store connection of their own."""
        return feature_definitions.new_backfill(self)

    def new_feature_engine(self, *, stream: bool = True) -> FeatureEngine:
        """The current feature definitions (version 1 is the configured set), with each
        event type's freshness budget from its contract and the lateness bound; the
        stream's engine computes the features that are not backfilling."""
        self.feature_versions  # noqa: B018 - registers version 1 on a new control plane
        return self.live_definitions().engine(stream=stream)

    @property
    def features(self) -> FeatureReader:
        """Feature reads at request time, stamped with freshness."""
        return self._once("features", lambda: feature_definitions.feature_reader(self))

    @property
    def recommender(self) -> Recommender:
        """Recommendations from the streaming and the batch features."""
        return self._once("recommender", lambda: feature_definitions.recommender(self))

    @property
    def archive_settings(self) -> ArchiveSettings:
        """How the archive writes, erases and vacuums (``HEADWATER_ARCHIVE_*``)."""
        from headwater.archive.settings import ArchiveSettings

        return self._once("archive settings", lambda: ArchiveSettings.from_env(self.settings))

    @property
    def batch_settings(self) -> BatchSettings:
        """What the nightly batch computes and where it keeps its work."""
        from headwater.batch.settings import BatchSettings

        return self._once("batch settings", lambda: BatchSettings.from_env(self.settings))

    def status(self) -> dict[str, object]:
        """Every consumer instance heard from (partitions, generations, last commit) and
        each consumer group's lag: what ``headwater status`` and ``/v1/status`` show."""
        return operations.status(self)

    def features_status(self) -> dict[str, object]:
        """The current feature definitions: version, each definition's state and backfill
        progress, and where each consumer group switched to the version."""
        return operations.features_status(self)

    @property
    def lag_groups(self) -> tuple[str, ...]:
        """The consumer groups whose lag is reported: ``HEADWATER_LAG_GROUPS``, else every
        consumer of the registry."""
        return operations.lag_groups(self)

    # -- consumers -------------------------------------------------------------

    def consumer(self, name: str, *, batch_size: int | None = None) -> ConsumerRuntime:
        """The runtime of the registry's consumer ``name``, over connections of its own."""
        from headwater.application.consumers import consumer_named

        return consumer_named(name).build(self, batch_size)

    def runtime(
        self,
        handler: Consumer,
        group: str,
        *,
        bus: Bus | None = None,
        batch_size: int = 5000,
        poll_timeout: float = 0.05,
        linger_s: float = 0.0,
        backoff: tuple[float, float] = (0.05, 5.0),
    ) -> ConsumerRuntime:
        """A runtime for ``handler``: its own bus connection (``bus`` if given), the dead
        letters, the ledger it registers its stores with, and tombstones of its own."""
        return ConsumerRuntime(
            bus or self.open_bus(),
            group,
            handler,
            dead_letters=self.dead_letters,
            batch_size=batch_size,
            poll_timeout=poll_timeout,
            linger_s=linger_s,
            backoff=backoff,
            ledger=self.ledger,
            tombstones=self.new_tombstones(),
            presence=ConsumerPresence(self.control),
        )

    # -- contracts -------------------------------------------------------------

    def register_shipped_contracts(self) -> bool:
        """Register the shipped teams' contracts on a control plane that has none yet
        (what ``up`` and ``up --processes`` do on a fresh home); True if it did."""
        return first_run.register_shipped_contracts(self)

    def ensure_admin_key(self) -> str | None:
        """On a control plane where no key carries ``admin``, create one and return its
        secret (to be shown once, as ``up`` does on a new home); else None."""
        return first_run.ensure_admin_key(self)

    def refresh_contracts(self) -> None:
        """Use newly registered contracts now: validation and freshness budgets."""
        with self._lock:
            ingestor = self._shared.get("ingestor")
            features = self._shared.get("features")
        if ingestor is not None:
            ingestor.refresh()
        if features is not None:
            features.engine.budgets_s = feature_definitions.budgets(self)

    # -- operations ------------------------------------------------------------

    def slo_monitor(self) -> SloMonitor:
        """The freshness SLO watch: breaches of an event type's budget raise an alert."""
        return operations.slo_monitor(self)

    def readiness(self) -> dict[str, object]:
        """Each backend asked now: whether it answered, how fast, or its error."""
        return operations.readiness(self)

    def check_ready(self) -> None:
        """Raise ``BackendUnavailableError`` naming the first backend that does not
        answer now (a process checks this before it starts work: fail fast, one line)."""
        return operations.check_ready(self)

    def describe(self) -> dict[str, object]:
        """Where each backend is (credentials redacted)."""
        return operations.describe(self)
