"""The embedded stack: gateway, bus, streaming consumer and API in one process.

``headwater up`` runs it on SQLite files, no servers. Every part is also its own
entry point (``serve``, ``consume features``) so each can scale on its own.
"""

from __future__ import annotations

import logging
import threading
import time

import uvicorn

from headwater.bus import open_bus
from headwater.bus.dead_letters import DeadLetterStore
from headwater.bus.runtime import ConsumerRuntime, RecordHandler
from headwater.config import Settings
from headwater.contract.loader import default_definitions
from headwater.contract.registry import ContractRegistry
from headwater.control import open_control_database
from headwater.features.consumer import FeatureConsumer
from headwater.gateway.app import create_app
from headwater.gateway.services import GatewayServices, feature_engine
from headwater.online import open_online_store

__all__ = ["EmbeddedStack", "feature_runtime"]

log = logging.getLogger("headwater.stack")


def feature_runtime(
    settings: Settings, services: GatewayServices | None = None, *, batch_size: int = 5000
) -> ConsumerRuntime:
    """The streaming feature consumer as a runtime over its own connections."""
    control = services.control if services else open_control_database(settings.control_url)
    registry = services.registry if services else ContractRegistry(control)
    store = open_online_store(settings.online_url)
    bus = open_bus(settings.bus_url)
    consumer = FeatureConsumer(store, feature_engine(registry))
    closers = [bus.close, store.close] + ([] if services else [control.close])
    return ConsumerRuntime(
        bus,
        consumer.group,
        consumer,
        dead_letters=DeadLetterStore(control),
        batch_size=batch_size,
        poll_timeout=0.05,
        closers=closers,
    )


class EmbeddedStack:
    """Everything in one process, started and stopped together."""

    def __init__(
        self,
        settings: Settings,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        register_defaults: bool = True,
    ) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self.services = GatewayServices(settings)
        if register_defaults and not self.services.registry.current():
            self.services.registry.apply(default_definitions())
            self.services.refresh_contracts()
        self.runtimes: list[ConsumerRuntime] = [feature_runtime(settings, self.services)]
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
        for runtime in self.runtimes:
            runtime.stop()
        for t in self._threads:
            t.join(30)
        self.services.close()
