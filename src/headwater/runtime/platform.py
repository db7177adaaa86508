"""The platform's own stores as erasure participants: the bus log, the dead letters and
the idempotency window.

They are not fed by a consumer of their own, so one handler in its own consumer group
takes the erasure events from the bus and erases the user from each, confirming once
per store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from headwater._time import format_time
from headwater.bus.base import KIND_SIGNAL, Bus, Record
from headwater.bus.dead_letters import DeadLetterStore
from headwater.contract.signal import decode_signal
from headwater.dedupe.base import IdempotencyWindow
from headwater.erasure.events import Confirmation, ErasureEvent
from headwater.erasure.ledger import Participant
from headwater.erasure.participant import DEFAULT_CONFIRM_WITHIN_S
from headwater.runtime.consumer import Consumer

__all__ = ["BUS_LOG", "DEAD_LETTERS", "IDEMPOTENCY_WINDOW", "PlatformErasure"]

BUS_LOG = "bus-log"
DEAD_LETTERS = "dead-letters"
#: ``gone_by`` of records a log without retention keeps.
NEVER = "never: the log has no retention; the records stay until an operator deletes them"
IDEMPOTENCY_WINDOW = "idempotency-window"


def _before(erased_at: datetime) -> Callable[[Record], bool]:
    limit = erased_at.timestamp()

    def predicate(record: Record) -> bool:
        # Signals from before the erasure go; the erasure event itself stays until the
        # request completes (lagging consumers still need it), new activity stays.
        return record.kind == KIND_SIGNAL and (
            decode_signal(record.value).timestamp.timestamp() <= limit
        )

    return predicate


def _at(positions: set[tuple[int, int]]) -> Callable[[Record], bool]:
    return lambda r: (r.partition, r.offset) in positions


class PlatformErasure(Consumer):
    """Erases users from the bus log, the dead-letter store and the idempotency window."""

    name = "platform-erasure"

    def __init__(
        self,
        bus: Bus,
        dead_letters: DeadLetterStore,
        window: IdempotencyWindow,
        *,
        confirm_within_s: float = DEFAULT_CONFIRM_WITHIN_S,
        backup_retention_s: float | None = None,
    ) -> None:
        self.bus = bus
        self.backup_retention_s = backup_retention_s
        self.dead_letters = dead_letters
        self.window = window
        self.confirm_within_s = confirm_within_s

    def participants(self) -> list[Participant]:
        """The three stores this handler answers for."""
        return [
            Participant(BUS_LOG, self.bus.url, self.confirm_within_s),
            Participant(DEAD_LETTERS, "control plane: hw_dead_letters", self.confirm_within_s),
            Participant(IDEMPOTENCY_WINDOW, self.window.url, self.confirm_within_s),
        ]

    def handle(self, records: Sequence[Record]) -> None:
        """Signals need nothing here: these stores are written by other components."""

    def purge_dropped(self, records: Sequence[Record]) -> None:
        """Remove erased users' late or replayed records that reached the log after the
        erasure was applied (where the bus can delete single records)."""
        if not self.bus.erasure_capability().can_purge:
            return  # they age out with the retention; every consumer drops them meanwhile
        by_key: dict[str, set[tuple[int, int]]] = {}
        for r in records:
            by_key.setdefault(r.key, set()).add((r.partition, r.offset))
        for key, positions in by_key.items():
            self.bus.purge_key(key, _at(positions))

    def erase(self, event: ErasureEvent) -> list[Confirmation]:
        """Erase the user from each addressed store and verify with a scan of each."""
        return self.erase_many([event])

    def erase_many(self, events: Sequence[ErasureEvent]) -> list[Confirmation]:
        """Erase a run of requests together: one pass over each store, not one per user.

        Each request still gets its own confirmation per store, with its own counts. The
        idempotency window is erased in a thread of its own while the bus log and the
        dead letters are: each store's scans run in SQLite (or on its server) without
        the GIL, on files of their own, so a run takes about as long as its slowest
        store, not the sum of them.
        """
        window = [e for e in events if e.addressed_to(IDEMPOTENCY_WINDOW)]
        with ThreadPoolExecutor(1, thread_name_prefix="headwater-window-erasure") as pool:
            pending = pool.submit(self._window, window) if window else None
            out = self._bus_log([e for e in events if e.addressed_to(BUS_LOG)])
            out += self._dead_letters([e for e in events if e.addressed_to(DEAD_LETTERS)])
            if pending is not None:
                out += pending.result()
        return out

    def _dead_letters(self, letters: Sequence[ErasureEvent]) -> list[Confirmation]:
        if not letters:
            return []
        out: list[Confirmation] = []
        users = list(dict.fromkeys(e.user_id for e in letters))
        removed_by_user = self.dead_letters.erase_users(users)
        counted: set[str] = set()
        removed_any = any(removed_by_user.values()) or any(e.rebuild for e in letters)
        scrubbed = self.dead_letters.scrub(rewrite=removed_any)
        # Dead versions a running transaction still holds: not gone yet, so not confirmed.
        held = scrubbed.get("dead_not_yet_removable") or {}
        held_rows = sum(held.values()) if isinstance(held, dict) else 0
        server = self._server_copies(scrubbed)
        for event in letters:
            evidence: dict[str, object] = {
                "scan": "every dead letter read back: those whose key or record names the "
                "user (the id as a whole token) deleted in the same transaction",
                "scrub": scrubbed,
            }
            if server:
                evidence["server_copies"] = server
            out.append(
                self._confirm(
                    event,
                    DEAD_LETTERS,
                    "control plane: hw_dead_letters",
                    method="delete",
                    # A second request for a user in the run removed nothing more.
                    removed=0 if event.user_id in counted else removed_by_user[event.user_id],
                    # The erase read and deleted with other writers kept out: no letter
                    # left names the user; what remains is what the scrub could not clear.
                    remaining=held_rows,
                    evidence=evidence,
                )
            )
            counted.add(event.user_id)
        return out

    def _window(self, window: Sequence[ErasureEvent]) -> list[Confirmation]:
        out: list[Confirmation] = []
        users = [e.user_id for e in window]
        removed_by_user = self.window.erase_users(users)
        remaining_by_user = self.window.count_users(users)
        # A resent erasure also makes sure no old copy of the entries is left.
        resent = any(e.attempt > 1 for e in window)
        scrubbed = self.window.scrub(
            erased=users if resent else (), rebuild=any(e.rebuild for e in window)
        )
        seen: set[str] = set()
        for event in window:
            # Two requests for one user in a run: the first removed the entries.
            first = event.user_id not in seen
            seen.add(event.user_id)
            out.append(
                self._confirm(
                    event,
                    IDEMPOTENCY_WINDOW,
                    self.window.url,
                    method="delete",
                    removed=removed_by_user[event.user_id] if first else 0,
                    remaining=remaining_by_user[event.user_id],
                    evidence={
                        "scan": "count of the user's accepted event ids",
                        "scrub": scrubbed,
                    },
                )
            )
        return out

    def _bus_log(self, events: Sequence[ErasureEvent]) -> list[Confirmation]:
        if not events:
            return []
        cap = self.bus.erasure_capability()
        removed: dict[str, int] = {}
        remaining: dict[str, int] | None = None
        # The latest request of a user decides what goes (signals dated before it).
        latest: dict[str, ErasureEvent] = {}
        if cap.can_purge:
            for event in events:
                known = latest.get(event.user_id)
                if known is None or event.requested_at > known.requested_at:
                    latest[event.user_id] = event
            wheres = {user: _before(e.requested_at) for user, e in latest.items()}
            removed, remaining = self._purge_bus(wheres)
            evidence: dict[str, object] = {
                "detail": cap.detail,
                "scan": "the user's records dated before the erasure",
            }
        else:
            retention = cap.retention_seconds
            evidence = {
                "detail": cap.detail,
                # A topic without retention keeps the records until an operator deletes
                # them: never dated as gone.
                "gone_by": NEVER
                if retention is None
                else format_time(datetime.now(UTC) + timedelta(seconds=retention)),
                "retention_seconds": cap.retention_seconds,
                "note": "records remain in the log until gone_by; every "
                "consumer drops them (tombstone) if replayed",
            }
        return [
            self._confirm(
                event,
                BUS_LOG,
                self.bus.url,
                method=cap.method,
                removed=removed.get(event.user_id, 0) if latest.get(event.user_id) is event else 0,
                remaining=None if remaining is None else remaining[event.user_id],
                evidence=evidence,
            )
            for event in events
        ]

    def _server_copies(self, scrubbed: dict[str, object]) -> dict[str, object] | None:
        """What a PostgreSQL server keeps of deleted rows outside its tables, and until when."""
        if scrubbed.get("server") != "postgresql":
            return None
        retention = self.backup_retention_s
        return {
            "what": "the deleted dead-letter rows in the server's WAL segments, WAL archive "
            "and base backups",
            "gone_by": None
            if retention is None
            else format_time(datetime.now(UTC) + timedelta(seconds=retention)),
            "backup_retention_s": retention,
        }

    def _purge_bus(
        self, wheres: dict[str, Callable[[Record], bool]]
    ) -> tuple[dict[str, int], dict[str, int] | None]:
        """Purge the users' records, then count what is left (None: the bus cannot count).

        Buses that take many keys at once (the SQLite log) scan each partition once.
        """
        removed = self.bus.purge_keys(wheres)
        return removed, self.bus.count_keys(wheres)

    @staticmethod
    def _confirm(
        event: ErasureEvent,
        participant: str,
        store: str,
        *,
        method: str,
        removed: int,
        remaining: int | None,
        evidence: dict[str, object],
    ) -> Confirmation:
        return Confirmation(
            request_id=event.request_id,
            participant=participant,
            store=store,
            method=method,
            rows_removed=removed,
            rows_remaining=remaining,
            verified_at=datetime.now(UTC),
            evidence=evidence,
            ok=remaining is None or remaining == 0,
        )
