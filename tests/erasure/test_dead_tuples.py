"""On PostgreSQL, a deleted dead letter stays in the table's pages while a transaction
older than the delete runs: the store is not confirmed until VACUUM could remove it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from headwater.bus import open_bus
from headwater.bus.base import KIND_SIGNAL, Record
from headwater.bus.dead_letters import DeadLetterStore
from headwater.control import open_control_database
from headwater.dedupe import open_idempotency_window
from headwater.erasure.events import ErasureEvent
from headwater.runtime.platform import DEAD_LETTERS, PlatformErasure


def _erase(
    platform: PlatformErasure, user: str, request: str
) -> tuple[int | None, dict[str, object]]:
    event = ErasureEvent(
        request_id=request,
        user_id=user,
        requested_at=datetime.now(UTC),
        participants=(DEAD_LETTERS,),
    )
    [confirmation] = platform.erase_many([event])
    return confirmation.rows_remaining, confirmation.evidence


@pytest.mark.postgres
def test_a_dead_letter_held_by_an_older_transaction_is_not_confirmed(
    tmp_path: Path, postgres_url: str
) -> None:
    db = open_control_database(postgres_url)
    letters = DeadLetterStore(db)
    bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}")
    window = open_idempotency_window(f"sqlite:///{tmp_path / 'dedupe.db'}", window_s=60)
    platform = PlatformErasure(bus, letters, window, backup_retention_s=86_400.0)
    letters.put("features", Record(0, 7, "victim", KIND_SIGNAL, b"{}", 0), "boom", 3)

    # A transaction that took its snapshot before the delete keeps the dead version.
    holder = psycopg.connect(postgres_url)
    holder.execute("SELECT txid_current()")
    holder.execute("SELECT COUNT(*) FROM hw_dead_letters")
    try:
        remaining, evidence = _erase(platform, "victim", "r1")
        scrub = evidence["scrub"]
        assert isinstance(scrub, dict)
        assert scrub["dead_not_yet_removable"] == {"hw_dead_letters": 1}
        assert remaining == 1, "a copy the table still holds is not confirmed"
    finally:
        holder.rollback()
        holder.close()

    # Once it ends, the retry's VACUUM removes it (other sessions on the server may
    # hold the horizon a moment longer).
    deadline = time.monotonic() + 30
    while True:
        remaining, evidence = _erase(platform, "victim", "r1")
        if remaining == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert remaining == 0, evidence
    copies = evidence["server_copies"]
    assert isinstance(copies, dict)
    assert "WAL" in str(copies["what"])
    assert copies["gone_by"] is not None
    window.close()
    bus.close()
    db.close()
