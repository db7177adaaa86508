"""The NATS JetStream bus, selected by ``nats://host:4222?topic=headwater.signals``.

One stream per topic (``HW_<TOPIC>``, file storage, ``max_age`` = retention) captures the
subjects ``<topic>.<partition>``; a record's offset is its stream sequence, which grows
within a partition but skips the numbers other partitions took. The partition count is
written into the stream description when the stream is created and wins afterwards, so
keys keep mapping to the same partition.

Consumer groups keep their positions and members in KV buckets (see ``_nats_group``);
members split the partitions as on the SQLite bus: ``p % members == rank``.

``publish`` returns once JetStream acknowledged every record. What an ack means is the
server's setting: a single server writes before acking but fsyncs only every
``sync_interval`` (2 minutes by default), so acked records survive a server crash but
not a power cut unless the server runs with ``sync_interval: always`` or the stream has
3 replicas (``?replicas=3``).

URL options besides ``partitions``, ``retention`` and ``topic``: ``session_timeout``
(10s), ``heartbeat`` (0.5s), ``timeout`` for each server round trip (5s), ``replicas``
of the stream and buckets (1), ``prefetch`` records buffered per partition (1000).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from headwater._duration import parse_duration
from headwater.bus._nats_client import NatsSession, StreamLayout, log, servers_of
from headwater.bus._nats_consumer import NatsConsumer
from headwater.bus._nats_group import OffsetStore
from headwater.bus._nats_publish import AckedPublisher
from headwater.bus._nats_reader import HEADER_KEY, HEADER_KIND, scan_subject
from headwater.bus._options import BusOptions
from headwater.bus.base import (
    KIND_SIGNAL,
    Bus,
    ErasureCapability,
    Message,
    PartitionLag,
    Record,
    partition_for,
)
from headwater.contract.signal import event_id_of
from headwater.errors import ConfigurationError

__all__ = ["NatsBus", "NatsConsumer", "delete_bus"]

SESSION_TIMEOUT_S = 10.0
HEARTBEAT_S = 0.5
REQUEST_TIMEOUT_S = 5.0
PREFETCH = 1000
#: URL options this backend reads besides partitions, retention and topic.
_OPTIONS = ("session_timeout", "heartbeat", "timeout", "replicas", "prefetch")

_PARTITIONS_IN_DESCRIPTION = re.compile(r"\bpartitions=(\d+)\b")
#: err_code of "stream name already in use": another process created it a moment ago.
_STREAM_NAME_IN_USE = 10058


class NatsBus(Bus):
    """The bus on NATS JetStream."""

    def __init__(
        self, url: str, *, partitions: int | None = None, retention_s: float | None = None
    ) -> None:
        self.url = url
        self.options = BusOptions.from_url(url, partitions=partitions, retention_s=retention_s)
        self.options.refuse_unknown(url, _OPTIONS)
        extra = self.options.extra
        self.session_timeout_s = parse_duration(
            extra.get("session_timeout", SESSION_TIMEOUT_S), f"{url} session_timeout"
        )
        self.heartbeat_s = parse_duration(extra.get("heartbeat", HEARTBEAT_S), f"{url} heartbeat")
        self.timeout_s = parse_duration(extra.get("timeout", REQUEST_TIMEOUT_S), f"{url} timeout")
        try:
            self.replicas = int(extra.get("replicas", 1))
            self.prefetch = int(extra.get("prefetch", PREFETCH))
        except ValueError:
            raise ConfigurationError(
                f"{url}: replicas and prefetch must be whole numbers"
            ) from None
        if self.replicas < 1 or self.prefetch < 1:
            raise ConfigurationError(f"{url}: replicas and prefetch must be at least 1")
        self.layout = StreamLayout.for_topic(self.options.topic)
        self.servers = servers_of(url)
        self._session = NatsSession(self.servers, timeout=self.timeout_s, name="bus")
        try:
            self.partitions, self.retention_s = self._session.run(
                self._ensure_stream(
                    self.options.partitions if self.options.partitions_given else None
                ),
                f"opening stream {self.layout.stream}",
                timeout=4 * self.timeout_s,
            )
        except BaseException:
            self._session.close()
            raise
        self._offsets = OffsetStore(self._session.js, self.layout)
        self._publisher = AckedPublisher(self._session.nc)
        try:
            self._session.run(self._publisher.start(), "subscribing to publish acks")
        except BaseException:
            self._session.close()
            raise

    async def _ensure_stream(self, explicit: int | None) -> tuple[int, float]:
        import nats.js.errors
        from nats.js import api

        js, layout, opts = self._session.js, self.layout, self.options
        try:
            info = await js.stream_info(layout.stream)
        except nats.js.errors.NotFoundError:
            config = api.StreamConfig(
                name=layout.stream,
                subjects=[layout.subjects],
                description=f"headwater bus topic={layout.topic} partitions={opts.partitions}",
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.LIMITS,
                discard=api.DiscardPolicy.OLD,
                max_age=opts.retention_s,
                num_replicas=self.replicas,
            )
            try:
                info = await js.add_stream(config)
            except nats.js.errors.APIError as exc:
                if exc.err_code != _STREAM_NAME_IN_USE:
                    raise
                info = await js.stream_info(layout.stream)
        if list(info.config.subjects or []) != [layout.subjects]:
            raise ConfigurationError(
                f"stream {layout.stream} captures {info.config.subjects}, not {layout.subjects}: "
                "another topic maps to the same stream name"
            )
        found = _PARTITIONS_IN_DESCRIPTION.search(info.config.description or "")
        if found is None:
            raise ConfigurationError(
                f"stream {layout.stream} was not created by headwater "
                "(no partition count in its description)"
            )
        stored = int(found.group(1))
        if explicit is not None and explicit != stored:
            raise ConfigurationError(
                f"{layout.stream} was created with {stored} partitions; "
                f"it cannot be read as {explicit} (drop ?partitions= to use the stream's count)"
            )
        retention = float(info.config.max_age or 0.0)
        if abs(retention - opts.retention_s) > 1.0:
            log.warning(
                "stream %s keeps its retention of %s (asked: %.0fs); change it with "
                "`nats stream edit`",
                layout.stream,
                f"{retention:.0f}s" if retention else "unlimited",
                opts.retention_s,
            )
        await self._ensure_bucket(layout.offsets_bucket, storage=api.StorageType.FILE, ttl=None)
        # Member keys are rewritten every heartbeat; the TTL only sweeps keys of dead members.
        # File storage too: a server restart must not lose the bucket under live members.
        await self._ensure_bucket(
            layout.members_bucket,
            storage=api.StorageType.FILE,
            ttl=max(3600.0, 10 * self.session_timeout_s),
        )
        return stored, retention

    async def _ensure_bucket(self, bucket: str, *, storage: Any, ttl: float | None) -> None:
        import nats.js.errors

        js = self._session.js
        try:
            await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            try:
                await js.create_key_value(
                    bucket=bucket,
                    history=1,
                    storage=storage,
                    ttl=ttl,
                    replicas=self.replicas,
                    description=f"headwater bus {self.layout.topic}",
                )
            except nats.js.errors.APIError as exc:
                if exc.err_code != _STREAM_NAME_IN_USE:
                    raise
                await js.key_value(bucket)  # created concurrently by another process

    def publish(self, messages: Sequence[Message]) -> None:
        if messages:
            # The coroutine bounds the wait for acks itself; this outer bound also covers
            # queueing a very large batch.
            self._session.run(
                self._publish(messages),
                "publishing",
                timeout=self.timeout_s * 3 + len(messages) / 10_000,
            )

    async def _publish(self, messages: Sequence[Message]) -> None:
        n, topic = self.partitions, self.layout.topic
        # Keys are percent-encoded: header values lose surrounding blanks and cannot
        # carry line breaks.
        items = [
            (
                f"{topic}.{partition_for(m.key, n)}",
                m.value,
                {HEADER_KEY: quote(m.key, safe=""), HEADER_KIND: m.kind},
            )
            for m in messages
        ]
        await self._publisher.publish(items, self.timeout_s)

    def partition_of(self, key: str) -> int:
        """The partition of a key (CRC-32, as publish places it)."""
        return partition_for(key, self.partitions)

    def consumer(self, group: str, *, member: str | None = None) -> NatsConsumer:
        return NatsConsumer(self, group, member or f"{os.getpid()}-{uuid.uuid4().hex[:8]}")

    def lag(self, group: str) -> list[PartitionLag]:
        return self._session.run(
            self._lag(group), f"reading the lag of {group}", timeout=3 * self.timeout_s
        )

    async def _lag(self, group: str) -> list[PartitionLag]:
        commits = await self._offsets.read(group, range(self.partitions))
        return list(
            await asyncio.gather(
                *(self._partition_lag(group, p, commits.get(p, 0)) for p in range(self.partitions))
            )
        )

    async def _partition_lag(self, group: str, partition: int, committed: int) -> PartitionLag:
        import nats.js.errors
        from nats.js import api

        js, stream, subject = self._session.js, self.layout.stream, self.layout.subject(partition)
        try:
            last = await js.get_last_msg(stream, subject)
        except nats.js.errors.NotFoundError:
            return PartitionLag(group, partition, committed, committed, 0, 0.0)
        end = max(int(last.seq) + 1, committed)
        if committed >= end:
            return PartitionLag(group, partition, committed, end, 0, 0.0)
        try:
            oldest = await js.get_msg(stream, seq=max(committed, 1), subject=subject, next=True)
        except nats.js.errors.NotFoundError:  # deleted meanwhile (retention, purge)
            return PartitionLag(group, partition, committed, end, 0, 0.0)
        # Sequences are not contiguous within a partition: let the server count them.
        info = await js.add_consumer(
            stream,
            api.ConsumerConfig(
                filter_subject=subject,
                ack_policy=api.AckPolicy.NONE,
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=int(oldest.seq),
                mem_storage=True,
                num_replicas=1,
                inactive_threshold=5.0,
            ),
        )
        with contextlib.suppress(nats.js.errors.NotFoundError):  # already swept by the server
            await js.delete_consumer(stream, info.name)
        age = time.time() - oldest.time.timestamp() if oldest.time is not None else 0.0
        return PartitionLag(group, partition, committed, end, int(info.num_pending), max(0.0, age))

    def erasure_capability(self) -> ErasureCapability:
        return ErasureCapability(
            can_purge=True,
            method="purge",
            retention_seconds=self.retention_s or None,  # 0: the stream has no max_age
            detail="purge_key deletes each record of the key from the JetStream stream by "
            "sequence with erase, so the server overwrites the stored message with "
            "random bytes before removing it; with replicas > 1, copies in the "
            "replication (raft) log last until the log is compacted",
        )

    def purge_key(self, key: str, where: Callable[[Record], bool] | None = None) -> int:
        return self._session.run(
            self._purge_key(key, where), "purging a key", timeout=max(30.0, 10 * self.timeout_s)
        )

    async def _purge_key(self, key: str, where: Callable[[Record], bool] | None) -> int:
        import nats.js.errors

        js = self._session.js
        part = partition_for(key, self.partitions)
        # Headers only unless a predicate must see values: keys are in the headers.
        found = await scan_subject(js, self.layout, part, key=key, with_values=where is not None)
        matching = [r.offset for r in found if where is None or where(r)]

        async def erase(seq: int) -> int:
            try:
                # The JetStream API erases (overwrites) unless the request says no_erase.
                await js.delete_msg(self.layout.stream, seq)
            except nats.js.errors.APIError:
                # The server's error codes for "already gone" vary by version: look instead.
                try:
                    await js.get_msg(self.layout.stream, seq=seq)
                except nats.js.errors.NotFoundError:
                    return 0  # gone already (retention, a concurrent purge)
                raise
            return 1

        deleted = 0
        for start in range(0, len(matching), 256):
            deleted += sum(await asyncio.gather(*(erase(s) for s in matching[start : start + 256])))
        return deleted

    def count_key(self, key: str, where: Callable[[Record], bool] | None = None) -> int:
        """Records of ``key`` still in the stream (an independent scan, for erasure evidence)."""
        records = self._session.run(
            scan_subject(
                self._session.js,
                self.layout,
                partition_for(key, self.partitions),
                key=key,
                with_values=where is not None,
            ),
            "counting a key",
            timeout=max(30.0, 10 * self.timeout_s),
        )
        return sum(1 for r in records if where is None or where(r))

    def find_event_ids(self, ids_by_key: Mapping[str, Collection[str]], since_ms: int) -> set[str]:
        """The signals among ``ids_by_key`` appended since ``since_ms`` (each key's
        records in its partition subject, scanned)."""
        found: set[str] = set()
        for key, wanted in ids_by_key.items():
            records = self._session.run(
                scan_subject(
                    self._session.js,
                    self.layout,
                    partition_for(key, self.partitions),
                    key=key,
                    with_values=True,
                ),
                "looking for event ids",
                timeout=max(30.0, 10 * self.timeout_s),
            )
            for r in records:
                if r.kind == KIND_SIGNAL and r.timestamp_ms >= since_ms:
                    event_id = event_id_of(r.value)
                    if event_id in wanted:
                        found.add(event_id)
        return found

    def count_keys(self, wheres: Mapping[str, Callable[[Record], bool] | None]) -> dict[str, int]:
        """``count_key`` for each key (one subject scan per key)."""
        return {key: self.count_key(key, where) for key, where in wheres.items()}

    def search_partitions(
        self,
        partitions: Collection[int],
        holds: Callable[[bytes], bool],
        keep: Callable[[Record], bool],
        *,
        ids: Collection[str] = (),
    ) -> list[Record]:
        """Every message of the partitions' subjects read with its value; those whose key
        or value ``holds`` offered to ``keep`` (the server cannot search values for
        ``ids``)."""
        del ids

        def wanted(r: Record) -> bool:
            return (holds(r.key.encode()) or holds(r.value)) and keep(r)

        found: list[Record] = []
        for part in sorted(set(partitions)):
            found.extend(
                self._session.run(
                    scan_subject(
                        self._session.js, self.layout, part, key=None, with_values=True, keep=wanted
                    ),
                    "searching a partition",
                    timeout=max(60.0, 20 * self.timeout_s),
                )
            )
        return found

    def close(self) -> None:
        self._session.close()


def delete_bus(url: str) -> None:
    """Delete a topic's stream and its KV buckets (test teardown, decommissioning)."""
    options = BusOptions.from_url(url)
    layout = StreamLayout.for_topic(options.topic)
    timeout = parse_duration(options.extra.get("timeout", REQUEST_TIMEOUT_S), f"{url} timeout")
    session = NatsSession(servers_of(url), timeout=timeout, name="admin")
    try:
        session.run(_delete(session.js, layout), f"deleting {layout.stream}", timeout=3 * timeout)
    finally:
        session.close()


async def _delete(js: Any, layout: StreamLayout) -> None:
    import nats.js.errors

    for stream in (layout.stream, f"KV_{layout.offsets_bucket}", f"KV_{layout.members_bucket}"):
        with contextlib.suppress(nats.js.errors.NotFoundError):  # never created, or gone
            await js.delete_stream(stream)
