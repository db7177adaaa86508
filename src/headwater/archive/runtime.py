"""The archive consumer as a runtime: ``headwater consume archive`` and ``headwater up``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from headwater.archive._buffered import BufferedBus
from headwater.archive.consumer import ArchiveConsumer
from headwater.archive.ledger import ErasureLedger as ArchiveErasureLedger
from headwater.archive.settings import ArchiveSettings
from headwater.archive.table import ArchiveTable
from headwater.bus import open_bus
from headwater.bus.dead_letters import DeadLetterStore
from headwater.bus.runtime import ConsumerRuntime
from headwater.config import Settings
from headwater.control import ControlDatabase, open_control_database
from headwater.erasure.ledger import ErasureLedger
from headwater.erasure.subject import SubjectHasher, load_erasure_key
from headwater.erasure.tombstones import TombstoneFilter

if TYPE_CHECKING:
    from headwater.gateway.services import GatewayServices

__all__ = ["archive_runtime", "erasure_wiring", "open_archive"]


def open_archive(archive: ArchiveSettings) -> ArchiveConsumer:
    """The archive consumer over its table and erasure ledger."""
    table = ArchiveTable(archive.url, storage_options=archive.storage_options)
    ledger = ArchiveErasureLedger(archive.url, storage_options=archive.storage_options)
    return ArchiveConsumer(
        table,
        ledger,
        group=archive.group,
        retention_hours=archive.retention_hours,
        vacuum_interval_s=archive.vacuum_interval_s,
    )


def erasure_wiring(
    settings: Settings, control: ControlDatabase, services: GatewayServices | None
) -> dict[str, Any]:
    """The runtime options every participant gets (as ``stack.consumer_runtime`` gives them):
    the erasure ledger it registers with, and the tombstones that drop erased users' events."""
    ledger = services.ledger if services else ErasureLedger(control)
    hasher = services.hasher if services else SubjectHasher(load_erasure_key(settings.home))
    return {"ledger": ledger, "tombstones": TombstoneFilter(ledger, hasher)}


def archive_runtime(
    settings: Settings,
    services: GatewayServices | None = None,
    *,
    archive: ArchiveSettings | None = None,
) -> ConsumerRuntime:
    """The archive consumer as a runtime over its own bus connection.

    Polls gather up to ``flush_rows`` records or ``flush_seconds`` (one Delta commit per
    batch); the bus position is committed only after that commit.
    """
    archive = archive or ArchiveSettings.from_env(settings)
    control = services.control if services else open_control_database(settings.control_url)
    bus = BufferedBus(
        open_bus(settings.bus_url), max_records=archive.flush_rows, max_wait_s=archive.flush_seconds
    )
    consumer = open_archive(archive)
    closers = [bus.close, consumer.table.close] + ([] if services else [control.close])
    runtime = ConsumerRuntime(
        bus.as_bus(),
        archive.group,
        consumer,
        dead_letters=DeadLetterStore(control),
        batch_size=archive.flush_rows,
        poll_timeout=0.5,
        closers=closers,
        **erasure_wiring(settings, control, services),
    )
    bus.stop_event = runtime.stop_event  # a stop does not wait for a batch to fill
    return runtime
