"""Kafka plumbing shared by the bus and its consumers: settings, error translation, the topic.

The topic is created with AdminClient (partitions, replication, retention) when the
cluster has a controller to serve CreateTopics. librdkafka's in-process mock cluster
names none and answers neither CreateTopics nor DescribeConfigs; there the topic is
auto-created by the first metadata request, with the mock's fixed partition count.
Either way the partition count is read back from metadata: the topic, not the
request, decides where keys go.
"""

from __future__ import annotations

import logging
import time
from typing import Any, NoReturn
from urllib.parse import urlsplit

import msgspec

from headwater._duration import parse_duration
from headwater.bus._options import BusOptions
from headwater.errors import (
    BackendUnavailableError,
    BusError,
    ConfigurationError,
    MissingDependencyError,
)

try:
    import confluent_kafka as ck

    # The documented import path: the package's stubs only lack an __all__ that lists them.
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AdminClient,
        ConfigResource,
        NewTopic,
        ResourceType,
    )
except ImportError as exc:  # pragma: no cover - the kafka extra is installed in development
    raise MissingDependencyError("kafka", "confluent_kafka", "kafka") from exc

__all__ = [
    "KafkaSettings",
    "TopicInfo",
    "ensure_topic",
    "error_code",
    "is_unavailable",
    "raise_translated",
]

log = logging.getLogger("headwater.bus.kafka")

#: Longest wait for the first answer of a cluster (seconds): the unreachable case.
CONNECT_TIMEOUT_S = 5.0
#: URL options this backend reads besides partitions, retention and topic.
_OPTIONS = ("session_timeout", "heartbeat", "replication", "timeout")
#: Settings the bus's guarantees rest on: a ``kafka.`` extra may not override them.
_PROTECTED = frozenset({"group.id", "enable.auto.commit", "bootstrap.servers"})

# Errors that mean "the cluster cannot be reached or is not ready": retry later.
_UNAVAILABLE = frozenset(
    {
        ck.KafkaError._ALL_BROKERS_DOWN,
        ck.KafkaError._TRANSPORT,
        ck.KafkaError._RESOLVE,
        ck.KafkaError._MSG_TIMED_OUT,
        ck.KafkaError._TIMED_OUT,
        ck.KafkaError._WAIT_COORD,
        ck.KafkaError.NETWORK_EXCEPTION,
        ck.KafkaError.REQUEST_TIMED_OUT,
        ck.KafkaError.LEADER_NOT_AVAILABLE,
        ck.KafkaError.NOT_LEADER_FOR_PARTITION,
        ck.KafkaError.NOT_ENOUGH_REPLICAS,
        ck.KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        ck.KafkaError.COORDINATOR_NOT_AVAILABLE,
        ck.KafkaError.NOT_COORDINATOR,
    }
)


class KafkaSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a ``kafka://`` URL says, parsed once."""

    bootstrap: str
    options: BusOptions
    replication: int
    session_timeout_s: float
    heartbeat_s: float
    timeout_s: float  # bound on publish acknowledgements and admin/metadata requests
    client: dict[str, str]  # raw librdkafka settings from ``kafka.*`` options

    @classmethod
    def from_url(
        cls, url: str, *, partitions: int | None = None, retention_s: float | None = None
    ) -> KafkaSettings:
        """``kafka://h1:9092,h2:9092?topic=t&partitions=8&retention=7d&session_timeout=6s``."""
        bootstrap = urlsplit(url).netloc
        if not bootstrap:
            raise ConfigurationError(f"{url}: name at least one broker, kafka://host:9092")
        if "@" in bootstrap:
            raise ConfigurationError(
                f"{url.split('@', 1)[-1]}: put credentials in kafka.sasl.username and "
                "kafka.sasl.password (with kafka.security.protocol), not in the host list"
            )
        options = BusOptions.from_url(url, partitions=partitions, retention_s=retention_s)
        extra = dict(options.extra)
        client = {k.removeprefix("kafka."): v for k, v in extra.items() if k.startswith("kafka.")}
        options.refuse_unknown(url, _OPTIONS, prefix="kafka.")
        if protected := sorted(_PROTECTED & client.keys()):
            raise ConfigurationError(f"{url}: {protected} are set by the bus and cannot be changed")
        session = parse_duration(extra.get("session_timeout", 45.0), f"{url} session_timeout")
        try:
            replication = int(extra.get("replication", 1))
        except ValueError:
            raise ConfigurationError(f"{url}: replication must be a whole number") from None
        return cls(
            bootstrap=bootstrap,
            options=options,
            replication=replication,
            session_timeout_s=session,
            # At most a third of the session, as Kafka advises: two beats may be lost.
            heartbeat_s=parse_duration(
                extra.get("heartbeat", min(3.0, session / 3)), f"{url} heartbeat"
            ),
            timeout_s=parse_duration(extra.get("timeout", 15.0), f"{url} timeout"),
            client=client,
        )

    def config(self, **settings: Any) -> dict[str, Any]:
        """A client configuration: the broker list, ``settings``, then the ``kafka.*`` extras."""
        return {
            "bootstrap.servers": self.bootstrap,
            # librdkafka's own log lines go to Python logging instead of stderr.
            "logger": log,
            "error_cb": _log_error,
            **settings,
            **self.client,
        }


class TopicInfo(msgspec.Struct, frozen=True):
    """The topic as the cluster reports it."""

    partitions: int
    retention_s: float | None  # None: the cluster keeps records forever (retention.ms=-1)
    created: bool  # this call created it with CreateTopics


