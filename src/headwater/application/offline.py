"""The archive and the nightly batch of a deployment, built for ``Application``: the
Delta archive table, the archive consumer, the batch runner and its scheduler.

Each needs the ``archive`` extra, imported when first built; ``Application``'s
``open_archive_table``, ``open_archive_consumer``, ``open_batch_runner`` and
``batch_scheduler`` call these.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from headwater._extras import needs_extra

if TYPE_CHECKING:
    from headwater.application.root import Application
    from headwater.archive.consumer import ArchiveConsumer
    from headwater.archive.table import ArchiveTable
    from headwater.batch.runner import BatchRunner
    from headwater.batch.scheduler import BatchScheduler
    from headwater.batch.settings import BatchSettings
    from headwater.online import OnlineStore

__all__ = ["archive_consumer", "archive_table", "batch_runner", "batch_scheduler"]

log = logging.getLogger("headwater.application")


def archive_table(app: Application) -> ArchiveTable:
    """The Delta archive table of the settings, closed with ``app``."""
    with needs_extra():
        from headwater.archive.table import ArchiveTable

    cfg = app.archive_settings
    table = ArchiveTable(cfg.url, storage_options=cfg.storage_options)
    app.own("archive table", table.close)
    return table


def archive_consumer(app: Application, group: str) -> ArchiveConsumer:
    """The archive consumer of ``group`` over a table of its own and the archive's
    erasure ledger."""
    with needs_extra():
        from headwater.archive.consumer import ArchiveConsumer
        from headwater.archive.ledger import ErasureLedger as ArchiveLedger

    cfg = app.archive_settings
    return ArchiveConsumer(
        app.open_archive_table(),
        ArchiveLedger(cfg.url, storage_options=cfg.storage_options),
        app.hasher,
        group=group,
        retention_hours=cfg.retention_hours,
        vacuum_interval_s=cfg.vacuum_interval_s,
    )


def batch_runner(
    app: Application, store: OnlineStore | None, batch: BatchSettings | None
) -> BatchRunner:
    """A batch runner over the archive, writing into ``store`` (a connection of its own
    when None), closed with ``app``."""
    with needs_extra():
        from headwater.batch.runner import BatchRunner

    # State and lock in the control plane, outputs beside the archive: any host
    # sharing those two runs the batch, its status and its erasure.
    runner = BatchRunner(
        app.open_archive_table(),
        store or app.open_online_store(),
        batch or app.batch_settings,
        app.open_control(),
    )
    app.own("batch runner", runner.close)
    return runner


def batch_scheduler(app: Application) -> BatchScheduler:
    """The nightly batch on the settings' schedule, over a runner of its own."""
    from headwater.batch.scheduler import BatchScheduler

    runner = app.open_batch_runner()

    def job() -> None:
        # Another host's run or an erasure recompute may hold the lock: wait for it,
        # up to an hour, unless the process is stopping.
        runner.run(
            progress=lambda line: log.info("batch: %s", line),
            wait_s=3600.0,
            stop=scheduler.stopping,
        )

    scheduler = BatchScheduler(job, app.batch_settings.schedule)
    return scheduler
