"""Publishing a batch to JetStream and waiting for every acknowledgement.

nats-py's ``publish_async`` makes a future, a token and a semaphore round per message;
here a whole batch shares one future: each message's reply subject names its batch,
one wildcard subscription counts the acks down, and the batch is done at zero. That
halves the client's cost per record, which is most of the cost of a local publish.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec

from headwater.errors import BackendError, BackendUnavailableError, BusError

__all__ = ["AckedPublisher"]


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    error: _ApiError | None = None


_decode_ack = msgspec.json.Decoder(_PubAck).decode


class _Batch:
    """Acks still awaited for one batch, and the first refusal among those received."""

    def __init__(self, count: int, done: asyncio.Future[None]) -> None:
        self.left = count
        self.done = done
        self.error: BackendError | None = None

    def settle(self, error: BackendError | None) -> None:
        if error is not None and self.error is None:
            self.error = error
        self.left -= 1
        if self.left <= 0 and not self.done.done():
            self.done.set_result(None)


class AckedPublisher:
    """Publishes batches on one connection; each call returns when JetStream stored all."""

    def __init__(self, nc: Any) -> None:
        self._nc = nc
        self._inbox = ""
        self._batches: dict[str, _Batch] = {}
        self._next_batch = 0

    async def start(self) -> None:
        """Subscribe to the acks before the first publish can need them."""
        if not self._inbox:
            self._inbox = self._nc.new_inbox()
            await self._nc.subscribe(f"{self._inbox}.*.*", cb=self._on_ack)

    async def publish(
        self, items: Sequence[tuple[str, bytes, dict[str, str]]], timeout: float
    ) -> None:
        """Publish ``(subject, payload, headers)`` items and wait for every ack."""
        if not items:
            return
        await self.start()
        self._next_batch += 1
        batch_id = str(self._next_batch)
        batch = _Batch(len(items), asyncio.get_running_loop().create_future())
        self._batches[batch_id] = batch
        try:
            prefix = f"{self._inbox}.{batch_id}."
            publish = self._nc.publish
            for i, (subject, payload, headers) in enumerate(items):
                await publish(subject, payload, reply=prefix + str(i), headers=headers)
            await asyncio.wait({batch.done}, timeout=timeout)
        finally:
            # Acks arriving after this are for a batch nobody waits on: dropped.
            del self._batches[batch_id]
        if batch.error is not None:
            raise batch.error
        if batch.left > 0:
            raise BackendUnavailableError(
                f"NATS bus: {batch.left} of {len(items)} records not acknowledged within "
                f"{timeout}s (some of the batch may be stored)"
            )

    async def _on_ack(self, msg: Any) -> None:
        batch = self._batches.get(msg.subject.rsplit(".", 2)[-2])
        if batch is None:
            return
        status = (msg.headers or {}).get("Status")
        if status:
            # 503 "no responders": no stream captures the subject (deleted, not loaded yet).
            batch.settle(BusError(f"NATS bus: no stream stored the record (status {status})"))
            return
        try:
            ack = _decode_ack(msg.data)
        except msgspec.DecodeError:
            batch.settle(BusError(f"NATS bus: unreadable publish ack {msg.data[:200]!r}"))
            return
        error = ack.error
        if error is None:
            batch.settle(None)
        elif error.code == 503:
            batch.settle(
                BackendUnavailableError(f"JetStream unavailable for a publish: {error.description}")
            )
        else:
            batch.settle(
                BusError(
                    f"JetStream refused a record: {error.description} "
                    f"(code {error.code}, err_code {error.err_code})"
                )
            )
