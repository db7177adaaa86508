"""The embedded stack: gateway, bus, streaming consumer and API in one process.

``headwater up`` runs it on SQLite files, no servers. Every part is also its own
entry point (``serve``, ``consume features``) so each can scale on its own.

The feature consumer runs on a thread here, and its other members (``members``: while
its group is behind, up to one per usable core; or ``HEADWATER_FEATURE_PROCESSES``) as
``headwater consume features`` processes beside it. Their metrics reach this process's
``/metrics`` only through prometheus-client's multiprocess directory, so they are
started only when one is set (``headwater up`` sets ``<home>/metrics``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from headwater.application import CONSUMERS, Application
from headwater.config import Settings
from headwater.errors import HeadwaterError
from headwater.members import MemberPool, feature_members
from headwater.metrics.histogram import multiprocess_dir
from headwater.runtime.loop import ConsumerRuntime

if TYPE_CHECKING:
    import uvicorn

__all__ = ["EmbeddedStack"]

log = logging.getLogger("headwater.stack")


class EmbeddedStack:
    """Everything in one process, started and stopped together: every consumer of the
    registry on a thread of its own, the orchestrator, the SLO watch, the nightly batch
    and the API, all built by one ``Application``."""

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
        self.settings = settings
        self.host = host
        self.port = port
        self.app = Application(settings)
        #: The first admin key's secret when this start created it (shown once), else None.
        self.admin_key: str | None = None
        if register_defaults:
            self.app.register_shipped_contracts()
            self.admin_key = self.app.ensure_admin_key()
        self.runtimes: list[ConsumerRuntime] = [spec.build(self.app) for spec in CONSUMERS]
        self.batch_scheduler = self.app.batch_scheduler()
        self.orchestrator_interval_s = orchestrator_interval_s
        self.slo_interval_s = slo_interval_s
        self.slo_monitor = self.app.slo_monitor()
        #: The feature consumer's members beside this process's thread, if any run.
        self.members = _members(self.app)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: uvicorn.Server | None = None

    @property
    def url(self) -> str:
        """Base URL of the API."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Start the consumers and the API in background threads; returns when serving.

        ``HeadwaterError`` when the API does not start (its port is taken, say); whatever
        had started is stopped first.
        """
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
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
        if self.members is not None:
            self.members.start()
            watcher = threading.Thread(
                target=self._watch_members,
                args=(self.members,),
                name="feature-members",
                daemon=True,
            )
            watcher.start()
            self._threads.append(watcher)
        orchestrator = threading.Thread(
            target=self.app.orchestrator.run,
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
        from headwater.gateway.server import server_config

        # The same limits as ``headwater serve``: header deadline and size, body deadline.
        config = server_config(create_app(self.app), host=self.host, port=self.port)
        self._server = uvicorn.Server(config)
        server_thread = threading.Thread(
            target=_serve, args=(self._server,), name="api", daemon=True
        )
        server_thread.start()
        self._threads.append(server_thread)
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not server_thread.is_alive():
                raise HeadwaterError(f"the API did not start on {self.url} (see the log above)")
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
        if self.members is not None:
            self.members.stop()
        self.app.close()

    def _watch_members(self, members: MemberPool) -> None:
        while not self._stop.wait(0.5):
            members.check()


def _serve(server: uvicorn.Server) -> None:
    # uvicorn exits (SystemExit) when it cannot bind; it has logged why, and start()
    # reports the API did not start.
    with contextlib.suppress(SystemExit):
        server.run()


def _members(app: Application) -> MemberPool | None:
    """The feature consumer's members beyond this process's thread, or None when none may
    run: one member in all, or no shared metrics directory to report to."""
    keep, most = feature_members(app.settings, app.bus.partitions)
    directory = multiprocess_dir()
    if most <= 1:
        return None
    if directory is None:
        log.info(
            "the feature consumer runs on one thread: its other members would need a "
            "shared metrics directory (PROMETHEUS_MULTIPROC_DIR; headwater up sets one)"
        )
        return None
    group = next(spec.group for spec in CONSUMERS if spec.name == "features")
    env = {**os.environ, "HEADWATER_HOME": str(app.settings.home)}
    return MemberPool(app.bus, group, keep=keep - 1, most=most - 1, env=env, metrics_dir=directory)
