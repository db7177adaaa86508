"""What a scrape returns, in one process or in many.

- One process (``headwater up``, or any component run on its own): the process's
  ``REGISTRY``. The gateway serves it at ``/metrics`` on the API port; a consumer, the
  orchestrator or the batch scheduler serves it on a port of its own
  (``--metrics-port``, ``MetricsEndpoint``), so in a scale-out each process is a target.
- Several processes sharing one scrape (``headwater up --processes``): prometheus-client's
  multiprocess mode. The supervisor gives its processes a fresh directory in
  ``PROMETHEUS_MULTIPROC_DIR``; each counter, histogram and gauge writes its values to
  files there, and the gateway's ``/metrics`` sums every process's files
  (``scrape_registry``), plus the gauges it reads from the backends at scrape.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector, CollectorRegistry

from headwater.errors import AuthenticationError, PermissionDeniedError
from headwater.metrics import REGISTRY
from headwater.metrics.histogram import BatchHistogramFiles, multiprocess_dir

__all__ = [
    "MetricsEndpoint",
    "fresh_multiprocess_dir",
    "multiprocess_dir",
    "process_exited",
    "scrape_registry",
]

log = logging.getLogger("headwater.metrics")

#: Checks a scrape's bearer secret (None when it sent none): raises
#: ``AuthenticationError`` (401) or ``PermissionDeniedError`` (403).
Authorize = Callable[[str | None], None]


def scrape_registry(*read_at_scrape: Collector) -> CollectorRegistry:
    """The registry one scrape of this process serves.

    ``read_at_scrape``: collectors of this process that compute their values when
    collected (from the backends), already in ``REGISTRY``. Under multiprocess mode the
    answer is every process's counters, histograms and gauges, summed from the files,
    plus those collectors.
    """
    directory = multiprocess_dir()
    if directory is None:
        return REGISTRY
    # auto_describe off: describing a collector that reads the backends would read them.
    registry = CollectorRegistry(auto_describe=False)
    # prometheus-client's multiprocess functions carry no annotations.
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    registry.register(BatchHistogramFiles(directory))
    for collector in read_at_scrape:
        registry.register(collector)
    return registry


def fresh_multiprocess_dir(path: Path) -> Path:
    """``path`` emptied (created if missing): the files of an earlier run must not count."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def process_exited(pid: int, directory: Path) -> None:
    """Forget the live gauges of a process that exited (its counters and histograms stay:
    their totals never go down)."""
    mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


class MetricsEndpoint:
    """``GET /metrics`` of this process on a port of its own, for a process that has no
    API port (a consumer, the orchestrator, the batch scheduler).

    A scrape sends an ``operator`` key as its bearer token, as on the gateway.
    """

    def __init__(
        self,
        authorize: Authorize,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.authorize = authorize
        self.registry = registry
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-endpoint", daemon=True
        )
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    @property
    def port(self) -> int:
        """The port it listens on (the one chosen when asked for 0)."""
        return int(self._server.server_address[1])

    def answer(self, path: str, authorization: str | None) -> tuple[int, str, bytes]:
        """Status, content type and body of one request."""
        if path.split("?", 1)[0] != "/metrics":
            return 404, "text/plain; charset=utf-8", b"not found: only /metrics is served\n"
        scheme, _, secret = (authorization or "").partition(" ")
        try:
            self.authorize(secret.strip() if scheme.lower() == "bearer" else None)
        except AuthenticationError as exc:
            return 401, "text/plain; charset=utf-8", f"{exc}\n".encode()
        except PermissionDeniedError as exc:
            return 403, "text/plain; charset=utf-8", f"{exc}\n".encode()
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)

    def close(self) -> None:
        """Stop listening."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _handler(endpoint: MetricsEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                status, content_type, body = endpoint.answer(
                    self.path, self.headers.get("Authorization")
                )
            except Exception:  # a scrape gets an answer even when the control plane fails
                log.exception("metrics scrape failed")
                status, content_type, body = 503, "text/plain; charset=utf-8", b"unavailable\n"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if status == 401:
                self.send_header("WWW-Authenticate", "Bearer")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log.debug("metrics endpoint: %s", format % args)

    return Handler
