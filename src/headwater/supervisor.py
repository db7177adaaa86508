"""``headwater up --processes``: the embedded stack as one process per component.

``headwater up`` runs every component as a thread of one interpreter, which shares one
interpreter lock: at tens of thousands of events per second the gateway, the feature
consumer, the archive and the erasure participants wait on each other. Here each
component is its own process on the same data directory (the SQLite bus, stores and
control plane are built for several processes): the consumers, the orchestrator, the
nightly batch's scheduler and then the gateway, in that order, so every erasure
participant has registered its stores before the first request arrives. This process
keeps them running (a component that exits is started again, with a growing pause).

The feature consumer's members beyond the first (``features-2``, ...) are kept by a
``members.MemberPool``: ``HEADWATER_FEATURE_PROCESSES`` of them always, or by default more
while its group is behind, up to one per usable core.

Metrics: the processes run in prometheus-client's multiprocess mode, in a directory
emptied at each start (``<home>/metrics``), so one scrape of the gateway's ``/metrics``
shows every process's counters, histograms and gauges (``headwater.metrics.exposition``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import httpx

from headwater.application import CONSUMERS, Application, expected_participants
from headwater.config import Settings
from headwater.errors import HeadwaterError
from headwater.members import MemberPool, Scaling, feature_members, terminate
from headwater.metrics.exposition import fresh_multiprocess_dir, process_exited

__all__ = ["COMPONENTS", "FEATURES", "Supervisor"]

log = logging.getLogger("headwater.supervisor")

#: Every component but the gateway: name -> command line after ``headwater``. The
#: consumers come from the registry, in its order.
COMPONENTS: dict[str, tuple[str, ...]] = {
    **{spec.name: spec.command for spec in CONSUMERS},
    "orchestrator": ("orchestrate", "--interval", "0.5"),
}
#: The consumer that may run as several processes (``members``).
FEATURES = "features"
#: The nightly batch's scheduler (``HEADWATER_BATCH_SCHEDULE``), unless ``run_batch`` is off.
BATCH_COMMAND = ("batch", "schedule")
#: Longest wait for a starting gateway to answer, and for a stopping process to exit.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
#: The batch scheduler lets a run in progress finish for up to 60 s when stopped.
BATCH_STOP_TIMEOUT_S = 75.0


@dataclass
class _Child:
    name: str
    args: tuple[str, ...]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    pause_s: float = field(default=0.5)


class Supervisor:
    """Starts, watches and stops the processes of the embedded stack."""

    def __init__(
        self,
        settings: Settings,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        max_pause_s: float = 30.0,
        run_batch: bool = True,
        cores: int | None = None,
        scaling: Scaling | None = None,
    ) -> None:
        self.settings = settings
        self.url = f"http://{host}:{port}"
        self.max_pause_s = max_pause_s
        #: prometheus-client's multiprocess directory of the processes (emptied at start).
        self.metrics_dir = settings.home / "metrics"
        self._env = {
            **os.environ,
            "HEADWATER_HOME": str(settings.home),
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            # Each process stops once this one is gone, even killed (``cli.PARENT_PID``).
            "HEADWATER_PARENT_PID": str(os.getpid()),
        }
        # This process's own connections: the contracts, the ledger and the nightly batch.
        self.app = Application(settings)
        self._children = [_Child(name, args) for name, args in COMPONENTS.items()]
        #: The feature consumer's members: always, and at most (``members.feature_members``).
        self.feature_members = feature_members(settings, self.app.bus.partitions, cores)
        keep, most = self.feature_members
        group = next(spec.group for spec in CONSUMERS if spec.name == FEATURES)
        #: The members beyond ``features``.
        self.members = MemberPool(
            self.app.bus,
            group,
            keep=keep - 1,
            most=most - 1,
            env=self._env,
            scaling=scaling,
            metrics_dir=self.metrics_dir,
        )
        if run_batch:
            self._children.append(_Child("batch", BATCH_COMMAND))
        self._children.append(_Child("gateway", ("serve", "--host", host, "--port", str(port))))
        self._lock = threading.Lock()
        self._stopping = False
        #: The first admin key's secret when this start created it (shown once), else None.
        self.admin_key: str | None = None

    @property
    def children(self) -> dict[str, subprocess.Popen[bytes] | None]:
        """Each component's current process (the feature consumer's added members too)."""
        return {c.name: c.proc for c in self._children} | dict(self.members.members)

    def start(self) -> None:
        """Consumers and orchestrator first, then the gateway once they registered.

        A control plane without contracts gets the shipped ones first, as ``up`` does.
        If a component fails to start, the ones started are stopped before this raises.
        """
        self.settings.home.mkdir(parents=True, exist_ok=True)
        fresh_multiprocess_dir(self.metrics_dir)
        self.app.register_shipped_contracts()
        self.admin_key = self.app.ensure_admin_key()
        try:
            for child in self._children[:-1]:
                self._spawn(child)
            self.members.start()
            self._wait_for_participants()
            gateway = self._children[-1]
            self._spawn(gateway)
            self._wait_for_gateway(gateway)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, child: _Child) -> None:
        child.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
            [sys.executable, "-m", "headwater", *child.args], env=self._env
        )
        log.info("started %s (pid %d)", child.name, child.proc.pid)

    def _wait_for_participants(self) -> None:
        # Each consumer registers its stores with the erasure ledger when it starts.
        expected = set(expected_participants())
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self._raise_if_exited()
            if expected <= {p.name for p in self.app.ledger.participants()}:
                return
            time.sleep(0.2)
        raise HeadwaterError(f"consumers did not register within {START_TIMEOUT_S:g}s")

    def _wait_for_gateway(self, gateway: _Child) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self._raise_if_exited()
            try:
                httpx.get(f"{self.url}/v1/health", timeout=1.0)
            except httpx.HTTPError:
                time.sleep(0.1)
            else:
                return
        raise HeadwaterError(f"{gateway.name} did not answer within {START_TIMEOUT_S:g}s")

    def _raise_if_exited(self) -> None:
        for child in self._children:
            if child.proc is not None and child.proc.poll() is not None:
                raise HeadwaterError(
                    f"{child.name} exited with {child.proc.returncode} while starting"
                )

    def watch(self, stop: threading.Event, *, interval_s: float = 0.5) -> None:
        """Start again any component that exited, until ``stop`` is set."""
        while not stop.wait(interval_s):
            self.check()

    def check(self) -> list[str]:
        """One look at every component; the names of those started again."""
        restarted = []
        now = time.monotonic()
        with self._lock:
            if self._stopping:
                return []
            for child in self._children:
                if child.proc is None or child.proc.poll() is None:
                    continue
                if child.next_start == 0.0:
                    process_exited(child.proc.pid, self.metrics_dir)
                    child.next_start = now + child.pause_s
                    log.error(
                        "%s exited with %s; starting it again in %.1fs",
                        child.name,
                        child.proc.returncode,
                        child.pause_s,
                    )
                if now >= child.next_start:
                    self._spawn(child)
                    child.restarts += 1
                    child.next_start = 0.0
                    child.pause_s = min(self.max_pause_s, child.pause_s * 2)
                    restarted.append(child.name)
            restarted += self.members.check(now)
        return restarted

    def stop(self) -> None:
        """SIGTERM: the gateway first, then the rest; each finishes its batch and commits."""
        with self._lock:
            self._stopping = True
        terminate([c.proc for c in self._children[-1:] if c.proc is not None])
        rest = [c.proc for c in self._children[:-1] if c.proc is not None]
        rest += [proc for _, proc in self.members.members]
        has_batch = any(c.name == "batch" for c in self._children)
        terminate(rest, BATCH_STOP_TIMEOUT_S if has_batch else STOP_TIMEOUT_S)
        self.members.stop()
        for child in self._children:
            if child.proc is not None:
                process_exited(child.proc.pid, self.metrics_dir)
        self.app.close()
