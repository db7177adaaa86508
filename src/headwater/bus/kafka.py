"""The Kafka bus: one topic, keyed by user id, read by consumer groups (confluent-kafka).

``kafka://host:9092[,host2:9092]?topic=headwater.signals&partitions=8&retention=7d``
with optional ``replication=3``, ``session_timeout=10s``, ``heartbeat=3s``,
``timeout=15s`` (bound on publish acknowledgements and admin requests) and raw
librdkafka settings prefixed ``kafka.`` (``kafka.security.protocol=SASL_SSL``).

Publishing is idempotent with ``acks=all`` and the Java client's partitioner
(murmur2), so a user's records land in one partition whichever client wrote them;
the record kind travels in the ``hw-kind`` header. Consumers commit explicit
offsets only; nothing is auto-committed.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from headwater.bus._kafka_admin import KafkaSettings, ensure_topic, is_unavailable, raise_translated
from headwater.bus._kafka_consumer import KIND_HEADER, KafkaConsumer, now_ms
from headwater.bus._murmur2 import kafka_partition
from headwater.bus.base import Bus, ErasureCapability, Message, PartitionLag, Record
from headwater.errors import (
    BackendUnavailableError,
    BusError,
    ConfigurationError,
    MissingDependencyError,
)

try:
    import confluent_kafka as ck
except ImportError as exc:  # pragma: no cover - the kafka extra is installed in development
    raise MissingDependencyError("kafka", "confluent_kafka", "kafka") from exc

__all__ = ["KafkaBus", "KafkaConsumer", "MockCluster"]

log = logging.getLogger("headwater.bus.kafka")


class KafkaBus(Bus):
    """The bus on a Kafka cluster, selected by ``kafka://host:9092``."""

    def __init__(
        self, url: str, *, partitions: int | None = None, retention_s: float | None = None
    ) -> None:
        self.url = url
        self.settings = KafkaSettings.from_url(url, partitions=partitions, retention_s=retention_s)
        self.options = self.settings.options
        self.topic = self.options.topic
        self._producer = self._new_producer()
        info = ensure_topic(self.settings, self._producer)
        if info.partitions != self.options.partitions:
            if self.options.partitions_given:
                raise ConfigurationError(
                    f"Kafka topic {self.topic!r} has {info.partitions} partitions; "
                    f"it cannot be used as {self.options.partitions} (drop ?partitions= "
                    "to use the topic's count)"
                )
            log.warning(
                "Kafka topic %r has %d partitions, not the %d requested: using %d",
                self.topic,
                info.partitions,
                self.options.partitions,
                info.partitions,
            )
        # The topic's count wins: keys must keep mapping to the same partition.
        self.partitions = info.partitions
        self.retention_s = info.retention_s
        self._headers: dict[str, list[tuple[str, bytes]]] = {}  # built once per kind

    def _new_producer(self) -> Any:
        s = self.settings
        try:
            return ck.Producer(
                s.config(
                    **{
                        "client.id": f"headwater-{os.getpid()}",
                        "enable.idempotence": True,
                        "acks": "all",
                        # The Java client's partitioner: the same key maps to the same partition
                        # whether headwater or a JVM service produced it.
                        "partitioner": "murmur2_random",
                        "linger.ms": 5,
                        # Bounded, so an unreachable cluster fails a publish instead of hanging it.
                        "message.timeout.ms": int(s.timeout_s * 1000),
                    }
                )
            )
        except ck.KafkaException as exc:
            raise_translated(exc, "cannot create a producer")

    def publish(self, messages: Sequence[Message]) -> None:
        """Append messages; returns once every one is acknowledged by all in-sync replicas."""
        if not messages:
            return
        failures: list[Any] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(err)

        producer = self._producer
        for m in messages:
            headers = self._headers.get(m.kind)
            if headers is None:
                headers = self._headers[m.kind] = [(KIND_HEADER, m.kind.encode())]
            while True:
                try:
                    producer.produce(
                        self.topic, m.value, m.key.encode(), headers=headers, on_delivery=delivered
                    )
                    break
                except BufferError:
                    # The local queue is full: let deliveries drain it, then retry.
                    producer.poll(0.05)
                except ck.KafkaException as exc:
                    err = exc.args[0] if exc.args else None
                    if isinstance(err, ck.KafkaError) and err.fatal():
                        self._replace_producer()
                    raise_translated(exc, "publish failed")
        # message.timeout.ms bounds every delivery; the margin lets the last reports arrive.
        pending = producer.flush(self.settings.timeout_s + 5.0)
        if pending:
            raise BackendUnavailableError(
                f"Kafka: {pending} message(s) not acknowledged within {self.settings.timeout_s}s"
            )
        if failures:
            self._fail_publish(failures, len(messages))

    def _fail_publish(self, failures: list[Any], total: int) -> None:
        first = failures[0]
        if any(err.fatal() for err in failures):
            self._replace_producer()
        what = f"{len(failures)} of {total} message(s) not published: {first.str()}"
        if is_unavailable(first) and not first.fatal():
            raise BackendUnavailableError(f"Kafka: {what}")
        raise BusError(f"Kafka: {what}")

    def _replace_producer(self) -> None:
        # An idempotent producer that hit a fatal error accepts nothing more.
        old, self._producer = self._producer, self._new_producer()
        old.purge()
        _close_client(old)

    def partition_of(self, key: str) -> int:
        """The partition of a key: murmur2, as librdkafka's murmur2_random places it."""
        return kafka_partition(key, self.partitions)

    def consumer(self, group: str, *, member: str | None = None) -> KafkaConsumer:
        """Join ``group`` as a new member (``member`` becomes part of the client id)."""
        return KafkaConsumer(
            self.settings, group, member or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        )

    def lag(self, group: str) -> list[PartitionLag]:
        """Per partition: the group's committed offset, the end, and the oldest record's age."""
        client = self._client(group)
        try:
            return self._lag(client, group)
        except ck.KafkaException as exc:
            raise_translated(exc, f"cannot read the lag of group {group!r}")
        finally:
            client.close()

    def _client(self, group: str) -> Any:
        # Assigned, never subscribed: it reads offsets without joining the group.
        try:
            return ck.Consumer(
                self.settings.config(
                    **{
                        "group.id": group,
                        "enable.auto.commit": False,
                        "auto.offset.reset": "earliest",
                        "client.id": "headwater-lag",
                        # It reads one record per partition: do not prefetch megabytes.
                        "max.partition.fetch.bytes": 65536,
                    }
                )
            )
        except ck.KafkaException as exc:
            raise_translated(exc, "cannot create a consumer")

    def _lag(self, client: Any, group: str) -> list[PartitionLag]:
        timeout = self.settings.timeout_s
        tps = [ck.TopicPartition(self.topic, p) for p in range(self.partitions)]
        committed = {tp.partition: tp.offset for tp in client.committed(tps, timeout=timeout)}
        ends: dict[int, tuple[int, int]] = {}
        for tp in tps:
            marks = client.get_watermark_offsets(tp, timeout=timeout)
            if marks is None:
                raise BackendUnavailableError(f"Kafka: no watermarks for {self.topic} [{tp}]")
            ends[tp.partition] = marks
        # No commit yet: the group will start at the oldest record still kept.
        start = {p: committed[p] if committed[p] >= 0 else low for p, (low, _) in ends.items()}
        behind = {p: start[p] for p, (_, high) in ends.items() if start[p] < high}
        oldest = self._oldest_timestamps(client, behind)
        now = now_ms()
        return [
            PartitionLag(
                group,
                p,
                start[p],
                high,
                max(0, high - start[p]),
                max(0.0, (now - oldest[p]) / 1000) if p in oldest else 0.0,
            )
            for p, (_, high) in sorted(ends.items())
        ]

    def _oldest_timestamps(self, client: Any, positions: dict[int, int]) -> dict[int, int]:
        """The timestamp of the record at each position (the oldest one not committed)."""
        if not positions:
            return {}
        client.assign([ck.TopicPartition(self.topic, p, o) for p, o in positions.items()])
        found: dict[int, int] = {}
        deadline = time.monotonic() + self.settings.timeout_s
        while len(found) < len(positions) and time.monotonic() < deadline:
            for msg in client.consume(len(positions) * 50, 0.2):
                ts = msg.timestamp()[1] if msg.error() is None else -1
                if ts > 0 and msg.partition() not in found:
                    found[msg.partition()] = ts
        if len(found) < len(positions):
            log.warning(
                "Kafka lag: no record read for partitions %s; their age reads as 0",
                sorted(positions.keys() - found.keys()),
            )
        return found

    def erasure_capability(self) -> ErasureCapability:
        """Kafka cannot delete one key's records: they age out with the topic's retention."""
        if self.retention_s is None:
            age = "never: the topic keeps records forever (retention.ms=-1)"
        else:
            age = f"{self.retention_s:.0f}s after they were written (the topic's retention)"
        return ErasureCapability(
            can_purge=False,
            method="retention",
            retention_seconds=self.retention_s,
            detail=f"Kafka cannot delete one key's records from a topic with "
            f"cleanup.policy=delete; they age out {age}. A compacted topic with a "
            f"tombstone per key would remove them at compaction instead.",
        )

    def purge_key(self, key: str, where: Callable[[Record], bool] | None = None) -> int:  # noqa: ARG002
        """Always raises: see ``erasure_capability``."""
        raise BusError(
            f"Kafka cannot purge key {key!r} from topic {self.topic!r}: "
            f"{self.erasure_capability().detail}"
        )

    def close(self) -> None:
        """Wait (bounded) for outstanding deliveries and release the producer."""
        if self._producer.flush(self.settings.timeout_s):
            self._producer.purge()  # unreachable cluster: close() must not wait on them again
        _close_client(self._producer)