def _log_error(err: Any) -> None:
    # librdkafka retries by itself and logs each failed connection already (see "logger");
    # only a fatal error or losing every broker is worth a warning of its own.
    if err.fatal() or err.code() == ck.KafkaError._ALL_BROKERS_DOWN:
        log.warning("Kafka client: %s", err.str())
    else:
        log.debug("Kafka client: %s", err.str())


def error_code(exc: BaseException) -> int | None:
    """The KafkaError code a confluent_kafka exception carries, if any."""
    err = exc.args[0] if exc.args else None
    return int(err.code()) if isinstance(err, ck.KafkaError) else None


def is_unavailable(err: Any) -> bool:
    """Whether a ``KafkaError`` means the cluster could not be reached."""
    return err is not None and (err.code() in _UNAVAILABLE or bool(err.retriable()))


def raise_translated(exc: BaseException, what: str) -> NoReturn:
    """Raise ``exc`` (a confluent_kafka error) as BackendUnavailableError or BusError."""
    err = exc.args[0] if exc.args and isinstance(exc.args[0], ck.KafkaError) else None
    if err is not None and is_unavailable(err) and not err.fatal():
        raise BackendUnavailableError(f"Kafka: {what}: {err.str()}") from exc
    detail = err.str() if err is not None else str(exc)
    raise BusError(f"Kafka: {what}: {detail}") from exc


def _metadata(
    client: Any, topic: str | None, timeout: float, *, what: str = "cannot read cluster metadata"
) -> Any:
    try:
        return client.list_topics(topic, timeout=timeout)
    except ck.KafkaException as exc:
        raise_translated(exc, what)


def ensure_topic(settings: KafkaSettings, producer: Any) -> TopicInfo:
    """Create the topic when it does not exist and the cluster can; report what it is.

    ``producer`` reads metadata: a producer's metadata request lets brokers (and the
    mock cluster) auto-create the topic when CreateTopics could not be used.
    """
    opts = settings.options
    # All topics: asking for one topic by name would let the broker auto-create it
    # with its own defaults before CreateTopics could apply ours.
    # The first contact is bounded more tightly: an unreachable cluster is reported in
    # seconds, naming the address, rather than after the full request timeout.
    first = min(settings.timeout_s, CONNECT_TIMEOUT_S)
    cluster = _metadata(
        producer, None, first, what=f"cannot reach {settings.bootstrap} within {first:g}s"
    )
    topic = cluster.topics.get(opts.topic)
    exists = topic is not None and topic.error is None
    # The mock cluster reports a controller id that is none of its brokers.
    has_controller = cluster.controller_id in cluster.brokers
    created = False
    if not exists and has_controller:
        created = _create(settings)
    elif not exists:
        # Expected on the mock cluster (tests); on anything else it deserves attention.
        mock = str(cluster.cluster_id).startswith("mockCluster")
        log.log(
            logging.INFO if mock else logging.WARNING,
            "Kafka cluster %s (%s) names no controller, so topic %r cannot be created "
            "with CreateTopics (librdkafka's mock cluster does not serve it); relying on "
            "auto-creation, with the cluster's default partition count and retention",
            settings.bootstrap,
            cluster.cluster_id,
            opts.topic,
        )
    partitions = _partition_count(settings, producer)
    retention = _retention(settings) if has_controller else opts.retention_s
    return TopicInfo(partitions=partitions, retention_s=retention, created=created)


def _create(settings: KafkaSettings) -> bool:
    opts = settings.options
    admin = AdminClient(settings.config())
    new = NewTopic(
        opts.topic,
        num_partitions=opts.partitions,
        replication_factor=settings.replication,
        config={
            "retention.ms": str(int(opts.retention_s * 1000)),
            "cleanup.policy": "delete",
            # Record timestamps are when the log appended them, as the port says.
            "message.timestamp.type": "LogAppendTime",
        },
    )
    future = admin.create_topics(
        [new], request_timeout=settings.timeout_s, operation_timeout=settings.timeout_s
    )[opts.topic]
    try:
        future.result()
    except ck.KafkaException as exc:
        if error_code(exc) == ck.KafkaError.TOPIC_ALREADY_EXISTS:
            return False  # another process created it first
        raise_translated(exc, f"cannot create topic {opts.topic!r}")
    log.info(
        "created Kafka topic %r: %d partitions, replication %d, retention %.0fs",
        opts.topic,
        opts.partitions,
        settings.replication,
        opts.retention_s,
    )
    return True


def _partition_count(settings: KafkaSettings, producer: Any) -> int:
    topic = settings.options.topic
    deadline = time.monotonic() + settings.timeout_s
    while True:
        # A new topic's metadata reaches every broker a moment after CreateTopics returns.
        meta = _metadata(producer, topic, settings.timeout_s).topics.get(topic)
        if meta is not None and meta.error is None and meta.partitions:
            return len(meta.partitions)
        if time.monotonic() > deadline:
            error = meta.error.str() if meta is not None and meta.error else "not found"
            raise BusError(f"Kafka topic {topic!r} is not available: {error}")
        time.sleep(0.1)


def _retention(settings: KafkaSettings) -> float | None:
    topic = settings.options.topic
    admin = AdminClient(settings.config())
    resource = ConfigResource(ResourceType.TOPIC, topic)
    try:
        entries = admin.describe_configs([resource], request_timeout=settings.timeout_s)[
            resource
        ].result()
    except ck.KafkaException as exc:
        log.warning(
            "cannot read retention.ms of topic %r (%s); assuming the URL's %.0fs",
            topic,
            exc,
            settings.options.retention_s,
        )
        return settings.options.retention_s
    entry = entries.get("retention.ms")
    if entry is None or entry.value is None:
        return settings.options.retention_s
    ms = int(entry.value)
    return None if ms < 0 else ms / 1000  # -1: records are kept forever
