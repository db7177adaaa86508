"""The one list of consumers: each declared once, everything else derived from it.

A consumer here is a member of a group on the bus that keeps a store and answers for
it in erasure. ``headwater up`` runs each as a thread, ``up --processes`` as a process
(``headwater consume <name>``), ``headwater bus lag`` reports their groups, and the
erasure orchestrator waits for their stores. Adding a consumer is one declaration
below (and its tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from headwater._extras import needs_extra
from headwater.bus.base import Record
from headwater.errors import ConfigurationError
from headwater.features.consumer import BATCH_SIZE, LINGER_S, FeatureConsumer
from headwater.features.handover import bus_tail
from headwater.runtime.loop import ERASURE_LINGER_S, ConsumerRuntime
from headwater.runtime.platform import BUS_LOG, DEAD_LETTERS, IDEMPOTENCY_WINDOW, PlatformErasure

if TYPE_CHECKING:
    from headwater.application.root import Application

__all__ = [
    "CONSUMERS",
    "ConsumerSpec",
    "consumer_named",
    "expected_participants",
]

#: A consumer's runtime from the application, its group, and ``--batch-size`` if given.
Factory = Callable[["Application", str, "int | None"], ConsumerRuntime]


@dataclass(frozen=True)
class ConsumerSpec:
    """One consumer: its name (``headwater consume <name>``), its group on the bus, the
    erasure participants (stores) it answers for, and how its runtime is built."""

    name: str
    group: str
    participants: tuple[str, ...]
    summary: str
    factory: Factory
    #: The extra of ``pip install 'headwater[...]'`` it needs beyond the server's.
    extra: str | None = None

    @property
    def command(self) -> tuple[str, ...]:
        """Its process: the arguments after ``headwater``."""
        return ("consume", self.name)

    def build(self, app: Application, batch_size: int | None = None) -> ConsumerRuntime:
        """Its runtime, over connections of its own that ``app`` owns."""
        return self.factory(app, self.group, batch_size)


def _features(app: Application, group: str, batch_size: int | None) -> ConsumerRuntime:
    app.feature_versions  # noqa: B018 - registers version 1 on a new control plane
    live = app.live_definitions()
    tail_bus = app.open_bus()
    tombstones = app.new_tombstones()

    def dropped(record: Record) -> bool:
        tombstones.refresh()
        return tombstones.drops(record)

    consumer = FeatureConsumer(
        app.open_online_store(),
        live.engine(stream=True),
        group=group,
        definitions=live,
        tail=lambda starts, ends: bus_tail(tail_bus, starts, ends),
        partition_of=tail_bus.partition_of,
        dropped=dropped,
    )
    return app.runtime(consumer, group, batch_size=batch_size or BATCH_SIZE, linger_s=LINGER_S)


def _platform(app: Application, group: str, batch_size: int | None) -> ConsumerRuntime:
    handler = PlatformErasure(
        app.open_bus(),
        app.dead_letters,
        app.open_idempotency_window(),
        backup_retention_s=app.settings.backup_retention_s,
    )
    # Signals are skipped, so large polls cost little and leave the core to others. A
    # participant behind the log (its erasures each scan the user's partition) reads up
    # to 100,000 records a poll: the erasures of seconds of log come as one run, erased
    # with one scan per store, instead of a second's worth each time while it falls
    # further behind.
    return app.runtime(handler, group, batch_size=batch_size or 100_000, linger_s=ERASURE_LINGER_S)


def _archive(app: Application, group: str, batch_size: int | None) -> ConsumerRuntime:
    with needs_extra():
        from headwater.archive._buffered import BufferedBus

    cfg = app.archive_settings
    rows = batch_size or cfg.flush_rows
    consumer = app.open_archive_consumer(group)
    # Polls gather up to ``rows`` records or ``flush_seconds``: one Delta commit a batch.
    bus = BufferedBus(app.open_bus(), max_records=rows, max_wait_s=cfg.flush_seconds)
    runtime = app.runtime(consumer, group, bus=bus, batch_size=rows, poll_timeout=0.5)
    bus.stop_event = runtime.stop_event  # a stop does not wait for a batch to fill
    return runtime


def _batch_erasure(app: Application, group: str, batch_size: int | None) -> ConsumerRuntime:
    with needs_extra():
        from headwater.archive.ledger import ErasureLedger
        from headwater.batch.erasure import BatchErasureParticipant

    cfg = app.archive_settings
    participant = BatchErasureParticipant(
        app.open_batch_runner(),
        ErasureLedger(cfg.url, storage_options=cfg.storage_options),
        group=group,
    )
    # Erasures wait for the archive's confirmation: back off up to 10 s meanwhile. The
    # signals are read past, most of them undecoded: a poll covers up to 50,000 offsets,
    # so a wait of seconds at 20,000 signals/s is caught up in one.
    return app.runtime(
        participant,
        group,
        batch_size=batch_size or 50_000,
        poll_timeout=0.5,
        linger_s=ERASURE_LINGER_S,
        backoff=(0.2, 10.0),
    )


#: Every consumer, in the order ``up`` starts them.
CONSUMERS: tuple[ConsumerSpec, ...] = (
    ConsumerSpec(
        name="features",
        group="features",
        participants=(FeatureConsumer.name,),
        summary="The streaming feature consumer: keeps user feature rows in the online store.",
        factory=_features,
    ),
    ConsumerSpec(
        name="platform-erasure",
        group="platform-erasure",
        participants=(BUS_LOG, DEAD_LETTERS, IDEMPOTENCY_WINDOW),
        summary="Erasure of the bus log, the dead letters and the idempotency window.",
        factory=_platform,
    ),
    ConsumerSpec(
        name="archive",
        group="archive",
        participants=("archive",),
        summary="Every accepted signal into the Delta archive; erasure from it.",
        factory=_archive,
        extra="archive",
    ),
    ConsumerSpec(
        name="batch-erasure",
        group="batch-erasure",
        participants=("batch-derived",),
        summary="Recomputes what the nightly batch derived from an erased user.",
        factory=_batch_erasure,
        extra="archive",
    ),
)


def consumer_named(name: str) -> ConsumerSpec:
    """The registry's consumer ``name``."""
    for spec in CONSUMERS:
        if spec.name == name:
            return spec
    known = ", ".join(spec.name for spec in CONSUMERS)
    raise ConfigurationError(f"no consumer named {name!r}; the consumers are: {known}")


def expected_participants() -> tuple[str, ...]:
    """Every store an erasure request must reach: the participants of every consumer."""
    return tuple(name for spec in CONSUMERS for name in spec.participants)
