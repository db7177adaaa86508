"""Erasure of what the batch derived from a user: its own participant, ``batch-derived``.

It waits until the archive has recorded the erasure (the day partitions the user had
rows in), recomputes those days' aggregates from the archive (which no longer holds
the user) under the batch lock (shared by every host: any host may run it), deletes
the superseded day files for good, recomputes the item tables that aggregate over them
(co-visitation and popularity), deletes the user's own batch row, and verifies: no
derived file and no online row holds the user, and the recomputed days equal a fresh
recompute from the archive with the user filtered out. The confirmation names the
files it removed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from headwater._url import redacted
from headwater.archive.ledger import ErasureLedger
from headwater.batch.outputs import USER_BATCH, refresh_outputs
from headwater.batch.runner import AS_OF_KEY, BatchRunner
from headwater.batch.sql import events_sql, item_pair_day_sql, item_pop_day_sql, user_item_day_sql
from headwater.bus.base import KIND_ERASURE, Record
from headwater.erasure.events import Confirmation, ErasureEvent
from headwater.erasure.ledger import Participant
from headwater.errors import ErasureError, WaitingForError
from headwater.runtime.consumer import Consumer

__all__ = ["BatchErasureParticipant"]

_COMPARED = {
    # day table -> (columns compared, how the fresh side is computed)
    "item_pair_day": "date, item_a, item_b, users",
    "item_pop_day": "date, surface, item_id, category, brand, events, users, score, views, "
    "clicks, saves, add_to_carts, purchases",
}


class BatchErasureParticipant(Consumer):
    """Confirms erasure for the batch's derived data (its own consumer group)."""

    name = "batch-derived"
    # The signals are the archive's: the bus reads past them for this participant.
    kinds = frozenset({KIND_ERASURE})
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

    def participants(self) -> list[Participant]:
        """What the batch derived: its day tables, outputs and the online store's rows."""
        return [Participant(self.name, self.store, self.confirm_within_s)]

    @property
    def store(self) -> str:
        """Where the derived day tables are (beside the archive)."""
        return redacted(self.runner.derived.url)

    def ready(self, events: Sequence[ErasureEvent]) -> set[int]:
        """The requests whose erasure the archive has recorded (and whose archive version
        is visible): those can be recomputed now."""
        version = self.runner.archive.version()
        entries = self.ledger.erasures([e.request_id for e in events])
        return {
            i
            for i, event in enumerate(events)
            if (entry := entries.get(event.request_id)) is not None
            and entry.table_version <= version
        }

    def erase(self, event: ErasureEvent) -> list[Confirmation]:
        """Recompute the user's partitions and derived tables, then prove the user is gone."""
        return self.erase_many([event])

    def erase_many(self, events: Sequence[ErasureEvent]) -> list[Confirmation]:
        """Erase a run of requests with one recompute of the days any of them touched.

        Each request gets its own confirmation: its user's rows and partitions, and the
        verification, which covers every user of the run.
        """
        entries = self.ledger.erasures([e.request_id for e in events])
        for event in events:
            if event.request_id not in entries:
                # The runtime backs off and retries: the archive confirms first, then we follow.
                raise WaitingForError(
                    f"archive has not yet confirmed erasure {event.request_id}; batch waits"
                )
        runner = self.runner
        needed = max(entry.table_version for entry in entries.values())
        if runner.archive.version() < needed:
            raise WaitingForError(
                f"archive version {needed} of erasure {events[0].request_id} is not visible yet"
            )
        began = time.perf_counter()
        users = list(dict.fromkeys(e.user_id for e in events))
        # Held elsewhere: BatchRunningError, which the runtime retries after a backoff.
        with runner.locked("erasure recompute"), runner.connect() as con:
            files = runner.archive.days()
            version = runner.archive.version()
            computed = runner.state.days()
            # Days the archive saw the users in, plus days whose aggregates still hold a
            # user (a crash between the archive's DELETE and its ledger entry).
            own = self._days_with_users(con, users)
            wanted = {d for entry in entries.values() for d in entry.partitions}
            # A day whose files still hold a user is recomputed even if the state forgot
            # it (a run that crashed between writing and recording).
            days = sorted({d for d in wanted if d in computed}.union(*own.values()))
            before = self._derived_rows(con, users)
            result = runner.compute_days(con, days, files, version, lambda _line: None)
            held = runner.store.get(USER_BATCH, users)  # one row per user at most
            runner.store.delete(USER_BATCH, users)
            online_removed = {u: int(u in held) for u in users}
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
                runner.retire_namespaces()
            remaining_files = self._derived_rows(con, users)
            left = runner.store.get(USER_BATCH, users)
            remaining_online = {u: int(u in left) for u in users}
            mismatches = self._mismatches(con, users, days, files)
        # The deleted rows' old page images; on a resent erasure, any old copy of them.
        scrubbed = runner.store.scrub(
            erased=users if any(e.attempt > 1 for e in events) else (),
            rebuild=any(e.rebuild for e in events),
        )
        remaining = sum(remaining_files.values()) + sum(remaining_online.values())
        if remaining or any(mismatches.values()):
            ids = ", ".join(e.request_id for e in events[:5])
            raise ErasureError(
                f"erasure {ids}{' ...' if len(events) > 5 else ''}: {remaining} derived row(s) "
                f"of the users remain, mismatching rows after recompute: {mismatches}"
            )
        seconds = round(time.perf_counter() - began, 3)
        out = []
        counted: set[str] = set()
        for event in events:
            user = event.user_id
            first = user not in counted  # a second request for a user in the run removed 0
            counted.add(user)
            entry = entries[event.request_id]
            out.append(
                Confirmation(
                    request_id=event.request_id,
                    participant=self.name,
                    store=self.store,
                    method="recompute",
                    rows_removed=before[user] + online_removed[user] if first else 0,
                    rows_remaining=remaining_files[user] + remaining_online[user],
                    verified_at=datetime.now(UTC),
                    evidence={
                        "partitions_recomputed": sorted(
                            d
                            for d in set(entry.partitions) | set(own[user])
                            if d in computed or d in own[user]
                        ),
                        "archive_partitions": entry.partitions,
                        "archive_version": version,
                        "derived_tables": ["user_item_day", "item_pair_day", "item_pop_day"],
                        "outputs": self.store,
                        # Superseded day files, deleted for good (not left for a vacuum).
                        "files_removed": result.removed,
                        "files_written": len(result.written),
                        "online_recomputed": [k for k in outputs if k != "as_of"],
                        "online_deleted": {USER_BATCH: online_removed[user] if first else 0},
                        "outputs_as_of": outputs.get("as_of"),
                        "online_scrub": scrubbed,
                        "verification": {
                            "user_rows_in_derived_files": remaining_files[user],
                            "user_rows_in_online_store": remaining_online[user],
                            "rows_differing_from_recompute_without_user": mismatches,
                        },
                        "recomputed_with": len(users) - 1,
                        "seconds": seconds,
                    },
                )
            )
        return out

    def _days_with_users(self, con: Any, users: list[str]) -> dict[str, list[str]]:
        relation = self.runner.derived.relation(con, "user_item_day")
        rows = con.execute(
            f"SELECT DISTINCT user_id, date FROM {relation} WHERE list_contains($users, user_id)",
            {"users": users},
        ).fetchall()
        found: dict[str, list[str]] = {u: [] for u in users}
        for user, day in rows:
            found[str(user)].append(str(day))
        return {u: sorted(days) for u, days in found.items()}

    def _derived_rows(self, con: Any, users: list[str]) -> dict[str, int]:
        relation = self.runner.derived.relation(con, "user_item_day")
        rows = con.execute(
            f"SELECT user_id, count(*) FROM {relation} WHERE list_contains($users, user_id) "
            "GROUP BY user_id",
            {"users": users},
        ).fetchall()
        found = dict.fromkeys(users, 0)
        for user, n in rows:
            found[str(user)] = int(n)
        return found

    def _mismatches(
        self, con: Any, users: list[str], days: list[str], files: dict[str, Any]
    ) -> dict[str, int]:
        """Rows that differ (either way) between stored day tables and a recompute from
        the archive that leaves the user out (chunk by chunk, like the batch itself)."""
        out = dict.fromkeys(_COMPARED, 0)
        step = max(1, self.runner.cfg.days_per_chunk)
        for i in range(0, len(days), step):
            for table, n in self._chunk_mismatches(con, users, days[i : i + step], files).items():
                out[table] += n
        return out

    def _chunk_mismatches(
        self, con: Any, users: list[str], days: list[str], files: dict[str, Any]
    ) -> dict[str, int]:
        runner = self.runner
        events = events_sql(
            runner.source(con, days, files), dedupe=runner.cfg.dedupe_event_ids, exclude_user=True
        )
        con.execute(f"CREATE OR REPLACE TEMP TABLE check_ev AS {events}", {"users": users})
        con.execute(f"CREATE OR REPLACE TEMP TABLE check_uid AS {user_item_day_sql('check_ev')}")
        fresh = {
            "item_pair_day": item_pair_day_sql("check_uid", runner.cfg),
            "item_pop_day": item_pop_day_sql("check_ev"),
        }
        out: dict[str, int] = {}
        for table, columns in _COMPARED.items():
            # Computed once, then compared both ways (each side is read twice).
            con.execute(f"CREATE OR REPLACE TEMP TABLE check_{table} AS {fresh[table]}")
            stored = f"SELECT {columns} FROM {runner.derived.relation(con, table, days=days)}"
            recomputed = f"SELECT {columns} FROM check_{table}"
            row = con.execute(
                f"SELECT (SELECT count(*) FROM ({stored} EXCEPT ALL {recomputed}))"
                f" + (SELECT count(*) FROM ({recomputed} EXCEPT ALL {stored}))"
            ).fetchall()
            out[table] = int(row[0][0]) if row else 0
            con.execute(f"DROP TABLE check_{table}")
        con.execute("DROP TABLE check_ev")
        con.execute("DROP TABLE check_uid")
        return out
