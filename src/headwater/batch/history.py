"""The batch's user rows as a past run left them, for point-in-time training sets.

A run that completed is recorded in the control plane with the window end of the
outputs it wrote (``as_of``, the end of the window's last day). The user rows of that
run are computed again, with the batch's own SQL (``user_batch_sql``, with the declared
affinities of the deployment's features file), from the day
aggregates under ``<archive>/_batch/`` for the days of that run's window: the day
aggregates hold only events of those days, all before the run finished.

Two limits, both documented in docs/features.md: day aggregates older than the
lookback window of the latest run are dropped from storage, so a run older than that
is recomputed from the days still kept; and a day recomputed after the run (late
events of that day, an erasure) gives its current aggregates, which hold no event
later than the day itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec

from headwater._time import parse_time
from headwater.batch.derived import DerivedStore
from headwater.batch.kinds import user_batch_sql
from headwater.batch.outputs import window_start
from headwater.batch.settings import BatchSettings
from headwater.batch.state import BatchState

__all__ = ["BatchHistory", "CompletedRun"]


class CompletedRun(msgspec.Struct, frozen=True):
    """A batch run that completed and wrote outputs: when it finished, and its window."""

    id: int
    finished_us: int
    as_of: str  # the outputs' as_of: the end (00:00 of the next day, UTC) of the window

    @property
    def as_of_day(self) -> str:
        """The last day of the run's window."""
        return (date.fromisoformat(self.as_of[:10]) - timedelta(days=1)).isoformat()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(text: str) -> int:
    return (parse_time(text) - _EPOCH) // timedelta(microseconds=1)


class BatchHistory:
    """The completed runs of the batch, and the user rows each of them wrote."""

    def __init__(self, state: BatchState, derived: DerivedStore, cfg: BatchSettings) -> None:
        self.state = state
        self.derived = derived
        self.cfg = cfg

    def completed_runs(self) -> list[CompletedRun]:
        """Every run that completed with outputs, in the order they finished."""
        rows = self.state.db.execute(
            "SELECT id, finished_at, as_of FROM hw_batch_runs "
            "WHERE status = 'ok' AND finished_at IS NOT NULL AND as_of IS NOT NULL"
        )
        runs = [CompletedRun(int(r[0]), _micros(str(r[1])), str(r[2])) for r in rows]
        return sorted(runs, key=lambda r: (r.finished_us, r.id))

    def user_rows_sql(self, con: Any, run: CompletedRun, users: str) -> str:
        """A DuckDB query of ``(user_id, doc)``: the user rows ``run`` wrote, for the users
        of the relation ``users`` (a ``user_id`` column) only."""
        end = run.as_of_day
        relation = self.derived.relation(
            con, "user_item_day", start=window_start(end, self.cfg.lookback_days), end=end
        )
        mine = f"(SELECT * FROM {relation} WHERE user_id IN (SELECT user_id FROM {users}))"
        return user_batch_sql(
            mine,
            as_of_day=end,
            as_of=run.as_of,
            cfg=self.cfg,
            short_start=window_start(end, self.cfg.affinity_short_days),
        )

    @staticmethod
    def runs_table(runs: Sequence[CompletedRun]) -> dict[str, list[Any]]:
        """The runs as columns (``run_id``, ``finished_us``, ``as_of``) for a join."""
        return {
            "run_id": [r.id for r in runs],
            "finished_us": [r.finished_us for r in runs],
            "as_of": [r.as_of for r in runs],
        }
