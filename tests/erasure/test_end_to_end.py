"""Erase one user end to end, then prove with an independent scan of every store that
nothing of that user remains while the other users are untouched."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from headwater.archive.table import ArchiveTable
from headwater.bus import Record
from headwater.config import Settings
from headwater.stack import EmbeddedStack
from tests._live import free_port
from tests.conftest import server_url
from tests.erasure.scan import dead_letter_counts


@pytest.fixture(
    params=["embedded", pytest.param("servers", marks=[pytest.mark.redis, pytest.mark.postgres])]
)
def stack(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[EmbeddedStack]:
    if request.param == "servers":
        prefix = f"t{uuid.uuid4().hex[:10]}"
        redis = server_url("redis")
        monkeypatch.setenv("HEADWATER_ONLINE_URL", f"{redis}?prefix={prefix}")
        monkeypatch.setenv("HEADWATER_DEDUPE_URL", f"{redis}?prefix={prefix}")
        monkeypatch.setenv("HEADWATER_CONTROL_URL", request.getfixturevalue("postgres_url"))
    s = EmbeddedStack(
        Settings.from_env(tmp_path / "hw"), port=free_port(), orchestrator_interval_s=0.1
    )
    s.start()
    yield s
    s.stop()


def events(user: str, n: int, start: int = 0) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        {
            "event_id": f"{user}-{i}",
            "event_type": "view",
            "user_id": user,
            "item_id": f"item-{i % 7}",
            "surface": "web",
            "timestamp": (now - timedelta(seconds=60 - i)).isoformat(),
            "payload": {"dwell_ms": 100 + i},
        }
        for i in range(start, start + n)
    ]


def wait_for(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def test_erase_one_user_from_every_store(stack: EmbeddedStack) -> None:
    svc = stack.app
    key, _ = svc.keys.create("web", roles=("producer", "reader", "privacy"))
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=stack.url, headers=headers) as http:
        for user in ("alice", "bob", "carol"):
            assert http.post("/v1/signals", json=events(user, 12)).status_code == 200
        wait_for(
            lambda: all(
                http.get(f"/v1/users/{u}/features").json()["found"]
                for u in ("alice", "bob", "carol")
            )
        )
        before_bob = http.get("/v1/users/bob/features").json()["features"]["counts"]
        archive = ArchiveTable(stack.settings.archive_url)
        wait_for(lambda: sum(archive.user_rows_by_day("alice").values()) == 12)
        # A dead letter of alice's too: the DLQ is a store erasure must reach.
        svc.dead_letters.put("features", Record(0, 999, "alice", "signal", b"x", 1), "boom", 3)

        asked = {"user_id": "alice", "legal_basis": "gdpr-art17", "reference": "CASE-17"}
        created = http.post("/v1/deletions", json=asked)
        assert created.status_code == 202, created.text
        assert created.json()["legal_basis"] == "gdpr-art17"
        assert created.json()["reference"] == "CASE-17"
        assert created.json()["requested_by"].startswith("team:web (key ")
        request_id = created.json()["request_id"]
        assert created.json()["status"] == "open"
        participants = {s["participant"] for s in created.json()["stores"]}
        assert participants == {
            "online-features",
            "bus-log",
            "dead-letters",
            "idempotency-window",
            "archive",
            "batch-derived",
        }

        audit = wait_for(
            lambda: (
                (a := http.get(f"/v1/deletions/{request_id}").json())["status"] == "completed" and a
            )
        )
        assert audit["outstanding"] == 0
        assert audit["time_remaining_s"] is None
        by_store = {s["participant"]: s for s in audit["stores"]}
        assert all(s["status"] == "confirmed" and s["confirmed_at"] for s in audit["stores"])
        assert by_store["bus-log"]["rows_removed"] == 12
        assert by_store["dead-letters"]["rows_removed"] == 1
        assert by_store["idempotency-window"]["rows_removed"] == 12
        assert by_store["online-features"]["rows_removed"] == 1
        assert "alice" not in str(audit), "the audit must not keep the raw user id"

        # Independent scans of every store.
        bus = svc.bus
        assert bus.count_key("alice") == 0  # type: ignore[attr-defined]
        assert svc.online.count("user", ["alice"]) == 0
        assert dead_letter_counts(svc.dead_letters, ["alice"]) == {"alice": 0}
        assert svc.dedupe.count_user("alice") == 0
        assert svc.ledger.get(request_id).user_id is None
        assert archive.user_rows_by_day("alice") == {}
        assert by_store["archive"]["rows_removed"] == 12
        assert by_store["batch-derived"]["status"] == "confirmed"
        # The others are untouched.
        assert bus.count_key("bob") == 12  # type: ignore[attr-defined]
        assert sum(archive.user_rows_by_day("bob").values()) == 12
        assert svc.dedupe.count_user("bob") > 0
        assert http.get("/v1/users/bob/features").json()["features"]["counts"] == before_bob
        assert http.get("/v1/users/carol/features").json()["found"]

        # Late and replayed events from before the erasure never bring alice back.
        late = events("alice", 3, start=100)
        for e in late:
            e["timestamp"] = (
                datetime.fromisoformat(audit["received_at"]) - timedelta(seconds=5)
            ).isoformat()
        r = http.post("/v1/signals", json=late)
        assert r.status_code == 207
        assert {x["rule"] for x in r.json()["results"]} == {"user_erased"}
        listing = http.get("/v1/deletions?status=completed").json()
        assert request_id in [x["request_id"] for x in listing["requests"]]
        # Completed in time: nothing overdue.
        assert http.get("/v1/deletions?status=overdue").json()["requests"] == []
    assert not svc.online.get("user", ["alice"])
