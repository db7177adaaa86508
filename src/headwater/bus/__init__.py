"""The bus: one partitioned log of signals and erasure events that every consumer reads."""

from __future__ import annotations

from collections.abc import Callable

from headwater._url import scheme_of
from headwater.bus.base import (
    KIND_ERASURE,
    KIND_SIGNAL,
    Bus,
    BusConsumer,
    ErasureCapability,
    Message,
    PartitionLag,
    Record,
    committed_positions,
    partition_for,
)
from headwater.errors import ConfigurationError

__all__ = [
    "KIND_ERASURE",
    "KIND_SIGNAL",
    "SUPPORTED_BUSES",
    "Bus",
    "BusConsumer",
    "ErasureCapability",
    "Message",
    "PartitionLag",
    "Record",
    "committed_positions",
    "open_bus",
    "partition_for",
]

BusFactory = Callable[..., Bus]


def _sqlite(url: str, **kw: object) -> Bus:
    from headwater.bus.sqlite import SqliteBus

    return SqliteBus(url, **kw)  # type: ignore[arg-type]


def _kafka(url: str, **kw: object) -> Bus:
    from headwater.bus.kafka import KafkaBus

    return KafkaBus(url, **kw)  # type: ignore[arg-type]


def _nats(url: str, **kw: object) -> Bus:
    from headwater.bus.nats import NatsBus

    return NatsBus(url, **kw)  # type: ignore[arg-type]


#: URL scheme -> backend factory.
SUPPORTED_BUSES: dict[str, BusFactory] = {"sqlite": _sqlite, "kafka": _kafka, "nats": _nats}


def open_bus(url: str, *, partitions: int | None = None, retention_s: float | None = None) -> Bus:
    """Open the bus a URL names: ``sqlite:///bus.db``, ``kafka://host:9092``, ``nats://host:4222``.

    ``partitions`` and ``retention_s`` override ``?partitions=`` and ``?retention=`` in the URL.
    """
    scheme = scheme_of(url)
    factory = SUPPORTED_BUSES.get(scheme)
    if factory is None:
        raise ConfigurationError(
            f"no bus backend for {scheme}://; supported: {sorted(SUPPORTED_BUSES)}"
        )
    return factory(url, partitions=partitions, retention_s=retention_s)
