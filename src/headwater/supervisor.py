"""``headwater up --processes``: the embedded stack as one process per component.

``headwater up`` runs every component as a thread of one interpreter, which shares one
interpreter lock: at tens of thousands of events per second the gateway, the feature
consumer, the archive and the erasure participants wait on each other. Here each
component is its own process on the same data directory (the SQLite bus, stores and
control plane are built for several processes): the consumers, the orchestrator, the
nightly batch's scheduler and then the gateway, in that order, so every erasure
participant has registered its stores before the first request arrives. This process
keeps them running (a component that exits is started again, with a growing pause).

The feature consumer can run as several processes, each a member of its group on the bus
on a share of the partitions; the online store's fencing refuses a member's write for a
partition another has claimed since, so a rebalance never counts an event twice
(``features``, ``features-2``, ...). ``HEADWATER_FEATURE_PROCESSES=N`` runs N of them.
By default (``auto``) one runs, and another is started while the group is more than
``scale_up_lag_s`` behind, up to one per usable core: a backlog is caught up on every
core. Once the group has stayed caught up for ``scale_down_after_s``, the added members
stop, one at a time: at steady load the cores belong to the gateway and the other
consumers (a second member there made publishes and freshness slower, BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from headwater.application import CONSUMERS, Application, expected_participants
from headwater.config import Settings
from headwater.errors import HeadwaterError
from headwater.metrics.exposition import fresh_multiprocess_dir, process_exited

__all__ = ["COMPONENTS", "FEATURES", "Supervisor", "feature_members", "usable_cores"]

log = logging.getLogger("headwater.supervisor")

#: Every component but the gateway: name -> command line after ``headwater``. The
#: consumers come from the registry, in its order.
COMPONENTS: dict[str, tuple[str, ...]] = {
    **{spec.name: spec.command for spec in CONSUMERS},
    "orchestrator": ("orchestrate", "--interval", "0.5"),
}
#: The consumer that may run as several processes (see ``feature_members``).
FEATURES = "features"
#: Under ``auto``: a member is added while the group's oldest unapplied record is older
#: than this (seconds), one at a time, each given ``SCALE_SETTLE_S`` to take its share...
SCALE_UP_LAG_S = 10.0
SCALE_SETTLE_S = 15.0
#: ... and the added ones stop, one at a time, once the lag stayed under
#: ``CAUGHT_UP_LAG_S`` this long.
SCALE_DOWN_AFTER_S = 60.0
CAUGHT_UP_LAG_S = 1.0
#: How often the supervisor reads the group's lag.
LAG_CHECK_S = 2.0
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


def usable_cores() -> int:
    """The cores this process may run on (its affinity, as ``taskset`` sets it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def feature_members(
    settings: Settings, partitions: int, cores: int | None = None
) -> tuple[int, int]:
    """The feature consumer's processes: how many always run, and how many at most.

    ``feature_processes`` when set (both); else one, and up to one per usable core while
    the group catches up. Never more than the bus has partitions (a member without one
    would only wait)."""
    if settings.feature_processes is not None:
        fixed = max(1, min(settings.feature_processes, partitions))
        return fixed, fixed
    usable = usable_cores() if cores is None else cores
    return 1, max(1, min(usable, partitions))


@dataclass
class _Scaling:
    """When the supervisor last read the feature group's lag and what it decided."""

    up_lag_s: float
    settle_s: float
    down_after_s: float
    check_s: float
    next_check: float = 0.0
    settled_at: float = 0.0
    caught_up_since: float | None = None


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
        scale_up_lag_s: float = SCALE_UP_LAG_S,
        scale_settle_s: float = SCALE_SETTLE_S,
        scale_down_after_s: float = SCALE_DOWN_AFTER_S,
        lag_check_s: float = LAG_CHECK_S,
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
        }
        # This process's own connections: the contracts, the ledger and the nightly batch.
        self.app = Application(settings)
        #: The feature consumer's processes: always, and at most (see ``feature_members``).
        self.feature_members = feature_members(settings, self.app.bus.partitions, cores)
        self._scaling = _Scaling(scale_up_lag_s, scale_settle_s, scale_down_after_s, lag_check_s)
        self._children = []
        for name, args in COMPONENTS.items():
            self._children.append(_Child(name, args))
            if name == FEATURES:
                self._children += [
                    _Child(f"{name}-{n}", args) for n in range(2, self.feature_members[0] + 1)
                ]
        if run_batch:
            self._children.append(_Child("batch", BATCH_COMMAND))
        self._children.append(_Child("gateway", ("serve", "--host", host, "--port", str(port))))
        self._lock = threading.Lock()
        self._stopping = False
        #: The first admin key's secret when this start created it (shown once), else None.
        self.admin_key: str | None = None

    @property
    def children(self) -> dict[str, subprocess.Popen[bytes] | None]:
        """Each component's current process."""
        return {c.name: c.proc for c in self._children}

    def start(self) -> None:
        """Consumers and orchestrator first, then the gateway once they registered.

        A control plane without contracts gets the shipped ones first, as ``up`` does.
        """
        self.settings.home.mkdir(parents=True, exist_ok=True)
        fresh_multiprocess_dir(self.metrics_dir)
        self.app.register_shipped_contracts()
        self.admin_key = self.app.ensure_admin_key()
        for child in self._children[:-1]:
            self._spawn(child)
        self._wait_for_participants()
        gateway = self._children[-1]
        self._spawn(gateway)
        self._wait_for_gateway(gateway)

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
            if self.feature_members[1] > self.feature_members[0]:
                self._scale(now)
        return restarted

    def _features(self) -> list[_Child]:
        return [c for c in self._children if c.args == COMPONENTS[FEATURES]]

    def _scale(self, now: float) -> None:
        """Add a feature member while the group is behind; stop the added ones once it has
        stayed caught up (see the module's docstring)."""
        scaling = self._scaling
        if now < scaling.next_check:
            return
        scaling.next_check = now + scaling.check_s
        group = next(spec.group for spec in CONSUMERS if spec.name == FEATURES)
        try:
            behind = max((p.lag_seconds for p in self.app.bus.lag(group)), default=0.0)
        except HeadwaterError as exc:
            log.warning("cannot read the lag of %s: %s", group, exc)
            return
        members = self._features()
        if behind > scaling.up_lag_s:
            scaling.caught_up_since = None
            if len(members) < self.feature_members[1] and now >= scaling.settled_at:
                child = _Child(f"{FEATURES}-{len(members) + 1}", COMPONENTS[FEATURES])
                # Beside the other members: a stop ends the gateway first, then the rest.
                self._children.insert(self._children.index(members[-1]) + 1, child)
                self._spawn(child)
                scaling.settled_at = now + scaling.settle_s
                log.info("%s is %.1fs behind: %s added", group, behind, child.name)
        elif behind > CAUGHT_UP_LAG_S:
            scaling.caught_up_since = None
        elif scaling.caught_up_since is None:
            scaling.caught_up_since = now
        elif (
            now - scaling.caught_up_since >= scaling.down_after_s
            and len(members) > self.feature_members[0]
        ):
            child = members[-1]
            self._children.remove(child)
            if child.proc is not None:
                _terminate([child.proc])
                process_exited(child.proc.pid, self.metrics_dir)
            scaling.caught_up_since = now
            log.info("%s caught up: %s stopped", group, child.name)

    def stop(self) -> None:
        """SIGTERM: the gateway first, then the rest; each finishes its batch and commits."""
        with self._lock:
            self._stopping = True
        _terminate([c.proc for c in self._children[-1:] if c.proc is not None])
        rest = [c.proc for c in self._children[:-1] if c.proc is not None]
        has_batch = any(c.name == "batch" for c in self._children)
        _terminate(rest, BATCH_STOP_TIMEOUT_S if has_batch else STOP_TIMEOUT_S)
        for child in self._children:
            if child.proc is not None:
                process_exited(child.proc.pid, self.metrics_dir)
        self.app.close()


def _terminate(procs: Sequence[subprocess.Popen[bytes]], timeout_s: float = STOP_TIMEOUT_S) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("pid %d did not stop within %gs: killed", proc.pid, timeout_s)
            proc.kill()
            proc.wait()
