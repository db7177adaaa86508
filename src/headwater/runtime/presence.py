"""Every consumer instance, seen from anywhere: a heartbeat row in the control plane.

Each running consumer writes what it holds (partitions and their generations), how
much it applied and when it last committed, every few seconds. ``headwater status``
and the gateway's ``/v1/status`` read the rows of the instances heard from recently.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

import msgspec

from headwater._time import format_ms
from headwater.control.base import ControlDatabase

__all__ = ["HEARTBEAT_S", "ConsumerInstance", "ConsumerPresence"]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS hw_consumer_instances (
        member TEXT PRIMARY KEY,
        grp TEXT NOT NULL,
        consumer TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        partitions TEXT NOT NULL,
        records BIGINT NOT NULL,
        fenced_batches BIGINT NOT NULL,
        last_commit_ms BIGINT NOT NULL,
        started_ms BIGINT NOT NULL,
        heartbeat_ms BIGINT NOT NULL
    )""",
)
#: How often an instance writes its row, at most.
HEARTBEAT_S = 2.0
#: An instance not heard from for this long is not listed (and its row is swept).
GONE_AFTER_S = 30.0


class ConsumerInstance(msgspec.Struct, frozen=True):
    """One running consumer, as it last reported itself."""

    member: str
    group: str
    consumer: str
    host: str
    pid: int
    partitions: dict[str, int]  # partition -> generation
    records: int
    fenced_batches: int
    last_commit_at: str | None
    started_at: str
    heartbeat_at: str


class ConsumerPresence:
    """Writes one instance's heartbeat; lists every instance's."""

    def __init__(self, db: ControlDatabase) -> None:
        self._db = db
        db.ensure_schema(SCHEMA)
        self._next = 0.0
        self._started_ms = int(time.time() * 1000)

    def beat(
        self,
        *,
        member: str,
        group: str,
        consumer: str,
        partitions: dict[int, int],
        records: int,
        fenced_batches: int,
        last_commit: float,
        force: bool = False,
    ) -> None:
        """Write this instance's row (at most every ``HEARTBEAT_S`` unless ``force``)."""
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + HEARTBEAT_S
        now_ms = int(time.time() * 1000)
        self._db.execute(
            "INSERT INTO hw_consumer_instances VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (member) DO UPDATE SET partitions = excluded.partitions, "
            "records = excluded.records, fenced_batches = excluded.fenced_batches, "
            "last_commit_ms = excluded.last_commit_ms, heartbeat_ms = excluded.heartbeat_ms",
            (
                member,
                group,
                consumer,
                socket.gethostname(),
                os.getpid(),
                json.dumps({str(p): g for p, g in sorted(partitions.items())}),
                records,
                fenced_batches,
                int(last_commit * 1000),
                self._started_ms,
                now_ms,
            ),
        )

    def leave(self, member: str) -> None:
        """The instance stopped: its row goes."""
        self._db.execute("DELETE FROM hw_consumer_instances WHERE member = ?", (member,))

    def instances(self) -> list[ConsumerInstance]:
        """The instances heard from within the last half minute, by group and member."""
        cutoff = int((time.time() - GONE_AFTER_S) * 1000)
        self._db.execute("DELETE FROM hw_consumer_instances WHERE heartbeat_ms < ?", (cutoff,))
        rows = self._db.execute(
            "SELECT member, grp, consumer, host, pid, partitions, records, fenced_batches, "
            "last_commit_ms, started_ms, heartbeat_ms FROM hw_consumer_instances "
            "ORDER BY grp, member"
        )
        return [_instance(r) for r in rows]


def _instance(row: Any) -> ConsumerInstance:
    member, group, consumer, host, pid, parts, records, fenced, commit, started, beat = row
    return ConsumerInstance(
        member=str(member),
        group=str(group),
        consumer=str(consumer),
        host=str(host),
        pid=int(pid),
        partitions={str(k): int(v) for k, v in json.loads(str(parts)).items()},
        records=int(records),
        fenced_batches=int(fenced),
        last_commit_at=format_ms(int(commit)) if int(commit) else None,
        started_at=format_ms(int(started)),
        heartbeat_at=format_ms(int(beat)),
    )
