"""Erasure of what the batch derived from a user: its own participant, ``batch-derived``.

It waits until the archive has recorded the erasure (the day partitions the user had
rows in), recomputes those days' aggregates from the archive (which no longer holds
the user), recomputes the item tables that aggregate over them (co-visitation and
popularity), deletes the user's own batch row, and verifies: no derived file and no
online row holds the user, and the recomputed days equal a fresh recompute from the
archive with the user filtered out.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from headwater.archive.ledger import ErasureLedger
from headwater.batch.outputs import USER_BATCH, refresh_outputs
from headwater.batch.runner import AS_OF_KEY, BatchRunner
from headwater.batch.sql import events_sql, item_pair_day_sql, item_pop_day_sql, user_item_day_sql
from headwater.bus.base import Record
from headwater.erasure.events import Confirmation, ErasureEvent
from headwater.errors import BackendUnavailableError, ErasureError

__all__ = ["BatchErasureParticipant"]

_COMPARED = {
    # day table -> (columns compared, how the fresh side is computed)
    "item_pair_day": "date, item_a, item_b, users",
    "item_pop_day": "date, surface, item_id, category, brand, events, users, score",
}


class BatchErasureParticipant:
    """Confirms erasure for the batch's derived data (its own consumer group)."""

    name = "batch-derived"
    # It follows the archive and recomputes days of history: give it more time to confirm.
    confirm_within_s = 3600.0

    def __init__(
        self, runner: BatchRunner, ledger: ErasureLedger, *, group: str = "batch-erasure"
    ) -> None:
        self.runner = runner
        self.ledger = ledger
        self.group = group

    def handle(self, records: Sequence[Record]) -> None:
        """Signals are the archive's business: this participant only acts on erasures."""
        del records

    def erase(self, event: ErasureEvent) -> Confirmation:
        """Recompute the user's partitions and derived tables, then prove the user is gone."""
        entry = self.ledger.erasure(event.request_id)
        if entry is None:
            # The runtime backs off and retries: the archive confirms first, then we follow.
            raise BackendUnavailableError(
                f"archive has not yet confirmed erasure {event.request_id}; batch waits"
            )
        runner = self.runner
        if runner.archive.version() < entry.table_version:
            raise BackendUnavailableError(
                f"archive version {entry.table_version} of erasure {event.request_id} "
                "is not visible yet"
            )
        began = time.perf_counter()
        user = event.user_id
        with runner.locked(), runner.connect() as con:
            files = runner.archive.days()
            version = runner.archive.version()
            computed = runner.state.days()
            own = self._days_with_user(con, user)
            # Days the archive saw the user in, plus days whose aggregates still hold the
            # user (a crash between the archive's DELETE and its ledger entry).
            days = sorted(d for d in set(entry.partitions) | set(own) if d in computed)
            before = self._derived_rows(con, user)
            runner.compute_days(con, days, files, version, lambda _line: None)
            online_removed = runner.store.delete(USER_BATCH, [user])
            as_of_day = runner.state.get_meta(AS_OF_KEY)
            outputs: dict[str, Any] = {}
            if as_of_day is not None:
                outputs = refresh_outputs(
                    con,
                    runner.derived,
                    runner.store,
                    runner.cfg,
                    as_of_day=as_of_day,
                    users=False,
                    items=True,
                )
            remaining_files = self._derived_rows(con, user)
            remaining_online = runner.store.count(USER_BATCH, [user])
            mismatches = self._mismatches(con, user, days, files)
        remaining = remaining_files + remaining_online
        if remaining or any(mismatches.values()):
            raise ErasureError(
                f"erasure {event.request_id}: {remaining} derived row(s) of the user remain, "
                f"mismatching rows after recompute: {mismatches}"
            )
        return Confirmation(
            request_id=event.request_id,
            participant=self.name,
            store=str(runner.cfg.batch_dir),
            method="recompute",
            rows_removed=before + online_removed,
            rows_remaining=remaining,
            verified_at=datetime.now(UTC),
            evidence={
                "partitions_recomputed": days,
                "archive_partitions": entry.partitions,
                "archive_version": version,
                "derived_tables": ["user_item_day", "item_pair_day", "item_pop_day"],
                "online_recomputed": [k for k in outputs if k != "as_of"],
                "online_deleted": {USER_BATCH: online_removed},
                "outputs_as_of": outputs.get("as_of"),
                "verification": {
                    "user_rows_in_derived_files": remaining_files,
                    "user_rows_in_online_store": remaining_online,
                    "rows_differing_from_recompute_without_user": mismatches,
                },
                "seconds": round(time.perf_counter() - began, 3),
            },
        )

    def _days_with_user(self, con: Any, user: str) -> list[str]:
        relation = self.runner.derived.relation("user_item_day")
        rows = con.execute(
            f"SELECT DISTINCT date FROM {relation} WHERE user_id = $user", {"user": user}
        ).fetchall()
        return sorted(str(r[0]) for r in rows)

    def _derived_rows(self, con: Any, user: str) -> int:
        relation = self.runner.derived.relation("user_item_day")
        row = con.execute(
            f"SELECT count(*) FROM {relation} WHERE user_id = $user", {"user": user}
        ).fetchall()
        return int(row[0][0]) if row else 0

    def _mismatches(
        self, con: Any, user: str, days: list[str], files: dict[str, Any]
    ) -> dict[str, int]:
        """Rows that differ (either way) between stored day tables and a recompute from
        the archive that leaves the user out (chunk by chunk, like the batch itself)."""
        out = dict.fromkeys(_COMPARED, 0)
        step = max(1, self.runner.cfg.days_per_chunk)
        for i in range(0, len(days), step):
            for table, n in self._chunk_mismatches(con, user, days[i : i + step], files).items():
                out[table] += n
        return out

    def _chunk_mismatches(
        self, con: Any, user: str, days: list[str], files: dict[str, Any]
    ) -> dict[str, int]:
        runner = self.runner
        events = events_sql(
            runner.source(con, days, files), dedupe=runner.cfg.dedupe_event_ids, exclude_user=True
        )
        con.execute(f"CREATE OR REPLACE TEMP TABLE check_ev AS {events}", {"user": user})
        con.execute(f"CREATE OR REPLACE TEMP TABLE check_uid AS {user_item_day_sql('check_ev')}")
        fresh = {
            "item_pair_day": item_pair_day_sql("check_uid", runner.cfg),
            "item_pop_day": item_pop_day_sql("check_ev"),
        }
        out: dict[str, int] = {}
        for table, columns in _COMPARED.items():
            stored = f"SELECT {columns} FROM {runner.derived.relation(table, days=days)}"
            recomputed = f"SELECT {columns} FROM ({fresh[table]})"
            row = con.execute(
                f"SELECT (SELECT count(*) FROM ({stored} EXCEPT ALL {recomputed}))"
                f" + (SELECT count(*) FROM ({recomputed} EXCEPT ALL {stored}))"
            ).fetchall()
            out[table] = int(row[0][0]) if row else 0
        con.execute("DROP TABLE check_ev")
        con.execute("DROP TABLE check_uid")
        return out
