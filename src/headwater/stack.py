"""The embedded stack: gateway, bus, streaming consumer and API in one process.

``headwater up`` runs it on SQLite files, no servers. Every part is also its own
entry point (``serve``, ``consume features``) so each can scale on its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from headwater.bus import open_bus
from headwater.bus.dead_letters import DeadLetterStore
from headwater.bus.runtime import ERASURE_LINGER_S, ConsumerRuntime, RecordHandler
from headwater.config import Settings
from headwater.contract.loader import default_definitions
from headwater.contract.registry import ContractRegistry
from headwater.control import open_control_database
from headwater.dedupe import open_idempotency_window
from headwater.erasure.ledger import ErasureLedger
from headwater.erasure.platform import PlatformErasure
from headwater.erasure.subject import SubjectHasher, load_erasure_key
from headwater.erasure.tombstones import TombstoneFilter
from headwater.features.consumer import BATCH_SIZE, LINGER_S, FeatureConsumer
from headwater.gateway.services import GatewayServices, feature_engine
from headwater.online import open_online_store
from headwater.slo import SloMonitor

if TYPE_CHECKING:
    import uvicorn

__all__ = [
    "EmbeddedStack",
    "consumer_runtime",
    "feature_runtime",
    "platform_runtime",
    "slo_monitor",
]

log = logging.getLogger("headwater.stack")


def consumer_runtime(
    settings: Settings,
    handler: RecordHandler,
    group: str,
    *,
    services: GatewayServices | None = None,
    batch_size: int = 5000,
    linger_s: float = 0.0,
    closers: Sequence[Callable[[], None]] = (),
) -> ConsumerRuntime:
    """A runtime for any consumer: its own bus connection, the dead letters, the erasure
    ledger it registers with, and the tombstones that keep erased users out."""
    control = services.control if services else open_control_database(settings.control_url)
    ledger = services.ledger if services else ErasureLedger(control)
    hasher = services.hasher if services else SubjectHasher(load_erasure_key(settings.home))
    bus = open_bus(settings.bus_url)
    owned = [*closers, bus.close] + ([] if services else [control.close])
    return ConsumerRuntime(
        bus,
        group,
        handler,
        dead_letters=DeadLetterStore(control),
        batch_size=batch_size,
        linger_s=linger_s,
        poll_timeout=0.05,
        closers=owned,
        ledger=ledger,
        tombstones=TombstoneFilter(ledger, hasher),
    )


def feature_runtime(
    settings: Settings, services: GatewayServices | None = None, *, batch_size: int | None = None
) -> ConsumerRuntime:
    """The streaming feature consumer as a runtime over its own connections (batches of
    ``batch_size`` records at most, ``features.consumer.BATCH_SIZE`` by default)."""
    control = services.control if services else open_control_database(settings.control_url)
    registry = services.registry if services else ContractRegistry(control)
    store = open_online_store(settings.online_url)
    consumer = FeatureConsumer(store, feature_engine(registry, settings))
    closers = [store.close] + ([] if services else [control.close])
    return consumer_runtime(
        settings,
        consumer,
        consumer.group,
        services=services,
        batch_size=batch_size or BATCH_SIZE,
        linger_s=LINGER_S,
        closers=closers,
    )


def platform_runtime(
    settings: Settings, services: GatewayServices | None = None
) -> ConsumerRuntime:
    """Erasure of the platform's own stores: bus log, dead letters, idempotency window."""
    control = services.control if services else open_control_database(settings.control_url)
    bus = open_bus(settings.bus_url)
    window = open_idempotency_window(settings.dedupe_url, window_s=settings.dedupe_window_s)
    handler = PlatformErasure(bus, DeadLetterStore(control), window)
    closers = [window.close, bus.close] + ([] if services else [control.close])
    return consumer_runtime(
        settings,
        handler,
        "platform-erasure",
        services=services,
        batch_size=20_000,
        linger_s=ERASURE_LINGER_S,
        closers=closers,
    )


