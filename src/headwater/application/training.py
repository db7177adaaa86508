"""Point-in-time training sets of a deployment: its archive, features, erasures and batch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, overload

from headwater._extras import needs_extra
from headwater.application.root import Application
from headwater.config import Settings

if TYPE_CHECKING:
    import pyarrow as pa

    from headwater.features.history import HistoryReport, TrainingSetBuilder
    from headwater.features.labels import LabelSource

__all__ = ["historical_features", "training_set_builder"]


def training_set_builder(app: Application) -> TrainingSetBuilder:
    """The builder over ``app``'s archive, declared features (with the consumer's
    lateness bound), erasure ledger and batch runs."""
    with needs_extra():
        from headwater.batch.derived import OUTPUTS_DIR, DerivedStore
        from headwater.batch.history import BatchHistory
        from headwater.batch.state import BatchState
        from headwater.features.history import TrainingSetBuilder

    archive = app.open_archive_table()
    cfg = app.batch_settings
    batch = BatchHistory(
        BatchState(app.open_control()),
        DerivedStore(f"{archive.root}/{OUTPUTS_DIR}", storage_options=archive.storage_options),
        cfg,
    )
    return TrainingSetBuilder(
        archive,
        app.new_feature_engine(),
        app.new_tombstones(),
        batch,
        memory_limit=cfg.memory_limit,
        threads=cfg.threads,
    )


@overload
def historical_features(
    labels: LabelSource, *, settings: Settings | None = None, out: None = None
) -> pa.Table: ...
@overload
def historical_features(
    labels: LabelSource, *, settings: Settings | None = None, out: str | Path
) -> HistoryReport: ...
def historical_features(
    labels: LabelSource, *, settings: Settings | None = None, out: str | Path | None = None
) -> pa.Table | HistoryReport:
    """Each label row with the features as they were at its timestamp.

    ``labels``: a Parquet, CSV or Arrow IPC file, an Arrow table, or a pandas or Polars
    DataFrame with ``user_id``, ``timestamp`` and any other columns (kept as they are).
    Every row gains one column per streaming feature (its value as JSON text, read at
    the label's time), ``as_of``, and the batch's user row (``batch``, JSON text) of the
    last batch run completed before the label with its ``batch_as_of`` and
    ``batch_run``. Rows of erased users are left out. Rows are sorted by user, then
    time, then the labels' order. Without ``out``: an Arrow table; with it: the table is
    written there as Parquet and the report is returned. ``settings``: the
    deployment's (``Settings.from_env()`` when not given).
    """
    with Application(settings or Settings.from_env()) as app:
        builder = training_set_builder(app)
        if out is None:
            return builder.table(labels)
        return builder.write(labels, out)
