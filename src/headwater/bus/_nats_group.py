"""Consumer-group state of the NATS bus, kept in two JetStream KV buckets.

``<stream>_OFFSETS`` holds each group's committed position per partition (key
``<group>.<partition>``, value the next stream sequence to read). ``<stream>_MEMBERS``
holds one key per live member (``<group>.<member>``), rewritten on every heartbeat.
Each member watches its group's keys, so it learns of joins and leaves without polling;
liveness is judged by the server's timestamps only, so clocks of members never matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from headwater.bus._nats_client import StreamLayout, member_token
from headwater.bus._nats_reader import stream_position
from headwater.errors import BusError

__all__ = ["GroupMembership", "OffsetStore"]

_KV_OP = "KV-Operation"
_KV_GONE = frozenset({"DEL", "PURGE"})
#: Optimistic commit attempts before giving up on a key other members keep changing.
_COMMIT_ATTEMPTS = 20


class OffsetStore:
    """Committed positions of every group, with MAX semantics per partition."""

    def __init__(self, js: Any, layout: StreamLayout) -> None:
        self._js = js
        self._layout = layout
        self._kv: Any = None
        # (revision, value) last seen per key: commits first try an update on top of it.
        self._known: dict[str, tuple[int, int]] = {}

    async def _bucket(self) -> Any:
        if self._kv is None:
            self._kv = await self._js.key_value(self._layout.offsets_bucket)
        return self._kv

    @staticmethod
    def _key(group: str, partition: int) -> str:
        return f"{member_token(group)}.{partition}"

    async def read(self, group: str, partitions: Iterable[int]) -> dict[int, int]:
        """The committed position of each partition that has one."""
        parts = list(partitions)
        values = await asyncio.gather(*(self._read_one(self._key(group, p)) for p in parts))
        return {p: v for p, v in zip(parts, values, strict=True) if v is not None}

    async def _read_one(self, key: str) -> int | None:
        import nats.js.errors

        kv = await self._bucket()
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        value = int(entry.value)
        self._known[key] = (int(entry.revision), value)
        return value

    async def commit(self, group: str, positions: Mapping[int, int]) -> None:
        """Raise each partition's position to the given one (a lower one is ignored)."""
        await asyncio.gather(
            *(self._raise(self._key(group, p), int(offset)) for p, offset in positions.items())
        )

    async def _raise(self, key: str, offset: int) -> None:
        import nats.js.errors

        kv = await self._bucket()
        for _ in range(_COMMIT_ATTEMPTS):
            known = self._known.get(key)
            if known is None:
                if await self._read_one(key) is None:
                    try:
                        revision = await kv.create(key, str(offset).encode())
                    except nats.js.errors.KeyWrongLastSequenceError:
                        continue  # another member created it first: compare with theirs
                    self._known[key] = (int(revision), offset)
                    return
                continue
            revision, value = known
            # Positions only grow, so a cached value at or past ``offset`` is still true.
            if value >= offset:
                return
            try:
                revision = await kv.update(key, str(offset).encode(), last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                self._known.pop(key, None)  # moved under us: re-read and compare again
                continue
            self._known[key] = (int(revision), offset)
            return
        raise BusError(f"NATS bus: commit of {key} kept conflicting with other members")


class GroupMembership:
    """One member's heartbeat and its view of the group's live members."""

    def __init__(
        self,
        js: Any,
        layout: StreamLayout,
        group: str,
        member: str,
        *,
        session_timeout_s: float,
        heartbeat_s: float,
        on_change: Callable[[], None],
    ) -> None:
        self._js = js
        self._layout = layout
        self._member = member
        self._me = member_token(member)
        self._prefix = f"$KV.{layout.members_bucket}.{member_token(group)}."
        self._session_timeout_ms = int(session_timeout_s * 1000)
        self._heartbeat_s = heartbeat_s
        self._on_change = on_change
        self._seen: dict[str, int] = {}  # member token -> server time (ms) of its last heartbeat
        self._next_beat = 0.0
        self._joined = asyncio.Event()
        # When the oldest heartbeat not yet seen back through the watch was sent (None: all seen).
        self._unechoed_since: float | None = None
        self._sub: Any = None

    async def join(self, timeout: float) -> None:
        """Heartbeat once, then watch the group until this member's own heartbeat shows up."""
        await self.beat()
        await self.watch()
        # The watch delivers in stream order: once our heartbeat arrived, so did every
        # earlier member's, and the first assignment already counts them.
        await asyncio.wait_for(self._joined.wait(), timeout)

    async def watch(self) -> None:
        """(Re)start the watch on the group's keys; it first replays each member's latest."""
        from nats.js import api

        await self._unwatch()
        self._unechoed_since = None
        self._sub = await self._js.subscribe(
            self._prefix + "*",
            stream=f"KV_{self._layout.members_bucket}",
            cb=self._on_entry,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            inactive_threshold=max(60.0, self._session_timeout_ms / 1000),
        )

    @property
    def watch_stalled(self) -> bool:
        """Our own heartbeats stopped coming back: the watch is broken and must restart.

        Left alone, the others' heartbeats would stop too, and this member would soon
        believe it is alone and take every partition.
        """
        since = self._unechoed_since
        return since is not None and time.monotonic() - since > self._session_timeout_ms / 2000

    def beat_now(self) -> None:
        """Make the next check heartbeat at once (after a reconnect)."""
        self._next_beat = 0.0

    def beat_due_in(self) -> float:
        """Seconds until the next heartbeat is due (0 when it is due now)."""
        return max(0.0, self._next_beat - time.monotonic())

    async def beat(self) -> None:
        """Write this member's key; the server stamps it with its own clock."""
        now = time.monotonic()
        self._next_beat = now + self._heartbeat_s
        if self._unechoed_since is None:
            self._unechoed_since = now
        await self._js.publish(self._prefix + self._me, self._member.encode())

    def live_members(self) -> list[str]:
        """Tokens of the members heard from within the session timeout, sorted (includes self)."""
        live = {self._me}
        if self._seen:
            # The freshest heartbeat (usually our own) stands in for the server's "now".
            cutoff = max(self._seen.values()) - self._session_timeout_ms
            live.update(m for m, ts in self._seen.items() if ts >= cutoff)
        return sorted(live)

    def assignment(self, partitions: int) -> list[int]:
        """This member's partitions: ``p % members == rank`` among the sorted live members."""
        live = self.live_members()
        rank = live.index(self._me)
        return [p for p in range(partitions) if p % len(live) == rank]

    async def _on_entry(self, msg: Any) -> None:
        if not msg.reply or not msg.subject.startswith(self._prefix):
            return  # flow-control or heartbeat of the watch itself
        token = msg.subject[len(self._prefix) :]
        if (msg.headers or {}).get(_KV_OP) in _KV_GONE:
            if self._seen.pop(token, None) is not None:
                self._on_change()
            return
        _, ts_ms = stream_position(msg.reply)
        new = token not in self._seen
        self._seen[token] = ts_ms
        if token == self._me:
            self._unechoed_since = None
            self._joined.set()
        elif new:
            self._on_change()

    async def _unwatch(self) -> None:
        import nats.errors

        sub, self._sub = self._sub, None
        if sub is not None:
            # When the connection is gone the server drops the watch by itself.
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def leave(self) -> None:
        """Stop watching and delete this member's key, so the others rebalance at once."""
        await self._unwatch()
        await self._js.publish(self._prefix + self._me, b"", headers={_KV_OP: "DEL"})