class MockCluster:
    """librdkafka's in-process mock cluster, reachable over TCP by any process (for tests).

    The hosting client lives until the context exits. The mock auto-creates topics
    with a fixed partition count (4 in librdkafka 2.x, not configurable); ``partitions``
    states the count a test expects and is checked on entry.
    """

    def __init__(self, brokers: int = 3, partitions: int = 4) -> None:
        self.brokers = brokers
        self.partitions = partitions
        self.bootstrap_servers = ""
        self._host: Any = None

    def __enter__(self) -> MockCluster:
        self._host = ck.Producer(
            {
                "test.mock.num.brokers": self.brokers,
                "logger": log,
                "client.id": "headwater-mock-cluster",
            }
        )
        try:
            meta = self._host.list_topics(timeout=10)
            self.bootstrap_servers = ",".join(
                f"{b.host}:{b.port}" for _, b in sorted(meta.brokers.items())
            )
            probe = f"headwater-mock-probe-{uuid.uuid4().hex[:8]}"
            got = len(self._host.list_topics(probe, timeout=10).topics[probe].partitions)
        except ck.KafkaException as exc:
            self.__exit__(None, None, None)
            raise_translated(exc, "the mock cluster did not start")
        if got != self.partitions:
            self.__exit__(None, None, None)
            raise ConfigurationError(
                f"librdkafka's mock cluster creates topics with {got} partitions, "
                f"not {self.partitions}; it cannot be configured"
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._host is not None:
            # Destroying the hosting client stops the brokers.
            _close_client(self._host)
            self._host = None


def _close_client(producer: Any) -> None:
    # Producer.close() is recent (confluent-kafka 2.x); older ones are freed by the collector.
    close = getattr(producer, "close", None)
    if close is not None:
        close()
