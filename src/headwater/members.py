"""The feature consumer's extra members: more processes while its group is behind.

The feature consumer may run as several processes, each a member of its group on the
bus with a share of the partitions; the online store's fencing refuses a member's write
for a partition another has claimed since, so a rebalance never counts an event twice.
``headwater up --processes`` runs one member as a process of its own and ``headwater
up`` on a thread; ``MemberPool`` adds the others as ``headwater consume features``
processes:

- ``HEADWATER_FEATURE_PROCESSES=N``: N members always (a dead one is started again).
- ``auto`` (the default): one, and another while the group's oldest unapplied record is
  more than ``up_lag_s`` old, up to one per usable core, so a backlog is caught up on
  every core. Once the group has stayed caught up for ``down_after_s`` the added members
  stop, one at a time. At steady load the cores belong to the gateway and the other
  consumers: a second member there made publishes and freshness slower (BENCHMARKS.md,
  "The feature consumer on several cores").
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from headwater.bus.base import Bus
from headwater.config import Settings
from headwater.errors import HeadwaterError
from headwater.metrics.exposition import process_exited

__all__ = ["COMMAND", "MemberPool", "Scaling", "feature_members", "terminate", "usable_cores"]

log = logging.getLogger("headwater.members")

#: An extra member's process: the arguments after ``headwater``.
COMMAND = ("consume", "features")
#: The group is caught up while its oldest unapplied record is younger than this (s).
CAUGHT_UP_LAG_S = 1.0
#: A member started again after it died waits at least this long (seconds).
RESTART_PAUSE_S = 1.0
STOP_TIMEOUT_S = 30.0


def usable_cores() -> int:
    """The cores this process may run on (its affinity, as ``taskset`` sets it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def feature_members(
    settings: Settings, partitions: int, cores: int | None = None
) -> tuple[int, int]:
    """The feature consumer's members: how many always run, and how many at most.

    ``feature_processes`` when set (both); else one, and up to one per usable core while
    the group catches up. Never more than the bus has partitions (a member without one
    would only wait)."""
    if settings.feature_processes is not None:
        fixed = max(1, min(settings.feature_processes, partitions))
        return fixed, fixed
    usable = usable_cores() if cores is None else cores
    return 1, max(1, min(usable, partitions))


@dataclass(frozen=True)
class Scaling:
    """When members are added and stopped (seconds)."""

    #: A member is added while the group is this far behind, one at a time...
    up_lag_s: float = 10.0
    #: ... each given this long to take its share before the next.
    settle_s: float = 15.0
    #: The added members stop, one at a time, once the group stayed caught up this long.
    down_after_s: float = 60.0
    #: How often the group's lag is read.
    check_s: float = 2.0


class MemberPool:
    """The members beyond those its owner runs: ``keep`` always, up to ``most`` while the
    group is behind. Its owner calls ``check`` every fraction of a second."""

    def __init__(
        self,
        bus: Bus,
        group: str,
        *,
        keep: int,
        most: int,
        env: Mapping[str, str],
        first_number: int = 2,
        scaling: Scaling | None = None,
        metrics_dir: Path | None = None,
        spawn: Callable[[Mapping[str, str]], subprocess.Popen[bytes]] | None = None,
    ) -> None:
        self.bus = bus
        self.group = group
        self.keep = keep
        self.most = max(keep, most)
        # A member outlives nothing: it stops once this process is gone, even by SIGKILL.
        self.env = {**env, "HEADWATER_PARENT_PID": str(os.getpid())}
        self.first_number = first_number
        self.scaling = scaling or Scaling()
        self.metrics_dir = metrics_dir
        self._spawn = spawn or _spawn
        #: Each added member's name (``features-2``, ...) and process, in start order.
        self.members: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._next_check = 0.0
        self._settled_at = 0.0
        self._next_restart = 0.0
        self._caught_up_since: float | None = None

    def start(self) -> None:
        """The members that always run."""
        while len(self.members) < self.keep:
            self._add()

    def check(self, now: float | None = None) -> list[str]:
        """Forget members that exited, start the ``keep`` again, then add one or stop one
        as the group's lag says. The names started."""
        now = time.monotonic() if now is None else now
        for name, proc in list(self.members):
            if proc.poll() is not None:
                log.error("%s exited with %s", name, proc.returncode)
                self._forget(name, proc)
        started = []
        if len(self.members) < self.keep and now >= self._next_restart:
            started.append(self._add())
            self._next_restart = now + RESTART_PAUSE_S
        if self.most > self.keep and now >= self._next_check:
            self._next_check = now + self.scaling.check_s
            started += self._scale(now)
        return started

    def _scale(self, now: float) -> list[str]:
        try:
            behind = max((p.lag_seconds for p in self.bus.lag(self.group)), default=0.0)
        except HeadwaterError as exc:
            log.warning("cannot read the lag of %s: %s", self.group, exc)
            return []
        if behind > self.scaling.up_lag_s:
            self._caught_up_since = None
            if len(self.members) < self.most and now >= self._settled_at:
                self._settled_at = now + self.scaling.settle_s
                name = self._add()
                log.info("%s is %.1fs behind: %s added", self.group, behind, name)
                return [name]
        elif behind > CAUGHT_UP_LAG_S:
            self._caught_up_since = None
        elif self._caught_up_since is None:
            self._caught_up_since = now
        elif now - self._caught_up_since >= self.scaling.down_after_s:
            self._caught_up_since = now
            if len(self.members) > self.keep:
                name, proc = self.members[-1]
                terminate([proc])
                self._forget(name, proc)
                log.info("%s caught up: %s stopped", self.group, name)
        return []

    def _add(self) -> str:
        taken = {name for name, _ in self.members}
        number = self.first_number
        while f"features-{number}" in taken:
            number += 1
        name = f"features-{number}"
        proc = self._spawn(self.env)
        self.members.append((name, proc))
        log.info("started %s (pid %d)", name, proc.pid)
        return name

    def _forget(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self.members.remove((name, proc))
        if self.metrics_dir is not None:
            process_exited(proc.pid, self.metrics_dir)

    def stop(self) -> None:
        """SIGTERM to every added member: each finishes its batch and commits."""
        terminate([proc for _, proc in self.members])
        for name, proc in list(self.members):
            self._forget(name, proc)


def _spawn(env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
        [sys.executable, "-m", "headwater", *COMMAND], env=dict(env)
    )


def terminate(procs: Sequence[subprocess.Popen[bytes]], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to each, then wait up to ``timeout_s`` for all; SIGKILL to any still running."""
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
