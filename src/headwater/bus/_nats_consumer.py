"""A member of a consumer group on the NATS bus.

Each member has its own connection and loop thread. While it polls it heartbeats,
follows the group's assignment, and reads each assigned partition through a
``SubjectReader`` opened at the group's committed position; a change of assignment
reopens every reader from the committed positions, so a partition's new owner starts
where the group last committed and nothing read but uncommitted is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from headwater.bus._nats_client import NatsSession, log
from headwater.bus._nats_group import GroupMembership, OffsetStore
from headwater.bus._nats_reader import SubjectReader
from headwater.bus.base import Record
from headwater.errors import ConfigurationError, HeadwaterError

if TYPE_CHECKING:
    from headwater.bus.nats import NatsBus

__all__ = ["NatsConsumer"]


class NatsConsumer:
    """One member of a consumer group on the NATS bus."""

    def __init__(self, bus: NatsBus, group: str, member: str) -> None:
        self.group = group
        self.member = member
        self._bus = bus
        self._readers: dict[int, SubjectReader] = {}
        self._cursor = 0
        self._closed = False
        self._session = NatsSession(bus.servers, timeout=bus.timeout_s, name=f"member-{member}")
        try:
            self._session.run(self._start(), f"joining group {group}", timeout=4 * bus.timeout_s)
        except BaseException:
            self._session.close()
            raise

    async def _start(self) -> None:
        bus, js = self._bus, self._session.js
        # Created on the loop thread: the event belongs to the loop that waits on it.
        self._wake = asyncio.Event()
        self._offsets = OffsetStore(js, bus.layout)
        self._membership = GroupMembership(
            js,
            bus.layout,
            self.group,
            self.member,
            session_timeout_s=bus.session_timeout_s,
            heartbeat_s=bus.heartbeat_s,
            on_change=self._wake.set,
        )
        await self._membership.join(bus.timeout_s)
        self._session.on_reconnect.append(self._resync)
        await self._follow_group()

    async def _resync(self) -> None:
        # After a reconnect the server may have restarted: our ephemeral consumers and
        # outstanding pull requests are gone, and our heartbeat may have lapsed.
        for reader in self._readers.values():
            reader.broken = True
        self._membership.beat_now()
        await self._membership.watch()
        self._wake.set()

    async def _follow_group(self) -> None:
        """Heartbeat when due, apply assignment changes, and reopen readers the server lost."""
        if self._membership.beat_due_in() == 0:
            await self._membership.beat()
            if self._membership.watch_stalled:
                await self._membership.watch()
        mine = self._membership.assignment(self._bus.partitions)
        if mine != sorted(self._readers):
            old, self._readers = self._readers, {}
            await asyncio.gather(*(r.close() for r in old.values()))
            commits = await self._offsets.read(self.group, mine)
            self._readers = {
                p: SubjectReader(
                    self._session.js,
                    self._bus.layout,
                    p,
                    capacity=self._bus.prefetch,
                    on_data=self._wake.set,
                )
                for p in mine
            }
            for p, reader in self._readers.items():
                reader.position = commits.get(p, 0)
        broken = [r for r in self._readers.values() if r.broken]
        if broken:
            await asyncio.gather(*(r.open(r.position) for r in broken))

    def assignment(self) -> set[int]:
        self._session.run(
            self._follow_group(), f"following group {self.group}", timeout=3 * self._bus.timeout_s
        )
        return set(self._readers)

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        if max_records < 1:
            raise ConfigurationError("poll: max_records must be at least 1")
        return self._session.run(
            self._poll(max_records, max(0.0, timeout)),
            f"polling group {self.group}",
            timeout=timeout + 3 * self._bus.timeout_s,
        )

    async def _poll(self, max_records: int, timeout: float) -> list[Record]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            await self._follow_group()
            out = self._take(max_records)
            # Ask for the next records now, so they arrive while the caller works.
            await asyncio.gather(*(r.pull() for r in self._readers.values()))
            remaining = deadline - loop.time()
            if out or remaining <= 0:
                return out
            if any(r.buffered or r.broken for r in self._readers.values()):
                continue
            # No await between the check above and clear(): no arrival can be missed.
            self._wake.clear()
            wait = min(remaining, max(0.001, self._membership.beat_due_in()))
            # Timing out means a heartbeat is due or the caller's timeout ran out.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def _take(self, max_records: int) -> list[Record]:
        parts = sorted(self._readers)
        out: list[Record] = []
        # Rotate the starting partition so no partition starves the others.
        for i in range(len(parts)):
            want = max_records - len(out)
            if want <= 0:
                break
            out.extend(self._readers[parts[(self._cursor + i) % len(parts)]].take(want))
        self._cursor += 1
        return out

    def commit(self, positions: Mapping[int, int]) -> None:
        if positions:
            self._session.run(
                self._offsets.commit(self.group, positions), f"committing group {self.group}"
            )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._session.run(self._leave(), f"leaving group {self.group}")
        except HeadwaterError as exc:
            # The member key then ages out after the session timeout instead.
            log.warning("NATS bus: %s could not leave %s cleanly: %s", self.member, self.group, exc)
        finally:
            self._session.close()

    async def _leave(self) -> None:
        readers, self._readers = self._readers, {}
        await asyncio.gather(*(r.close() for r in readers.values()))
        await self._membership.leave()
