"""Reading one partition subject of the bus stream from a given sequence.

A ``SubjectReader`` is an ephemeral, unacknowledged pull consumer filtered to one
subject. It keeps at most one pull request outstanding and buffers what arrives, so
records flow in while the caller processes the previous batch, and memory stays bounded
by the request size. Positions are tracked here, not by the server: to move back (a
rebalance, a lost consumer) the reader is simply reopened at the wanted sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from headwater.bus._nats_client import StreamLayout
from headwater.bus.base import KIND_SIGNAL, Record

__all__ = ["HEADER_KEY", "HEADER_KIND", "SubjectReader", "stream_position"]

HEADER_KEY = "hw-key"
HEADER_KIND = "hw-kind"

#: How long one pull request waits on the server for records before it expires.
PULL_EXPIRES_S = 5.0
#: A consumer nobody pulls from for this long is removed by the server (crashed readers).
INACTIVE_THRESHOLD_S = 300.0
#: Status codes that end a pull request normally: no messages (no_wait), request expired.
_END_STATUSES = frozenset({"404", "408"})
#: Idle heartbeat of a pull request; not a reply to anything.
_HEARTBEAT_STATUS = "100"
_JS_API = "$JS.API"


def stream_position(reply: str) -> tuple[int, int]:
    """The stream sequence and timestamp (ms) of a delivered message, from its ack subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>`` (v1) or the v2
    form with domain and account hash after ``ACK`` and a random token at the end.
    """
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[7]) // 1_000_000
    return int(tokens[7]), int(tokens[9]) // 1_000_000


class SubjectReader:
    """An ephemeral pull consumer on one partition subject with a bounded prefetch buffer."""

    def __init__(
        self,
        js: Any,
        layout: StreamLayout,
        partition: int,
        *,
        capacity: int,
        on_data: Callable[[], None],
        headers_only: bool = False,
    ) -> None:
        self.partition = partition
        self._js = js
        self._nc = js._nc
        self._layout = layout
        self._capacity = capacity
        self._on_data = on_data
        self._headers_only = headers_only
        self._buffer: deque[Record] = deque()
        self._sub: Any = None
        self._consumer: str | None = None
        self._inbox = ""
        self._request_id = 0
        self._outstanding = 0  # records the current pull request may still deliver
        self._request_deadline = 0.0
        self._next_seq = 0  # first sequence not yet buffered; older deliveries are dropped
        #: The next sequence ``take`` will hand out (one past the last record returned).
        self.position = 0
        #: Not open, or the server ended the consumer (deleted, leader change...): (re)open
        #: it at ``position``.
        self.broken = True
        #: The last pull ended without delivering everything asked for: caught up for now.
        self.exhausted = False

    async def open(self, start: int) -> int:
        """Start reading at sequence ``start`` (0: from the beginning); records pending."""
        from nats.js import api

        await self.close()
        self.position = self._next_seq = start
        self.broken = True
        self.exhausted = False
        self._buffer.clear()
        self._outstanding = 0
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_msg)
        config = api.ConsumerConfig(
            filter_subject=self._layout.subject(self.partition),
            ack_policy=api.AckPolicy.NONE,
            deliver_policy=(
                api.DeliverPolicy.BY_START_SEQUENCE if start > 0 else api.DeliverPolicy.ALL
            ),
            opt_start_seq=start if start > 0 else None,
            inactive_threshold=INACTIVE_THRESHOLD_S,
            headers_only=self._headers_only or None,
            mem_storage=True,  # the server keeps no state worth persisting: we track positions
            num_replicas=1,
        )
        info = await self._js.add_consumer(self._layout.stream, config)
        self._consumer = info.name
        self.broken = False
        return int(info.num_pending)

    @property
    def buffered(self) -> int:
        """Records delivered and not yet taken."""
        return len(self._buffer)

    @property
    def requesting(self) -> bool:
        """A pull request is still outstanding."""
        return self._outstanding > 0 and time.monotonic() < self._request_deadline

    async def pull(self, *, no_wait: bool = False) -> None:
        """Ask for more records unless a request is outstanding or the buffer is well filled."""
        if self._consumer is None or self.broken or self.requesting:
            return
        room = self._capacity - len(self._buffer)
        if room < max(1, self._capacity // 2):
            return
        self._request_id += 1
        request: dict[str, object] = {"batch": room}
        if no_wait:
            request["no_wait"] = True
        else:
            request["expires"] = int(PULL_EXPIRES_S * 1e9)
        self._outstanding = room
        # Past this the request is presumed lost (e.g. a reconnect) and another may be sent.
        self._request_deadline = time.monotonic() + PULL_EXPIRES_S + 1.0
        self.exhausted = False
        await self._nc.publish(
            f"{_JS_API}.CONSUMER.MSG.NEXT.{self._layout.stream}.{self._consumer}",
            json.dumps(request).encode(),
            reply=f"{self._inbox}.{self._request_id}",
        )

    def take(self, limit: int) -> list[Record]:
        """Up to ``limit`` buffered records, in sequence order; moves ``position``."""
        buffer = self._buffer
        n = min(limit, len(buffer))
        out = [buffer.popleft() for _ in range(n)]
        if out:
            self.position = out[-1].offset + 1
        return out

    async def _on_msg(self, msg: Any) -> None:
        if not msg.reply:
            self._on_status(msg)
            return
        seq, ts_ms = stream_position(msg.reply)
        if seq < self._next_seq:
            return  # a late delivery from before a reopen or a presumed-lost request
        self._next_seq = seq + 1
        headers = msg.headers or {}
        self._buffer.append(
            Record(
                self.partition,
                seq,
                unquote(headers.get(HEADER_KEY, "")),
                headers.get(HEADER_KIND, KIND_SIGNAL),
                msg.data,
                ts_ms,
            )
        )
        if self._outstanding > 0:
            self._outstanding -= 1
        self._on_data()

    def _on_status(self, msg: Any) -> None:
        status = (msg.headers or {}).get("Status", "")
        if status == _HEARTBEAT_STATUS:
            return
        if msg.subject != f"{self._inbox}.{self._request_id}":
            return  # the end of an older request
        self._outstanding = 0
        if status in _END_STATUSES:
            self.exhausted = True
        else:
            # 409 consumer deleted, 503 no responders...: reopen rather than guess.
            self.broken = True
        self._on_data()

    async def close(self) -> None:
        """Stop the subscription and delete the server-side consumer."""
        import nats.errors

        sub, consumer = self._sub, self._consumer
        self._sub = self._consumer = None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):  # connection gone: nothing to stop
                await sub.unsubscribe()
        if consumer is not None:
            # Not found: the server removed it already (inactive, stream deleted); any other
            # failure: the server drops it after INACTIVE_THRESHOLD_S anyway.
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await self._js.delete_consumer(self._layout.stream, consumer)


async def scan_subject(
    js: Any,
    layout: StreamLayout,
    partition: int,
    *,
    key: str | None,
    batch: int = 1000,
    with_values: bool = False,
    keep: Callable[[Record], bool] | None = None,
) -> list[Record]:
    """The records of ``key`` (every key: None) now in one partition subject that ``keep``
    accepts (values only if asked for)."""
    woke = asyncio.Event()
    reader = SubjectReader(
        js, layout, partition, capacity=batch, on_data=woke.set, headers_only=not with_values
    )
    seen = 0
    out: list[Record] = []
    try:
        pending = await reader.open(0)
        while seen < pending:
            woke.clear()
            await reader.pull(no_wait=True)
            while reader.requesting and not reader.broken:
                await asyncio.wait_for(woke.wait(), PULL_EXPIRES_S)
                woke.clear()
            got = reader.take(batch)
            seen += len(got)
            out.extend(
                r for r in got if (key is None or r.key == key) and (keep is None or keep(r))
            )
            if reader.broken or (not got and reader.exhausted):
                break  # records deleted meanwhile: the subject holds fewer than counted
    finally:
        await reader.close()
    return out
