"""A member of a consumer group on the Kafka bus.

librdkafka runs rebalance callbacks only inside a poll. ``assignment()`` therefore
polls too, and keeps whatever records that poll fetched for the next ``poll()``;
records of partitions revoked before they were handed out are dropped, and the
partition's next owner reads them again from the committed position.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from headwater.bus._kafka_admin import KafkaSettings, error_code, raise_translated
from headwater.bus.base import KIND_SIGNAL, Record
from headwater.errors import BusError, MissingDependencyError
from headwater.metrics import BUS_EXPIRED_UNREAD

try:
    import confluent_kafka as ck
except ImportError as exc:  # pragma: no cover - the kafka extra is installed in development
    raise MissingDependencyError("kafka", "confluent_kafka", "kafka") from exc

__all__ = ["KIND_HEADER", "KafkaConsumer", "now_ms"]

log = logging.getLogger("headwater.bus.kafka")

#: The record header that carries the record's kind (``signal``, ``erasure``).
KIND_HEADER = "hw-kind"
#: Records kept aside by ``assignment()`` before ``poll()`` asks for them; past this,
#: ``assignment()`` stops fetching and reports what it knows.
_MAX_BUFFERED = 10_000
# Commit errors that mean the partitions are moving to another member: its reads
# resume from the last stored position, so the records are delivered again, not lost.
_REBALANCING = frozenset(
    {
        ck.KafkaError.REBALANCE_IN_PROGRESS,
        ck.KafkaError.ILLEGAL_GENERATION,
        ck.KafkaError.UNKNOWN_MEMBER_ID,
    }
)


def now_ms() -> int:
    """Milliseconds since the epoch."""
    return int(time.time() * 1000)


class KafkaConsumer:
    """One member of a consumer group on the Kafka bus (not thread-safe beyond ``assignment``)."""

    def __init__(self, settings: KafkaSettings, group: str, member: str) -> None:
        self.group = group
        self.member = member
        self._topic = settings.options.topic
        self._lock = threading.Lock()
        self._assigned: set[int] = set()
        # Records fetched by assignment() (which must poll to learn of rebalances), kept
        # for the next poll() so none is skipped.
        self._buffer: list[Record] = []
        #: The offset each partition's next record should have (set from the group's
        #: committed offset at its first record after an assignment): a record past it
        #: means the retention removed the ones between before the group read them.
        self._next: dict[int, int] = {}
        self._timeout_s = settings.timeout_s
        self._closed = False
        try:
            self._consumer = ck.Consumer(
                settings.config(
                    **{
                        "group.id": group,
                        "client.id": f"headwater-{member}",
                        "enable.auto.commit": False,
                        "auto.offset.reset": "earliest",
                        "session.timeout.ms": int(settings.session_timeout_s * 1000),
                        "heartbeat.interval.ms": int(settings.heartbeat_s * 1000),
                    }
                )
            )
            self._consumer.subscribe(
                [self._topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
        except ck.KafkaException as exc:
            raise_translated(exc, f"cannot join group {group!r}")

    def _on_assign(self, _consumer: Any, partitions: list[Any]) -> None:
        self._assigned |= {tp.partition for tp in partitions}
        for tp in partitions:
            self._next.pop(tp.partition, None)
        log.info("%s/%s assigned %s", self.group, self.member, sorted(self._assigned))

    def _on_revoke(self, _consumer: Any, partitions: list[Any]) -> None:
        revoked = {tp.partition for tp in partitions}
        self._assigned -= revoked
        # Records of revoked partitions that were fetched but not handed out are dropped:
        # the next owner reads them from the committed position.
        self._buffer = [r for r in self._buffer if r.partition not in revoked]

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        """Up to ``max_records`` records; waits up to ``timeout`` for the first one."""
        with self._lock:
            if self._buffer:
                out, self._buffer = self._buffer[:max_records], self._buffer[max_records:]
                return out
            return self._fetch(max_records, timeout)

    def _fetch(self, max_records: int, timeout: float) -> list[Record]:
        if self._closed:
            raise BusError(f"consumer {self.member} of group {self.group!r} is closed")
        try:
            # consume() waits for a full batch until its timeout: take what is there now,
            # and wait only for the first record when nothing is.
            messages = self._consumer.consume(max_records, 0)
            if not messages and timeout > 0:
                first = self._consumer.poll(timeout)
                if first is not None:
                    more = self._consumer.consume(max_records - 1, 0) if max_records > 1 else []
                    messages = [first, *more]
        except ck.KafkaException as exc:
            raise_translated(exc, f"poll of group {self.group!r} failed")
        return self._records(messages)

    def _records(self, messages: list[Any]) -> list[Record]:
        out: list[Record] = []
        assigned = self._assigned
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._on_error(err)
                continue
            part = msg.partition()
            if part not in assigned:
                continue  # fetched before a revoke in the same call; the new owner reads it
            offset = msg.offset()
            expected = self._next.get(part)
            if expected is None:
                expected = self._committed(part)
            if 0 <= expected < offset:
                self._expired(part, expected, offset)
            self._next[part] = offset + 1
            kind = KIND_SIGNAL
            for name, value in msg.headers() or ():
                if name == KIND_HEADER and value is not None:
                    kind = value.decode()
            key = msg.key()
            ts = msg.timestamp()[1]
            out.append(
                Record(
                    part,
                    offset,
                    key.decode(errors="replace") if key else "",
                    kind,
                    msg.value() or b"",
                    ts if ts > 0 else now_ms(),
                )
            )
        return out

    def _committed(self, partition: int) -> int:
        """The group's committed offset of ``partition``; -1 when it has none (or it
        cannot be read: the gap check waits for the next record)."""
        try:
            [tp] = self._consumer.committed(
                [ck.TopicPartition(self._topic, partition)], timeout=self._timeout_s
            )
        except ck.KafkaException as exc:
            log.warning("%s/%s: committed offset unread: %s", self.group, self.member, exc)
            return -1
        return int(tp.offset)

    def _expired(self, partition: int, expected: int, offset: int) -> None:
        # The topic is written by idempotent producers without transactions and never
        # compacted: its offsets are contiguous, and a jump is records aged out.
        BUS_EXPIRED_UNREAD.labels(self.group, str(partition)).inc(offset - expected)
        log.warning(
            "group %r, partition %d: records %d to %d were dropped by the retention "
            "before the group read them; reading on from %d",
            self.group,
            partition,
            expected,
            offset - 1,
            offset,
        )

    def _on_error(self, err: Any) -> None:
        if err.code() == ck.KafkaError._PARTITION_EOF:
            return
        if err.fatal() or err.code() in (
            ck.KafkaError.TOPIC_AUTHORIZATION_FAILED,
            ck.KafkaError.GROUP_AUTHORIZATION_FAILED,
        ):
            raise BusError(f"Kafka consumer of group {self.group!r}: {err.str()}")
        # Anything else is transient: librdkafka retries it by itself.
        log.warning("Kafka consumer %s/%s: %s", self.group, self.member, err.str())

    def commit(self, positions: Mapping[int, int]) -> None:
        """Store the next offsets synchronously (a commit during a rebalance is skipped)."""
        if not positions:
            return
        with self._lock:
            if self._closed:
                raise BusError(f"consumer {self.member} of group {self.group!r} is closed")
            # A partition revoked since the records were read has a new owner, reading
            # from the stored position: committing it here could move the group back.
            offsets = [
                ck.TopicPartition(self._topic, p, o)
                for p, o in positions.items()
                if p in self._assigned
            ]
            if len(offsets) < len(positions):
                log.info(
                    "%s/%s: commit skipped for revoked partitions %s",
                    self.group,
                    self.member,
                    sorted(positions.keys() - self._assigned),
                )
            if not offsets:
                return
            try:
                result = self._consumer.commit(offsets=offsets, asynchronous=False)
            except ck.KafkaException as exc:
                if error_code(exc) in _REBALANCING:
                    self._skipped(exc)
                    return
                raise_translated(exc, f"commit of group {self.group!r} failed")
        failed = [(tp.partition, tp.error) for tp in result or () if tp.error is not None]
        if any(err.code() not in _REBALANCING for _, err in failed):
            errors = [(part, err.str()) for part, err in failed]
            raise BusError(f"Kafka: commit of group {self.group!r} failed for {errors}")
        if failed:
            self._skipped(failed[0][1])

    def _skipped(self, reason: object) -> None:
        log.warning(
            "%s/%s: commit skipped, the group is rebalancing (%s); the records will be "
            "delivered again from the last stored position",
            self.group,
            self.member,
            reason,
        )

    def assignment(self) -> set[int]:
        """The partitions this member reads; serves pending rebalances without losing records."""
        # Rebalance callbacks only run inside a poll: take one here, unless another thread
        # is polling (it serves them) or enough is already buffered.
        if self._lock.acquire(blocking=False):
            try:
                if not self._closed and len(self._buffer) < _MAX_BUFFERED:
                    self._buffer.extend(self._fetch(500, 0))
            finally:
                self._lock.release()
        return set(self._assigned)

    def close(self) -> None:
        """Leave the group now, so its partitions move to the other members at once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._buffer = []
            try:
                self._consumer.close()
            except ck.KafkaException as exc:
                raise_translated(exc, f"leaving group {self.group!r} failed")