def slo_monitor(services: GatewayServices) -> SloMonitor:
    """The freshness SLO watch: breaches of an event type's budget raise an alert."""

    def as_of_age() -> float | None:
        positions = services.online.positions(services.features.group)
        if not positions:
            return None
        return max(0.0, time.time() - min(p.as_of_ms for p in positions.values()) / 1000)

    return SloMonitor(
        services.online,
        lambda: services.features.engine.budgets_s,
        webhook_url=services.settings.alert_webhook,
        as_of_age=as_of_age,
    )


class EmbeddedStack:
    """Everything in one process, started and stopped together.

    The API server, the archive and the batch are imported here, not with the module:
    a consumer process (``consume features``, ``up --processes``) builds its runtime
    from this module and would otherwise carry them (about 60 MB).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        register_defaults: bool = True,
        orchestrator_interval_s: float = 0.5,
        slo_interval_s: float = 15.0,
    ) -> None:
        from headwater.archive import archive_runtime
        from headwater.batch import batch_erasure_runtime, batch_scheduler

        self.settings = settings
        self.host = host
        self.port = port
        self.services = GatewayServices(settings)
        if register_defaults and not self.services.registry.current():
            self.services.registry.apply(default_definitions())
            self.services.refresh_contracts()
        self.runtimes: list[ConsumerRuntime] = [
            feature_runtime(settings, self.services),
            platform_runtime(settings, self.services),
            archive_runtime(settings, self.services),
            batch_erasure_runtime(settings, self.services),
        ]
        self.batch_scheduler = batch_scheduler(settings)
        self.orchestrator_interval_s = orchestrator_interval_s
        self.slo_interval_s = slo_interval_s
        self.slo_monitor = slo_monitor(self.services)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: uvicorn.Server | None = None

    @property
    def url(self) -> str:
        """Base URL of the API."""
        return f"http://{self.host}:{self.port}"

    def add_consumer(self, runtime: ConsumerRuntime) -> None:
        """Run one more consumer in the stack (archive, erasure participants, ...)."""
        self.runtimes.append(runtime)

    def handlers(self) -> list[RecordHandler]:
        """The consumers' handlers (each an erasure participant)."""
        return [r.handler for r in self.runtimes]

    def start(self) -> None:
        """Start the consumers and the API in background threads; returns when serving."""
        for runtime in self.runtimes:
            t = threading.Thread(
                target=runtime.run,
                kwargs={"install_signal_handlers": False},
                name=f"consumer-{runtime.handler.name}",
                daemon=True,
            )
            t.start()
            self._threads.append(t)
        self.batch_scheduler.start()
        orchestrator = threading.Thread(
            target=self.services.orchestrator.run,
            args=(self._stop,),
            kwargs={"interval_s": self.orchestrator_interval_s},
            name="erasure-orchestrator",
            daemon=True,
        )
        orchestrator.start()
        self._threads.append(orchestrator)
        monitor = threading.Thread(
            target=self.slo_monitor.run,
            args=(self._stop,),
            kwargs={"interval_s": self.slo_interval_s},
            name="slo-monitor",
            daemon=True,
        )
        monitor.start()
        self._threads.append(monitor)
        import uvicorn

        from headwater.gateway.app import create_app

        app = create_app(self.services)
        config = uvicorn.Config(
            app, host=self.host, port=self.port, log_level="warning", access_log=False
        )
        self._server = uvicorn.Server(config)
        server_thread = threading.Thread(target=self._server.run, name="api", daemon=True)
        server_thread.start()
        self._threads.append(server_thread)
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not server_thread.is_alive():
                raise RuntimeError(f"the API did not start on {self.url}")
            time.sleep(0.02)
        log.info("headwater embedded stack serving on %s", self.url)

    def stop(self) -> None:
        """Stop the API, let each consumer finish its batch and commit, close everything."""
        if self._server is not None:
            self._server.should_exit = True
        self._stop.set()
        self.batch_scheduler.stop(60)
        for runtime in self.runtimes:
            runtime.stop()
        for t in self._threads:
            t.join(30)
        self.services.close()
