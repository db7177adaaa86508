"""Tombstones in the control plane, numbered in commit order so readers follow them.

Every consumer, every gateway and the orchestrator keep the tombstones in memory and
look for new ones every few seconds. Tombstones are never removed (an erased user's
old events may turn up at any time), so a reader that read them all each time would
spend more on it with every erasure the platform ever ran: at 100,000 tombstones a
read costs 85 to 100 ms of CPU, every 2 s, in every process
(bench/bench_tombstones.py).

So each tombstone carries ``seq``, the value of a one-row counter that the same
transaction increments. Incrementing the counter locks its row until that transaction
commits, so the transactions that write tombstones commit one after the other in the
order of their numbers: a reader that has seen number ``n`` has seen every tombstone
numbered below it, and asks only for those above (an index range). A re-erasure of a
user already tombstoned takes a new number too, so readers see its later time.
Tombstones written before ``seq`` existed have none; the first read of a reader takes
every tombstone, those included.
"""

from __future__ import annotations

from headwater.control.base import ControlDatabase, ControlTransaction

__all__ = ["TOMBSTONE_COLUMNS", "TOMBSTONE_SCHEMA", "read_tombstones", "write_tombstone"]

#: Added to ``hw_tombstones`` (records.SCHEMA) after its first release.
TOMBSTONE_COLUMNS = {"seq": "BIGINT"}
#: The counter, and the index the readers' range uses (created after the column).
TOMBSTONE_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS hw_tombstone_counter (
        id INTEGER PRIMARY KEY,
        n BIGINT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS hw_tombstones_by_seq ON hw_tombstones (seq)",
)


def write_tombstone(
    tx: ControlTransaction, subject_hash: str, erased_at_ms: int, request_id: str
) -> int:
    """Tombstone a subject (or move its tombstone to a later erasure) inside ``tx``; the
    tombstone's number. ``tx`` holds the counter's row until it ends."""
    tx.execute(
        "INSERT INTO hw_tombstone_counter (id, n) VALUES (1, 1) "
        "ON CONFLICT (id) DO UPDATE SET n = hw_tombstone_counter.n + 1"
    )
    seq = int(tx.execute("SELECT n FROM hw_tombstone_counter WHERE id = 1")[0][0])
    tx.execute(
        "INSERT INTO hw_tombstones (subject_hash, erased_at_ms, request_id, seq) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (subject_hash) DO UPDATE SET "
        "erased_at_ms = excluded.erased_at_ms, request_id = excluded.request_id, "
        "seq = excluded.seq",
        (subject_hash, erased_at_ms, request_id, seq),
    )
    return seq


def read_tombstones(db: ControlDatabase, after: int | None) -> tuple[dict[str, int], int]:
    """The tombstones numbered above ``after`` (all of them for None): subject hash ->
    erasure time (ms), and the highest number read (``after``, or 0, if none was)."""
    if after is None:
        rows = db.execute("SELECT subject_hash, erased_at_ms, seq FROM hw_tombstones")
    else:
        rows = db.execute(
            "SELECT subject_hash, erased_at_ms, seq FROM hw_tombstones WHERE seq > ?", (after,)
        )
    newest = after or 0
    found: dict[str, int] = {}
    for subject, at, seq in rows:
        found[str(subject)] = int(at)
        if seq is not None and int(seq) > newest:
            newest = int(seq)
    return found, newest
