"""Erasure reaches derived data: after it, the batch outputs equal those of an archive
that never held the user."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from headwater.archive import ArchiveConsumer
from headwater.batch import ITEM_COVIS, ITEM_POP, USER_BATCH, BatchErasureParticipant
from headwater.contract.signal import Signal
from headwater.erasure.events import ErasureEvent
from headwater.errors import BackendUnavailableError
from headwater.online import OnlineStore, open_online_store
from tests.archive._history import START, history, records, signal, without_user
from tests.batch.conftest import UNTIL, make_archive, make_runner, snapshot

VICTIM = "victim"
NAMESPACES = (USER_BATCH, ITEM_COVIS, ITEM_POP)


def _victim_history() -> list[Signal]:
    days = [START + timedelta(days=d) for d in (1, 4, 9)]
    out = []
    for n, day in enumerate(days):
        # A pair nobody else co-visits, and weight on the most popular items.
        out += [
            signal(50_000 + 10 * n, "view", VICTIM, "i-rare-a", day, minute=5),
            signal(50_001 + 10 * n, "view", VICTIM, "i-rare-b", day, minute=6),
            signal(50_002 + 10 * n, "purchase", VICTIM, "i000", day, minute=7, surface="ios"),
            signal(50_003 + 10 * n, "click", VICTIM, "i001", day, minute=8),
        ]
    return out


def _decoded(store: OnlineStore) -> dict[str, dict[str, object]]:
    return {ns: {k: json.loads(v) for k, v in snapshot(store, ns).items()} for ns in NAMESPACES}


def _event(request_id: str = "req-9") -> ErasureEvent:
    return ErasureEvent(request_id=request_id, user_id=VICTIM, requested_at=datetime.now(UTC))


def test_erased_users_influence_is_gone_from_every_batch_output(
    tmp_path: Path, store: OnlineStore
) -> None:
    sent = history(1500, days=12) + _victim_history()
    archive = make_archive(tmp_path / "a" / "archive")
    archive.handle(records(sent))
    runner = make_runner(archive.table, store, tmp_path / "a" / "batch")
    runner.run(until=UNTIL)
    before = _decoded(store)
    assert VICTIM in before[USER_BATCH]
    assert "i-rare-b" in [x["item_id"] for x in before[ITEM_COVIS]["i-rare-a"]["items"]]

    participant = BatchErasureParticipant(runner, archive.ledger)
    with pytest.raises(BackendUnavailableError, match="archive has not yet confirmed"):
        participant.erase(_event())
    archive.erase(_event())
    (conf,) = participant.erase(_event())

    victim_days = sorted({s.timestamp.date().isoformat() for s in _victim_history()})
    assert conf.ok
    assert conf.participant == "batch-derived"
    assert conf.rows_remaining == 0
    assert conf.evidence["partitions_recomputed"] == victim_days
    assert conf.rows_removed == 4 * 3 + 1  # 4 user-item rows a day on 3 days + the user row
    assert conf.evidence["verification"]["rows_differing_from_recompute_without_user"] == {
        "item_pair_day": 0,
        "item_pop_day": 0,
    }

    # The oracle: the same batch over an archive that never held the user.
    clean = make_archive(tmp_path / "b" / "archive")
    clean.handle(records(without_user(sent, VICTIM)))
    clean_store = open_online_store(f"sqlite:///{tmp_path / 'b' / 'online.db'}")
    make_runner(clean.table, clean_store, tmp_path / "b" / "batch").run(until=UNTIL)
    after = _decoded(store)
    expected = _decoded(clean_store)
    assert after == expected
    assert "i-rare-a" not in after[ITEM_COVIS]
    assert VICTIM not in after[USER_BATCH]
    assert after[ITEM_POP] != before[ITEM_POP], "the user's events did count before"

    # A later nightly run does not bring anything back.
    again = runner.run(until=UNTIL)
    assert again.days_computed == []
    assert _decoded(store) == expected
    clean_store.close()


def test_erasure_of_a_user_without_derived_rows_confirms(
    tmp_path: Path, store: OnlineStore
) -> None:
    archive: ArchiveConsumer = make_archive(tmp_path / "archive")
    archive.handle(records(history(300, days=4)))
    runner = make_runner(archive.table, store, tmp_path / "batch")
    runner.run(until=UNTIL)
    archive.erase(_event("req-none"))
    (conf,) = BatchErasureParticipant(runner, archive.ledger).erase(_event("req-none"))
    assert conf.ok
    assert conf.rows_removed == 0
    assert conf.evidence["partitions_recomputed"] == []


def test_erasure_before_any_batch_run_confirms(tmp_path: Path, store: OnlineStore) -> None:
    archive = make_archive(tmp_path / "archive")
    archive.handle(records(history(200, days=3) + _victim_history()))
    runner = make_runner(archive.table, store, tmp_path / "batch")
    archive.erase(_event())
    (conf,) = BatchErasureParticipant(runner, archive.ledger).erase(_event())
    assert conf.ok
    assert conf.evidence["partitions_recomputed"] == []
    runner.run(until=UNTIL)
    assert store.count(USER_BATCH, [VICTIM]) == 0


def test_a_run_of_erasures_recomputes_once_and_equals_an_archive_without_them(
    tmp_path: Path, store: OnlineStore
) -> None:
    sent = history(1500, days=12) + _victim_history()
    others = sorted({s.user_id for s in sent} - {VICTIM})[:2]
    archive = make_archive(tmp_path / "a" / "archive")
    archive.handle(records(sent))
    runner = make_runner(archive.table, store, tmp_path / "a" / "batch")
    runner.run(until=UNTIL)
    events = [
        ErasureEvent(request_id=f"req-{u}", user_id=u, requested_at=datetime.now(UTC))
        for u in [VICTIM, *others]
    ]
    archive.erase_many(events)
    confs = BatchErasureParticipant(runner, archive.ledger).erase_many(events)
    assert [c.request_id for c in confs] == [e.request_id for e in events]
    assert all(c.ok and c.rows_remaining == 0 for c in confs)
    victim_days = sorted({s.timestamp.date().isoformat() for s in _victim_history()})
    assert confs[0].evidence["partitions_recomputed"] == victim_days
    assert confs[0].rows_removed == 4 * 3 + 1

    clean = make_archive(tmp_path / "b" / "archive")
    kept = sent
    for user in [VICTIM, *others]:
        kept = without_user(kept, user)
    clean.handle(records(kept))
    clean_store = open_online_store(f"sqlite:///{tmp_path / 'b' / 'online.db'}")
    make_runner(clean.table, clean_store, tmp_path / "b" / "batch").run(until=UNTIL)
    assert _decoded(store) == _decoded(clean_store)
    clean_store.close()
