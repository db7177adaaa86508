"""Batch entry points: a runner from Settings, the scheduler of ``up``, the erasure runtime."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from headwater.archive.ledger import ErasureLedger
from headwater.archive.runtime import erasure_wiring
from headwater.archive.settings import ArchiveSettings
from headwater.archive.table import ArchiveTable
from headwater.batch.erasure import BatchErasureParticipant
from headwater.batch.runner import BatchRunner
from headwater.batch.scheduler import BatchScheduler
from headwater.batch.settings import BatchSettings
from headwater.bus import open_bus
from headwater.bus.dead_letters import DeadLetterStore
from headwater.bus.runtime import ERASURE_LINGER_S, ConsumerRuntime
from headwater.config import Settings
from headwater.control import open_control_database
from headwater.online import OnlineStore, open_online_store

if TYPE_CHECKING:
    from headwater.gateway.services import GatewayServices

__all__ = ["batch_erasure_runtime", "batch_scheduler", "close_runner", "open_batch_runner"]

log = logging.getLogger("headwater.batch")


def open_batch_runner(
    settings: Settings,
    store: OnlineStore | None = None,
    *,
    batch: BatchSettings | None = None,
    archive: ArchiveSettings | None = None,
) -> BatchRunner:
    """A batch runner over the deployment's archive and online store.

    When ``store`` is not given the runner opens its own (closed by ``close_all``).
    """
    archive = archive or ArchiveSettings.from_env(settings)
    table = ArchiveTable(archive.url, storage_options=archive.storage_options)
    runner = BatchRunner(
        table,
        store or open_online_store(settings.online_url),
        batch or BatchSettings.from_env(settings),
    )
    runner.owns_store = store is None
    return runner


def close_runner(runner: BatchRunner) -> None:
    """Close a runner from ``open_batch_runner`` (and its store, if it opened it)."""
    runner.close()
    if runner.owns_store:
        runner.store.close()


def batch_scheduler(
    settings: Settings,
    *,
    batch: BatchSettings | None = None,
) -> BatchScheduler:
    """The nightly batch of ``headwater up`` (schedule from ``HEADWATER_BATCH_SCHEDULE``)."""
    batch = batch or BatchSettings.from_env(settings)
    runner = open_batch_runner(settings, batch=batch)

    def job() -> None:
        runner.run(progress=lambda line: log.info("batch: %s", line))

    return BatchScheduler(job, batch.schedule, on_close=lambda: close_runner(runner))


def batch_erasure_runtime(
    settings: Settings,
    services: GatewayServices | None = None,
    *,
    batch: BatchSettings | None = None,
    archive: ArchiveSettings | None = None,
) -> ConsumerRuntime:
    """The ``batch-derived`` erasure participant as a runtime (group ``batch-erasure``)."""
    archive = archive or ArchiveSettings.from_env(settings)
    control = services.control if services else open_control_database(settings.control_url)
    runner = open_batch_runner(settings, batch=batch, archive=archive)
    ledger = ErasureLedger(archive.url, storage_options=archive.storage_options)
    participant = BatchErasureParticipant(runner, ledger)
    bus = open_bus(settings.bus_url)
    closers = [bus.close, lambda: close_runner(runner)]
    if services is None:
        closers.append(control.close)
    # Signals are skipped, so large polls cost little; erasures wait for the archive.
    return ConsumerRuntime(
        bus,
        participant.group,
        participant,
        dead_letters=DeadLetterStore(control),
        batch_size=20_000,
        poll_timeout=0.5,
        linger_s=ERASURE_LINGER_S,
        backoff=(0.2, 10.0),
        closers=closers,
        **erasure_wiring(settings, control, services),
    )
