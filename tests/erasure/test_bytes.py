"""Gone means gone: after an erasure is ``completed``, no byte of any file under the data
directory holds the user's id, items, order id, review text, search query or event ids.

The user's values are random tokens that appear nowhere else, so any hit is a copy of
that user's data: SQLite main files, write-ahead logs and shared memory, every Parquet
file (raw and decoded), every Delta log entry, batch outputs, and the log lines the
process wrote. The scan runs while the stack still runs and again after it stopped.
"""

from __future__ import annotations

import json
import logging
import secrets
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
from headwater.logs import JsonFormatter
from headwater.stack import EmbeddedStack
from tests._live import free_port
from tests.conftest import server_url
from tests.erasure.scan import files_scanned, scan, scan_nats_stream, scan_postgres, scan_redis


class Subject:
    """One user whose every value is a token seen nowhere else."""

    def __init__(self) -> None:
        self.user = f"usr{secrets.token_hex(8)}"
        self.item = f"itm{secrets.token_hex(8)}"
        self.order = f"ord{secrets.token_hex(8)}"
        self.review = f"rvw{secrets.token_hex(8)}"
        self.query = f"qry{secrets.token_hex(8)}"
        self.event = f"evt{secrets.token_hex(8)}"

    def needles(self) -> dict[str, str]:
        return {
            "user id": self.user,
            "item ids": self.item,
            "order id": self.order,
            "review text": self.review,
            "search query": self.query,
            "event ids": self.event,
        }

    def signals(self, n: int, now: datetime) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i in range(n):
            base = {
                "event_id": f"{self.event}-{i:05d}",
                "user_id": self.user,
                "surface": "web",
                "timestamp": (now - timedelta(seconds=n - i)).isoformat(),
            }
            item = f"{self.item}-{i % 9}"
            kind = i % 10
            if kind < 6:
                out.append(base | {"event_type": "view", "item_id": item, "payload": {}})
            elif kind < 8:
                out.append(
                    base
                    | {
                        "event_type": "purchase",
                        "item_id": item,
                        "payload": {
                            "order_id": f"{self.order}-{i}",
                            "quantity": 1,
                            "price": 9.5,
                            "currency": "EUR",
                        },
                    }
                )
            elif kind == 8:
                out.append(
                    base
                    | {
                        "event_type": "rating",
                        "item_id": item,
                        "payload": {"rating": 2, "text": f"{self.review} the lid leaks"},
                    }
                )
            else:
                out.append(
                    base
                    | {
                        "event_type": "search",
                        "item_id": None,
                        "payload": {"query": f"{self.query} blender", "results": 3},
                    }
                )
        return out


def others(n: int, now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"other-{secrets.token_hex(6)}",
            "event_type": "view",
            "user_id": f"other-{i % 20}",
            "item_id": f"shared-{i % 13}",
            "surface": "web",
            "timestamp": (now - timedelta(seconds=n - i)).isoformat(),
            "payload": {},
        }
        for i in range(n)
    ]


def wait_for(check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.1)
    return value


class Servers:
    """Where the scale-out variant keeps the user's data besides the home directory."""

    def __init__(self, redis: str, prefix: str, postgres: str, schema: str, nats: str) -> None:
        self.redis, self.prefix = redis, prefix
        self.postgres, self.schema = postgres, schema
        self.nats, self.topic = nats, f"hwt.{prefix}"

    def scan(self, needles: list[str]) -> dict[str, list[str]]:
        import redis

        client = redis.Redis.from_url(self.redis)
        found = scan_redis(client, self.prefix, needles)
        client.close()
        stream = "HW_" + self.topic.replace(".", "_").upper()
        for needle, where in scan_nats_stream(self.nats, stream, needles).items():
            found.setdefault(needle, []).extend(where)
        for needle, where in scan_postgres(self.postgres, self.schema, needles).items():
            found.setdefault(needle, []).extend(where)
        return found


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("servers", marks=[pytest.mark.redis, pytest.mark.postgres, pytest.mark.nats]),
    ]
)
def deployment(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[EmbeddedStack, Servers | None]]:
    servers = None
    if request.param == "servers":
        prefix = f"t{uuid.uuid4().hex[:10]}"
        postgres = request.getfixturevalue("postgres_url")
        schema = postgres.rsplit("search_path%3D", 1)[1]
        servers = Servers(
            server_url("redis"), prefix, postgres, schema, request.getfixturevalue("nats_url")
        )
        monkeypatch.setenv("HEADWATER_ONLINE_URL", f"{servers.redis}?prefix={prefix}")
        monkeypatch.setenv("HEADWATER_DEDUPE_URL", f"{servers.redis}?prefix={prefix}")
        monkeypatch.setenv("HEADWATER_CONTROL_URL", postgres)
        monkeypatch.setenv(
            "HEADWATER_BUS_URL", f"{servers.nats}?topic={servers.topic}&partitions=2"
        )
    s = EmbeddedStack(
        Settings.from_env(tmp_path / "hw"), port=free_port(), orchestrator_interval_s=0.1
    )
    s.start()
    yield s, servers
    s.stop()


def test_a_completed_erasure_leaves_no_byte_of_the_user(
    deployment: tuple[EmbeddedStack, Servers | None], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    stack, servers = deployment
    app = stack.app
    key, _ = app.keys.create(
        "auditor", roles=("producer", "reader", "privacy", "operator"), event_types=("*",)
    )
    subject = Subject()
    now = datetime.now(UTC)
    signals = subject.signals(3000, now) + others(1000, now)
    # A rejected event of the user's too: the rejection examples are a copy of it.
    broken = subject.signals(1, now)[0] | {"event_id": f"{subject.event}-bad", "surface": "tv"}
    with httpx.Client(
        base_url=stack.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as http:
        for start in range(0, len(signals), 500):
            r = http.post("/v1/signals", json=signals[start : start + 500])
            assert r.status_code == 200, r.text
        assert http.post("/v1/signals", json=[broken]).status_code == 207
        # The rejected event's example is kept in memory only, its values masked: it
        # holds nothing of the user even before the erasure.
        stats = http.get("/v1/stats/ingestion").text
        assert "surface" in stats
        assert not [n for n in subject.needles().values() if n in stats]
        wait_for(lambda: http.get(f"/v1/users/{subject.user}/features").json()["found"])
        archive = ArchiveTable(stack.settings.archive_url)
        wait_for(lambda: sum(archive.user_rows_by_day(subject.user).values()) == 3000)
        app.open_batch_runner().run(until=now.date())
        # A consumer gave up on one of the user's records: the dead letter is a copy
        # (in the control plane: SQLite here, PostgreSQL on the servers).
        letter = json.dumps(signals[7]).encode()
        app.dead_letters.put(
            "features", Record(0, 10**9, subject.user, "signal", letter, 1), "e", 3
        )
        home = stack.settings.home
        seen = {path for paths in scan(home, subject.needles().values()).values() for path in paths}
        # The scan saw the user where each kind of store keeps it, so that "nothing
        # after" means gone, not unread.
        kinds = {
            "archive Parquet": lambda f: f.startswith("archive/signals/") and ".parquet" in f,
            "batch outputs": lambda f: "/_batch/" in f or f.startswith("archive/_batch"),
        }
        if servers is None:
            kinds |= {
                name: lambda f, name=name: f.startswith(f"{name}.db")
                for name in ("online", "dedupe", "bus", "control")
            }
        missing = [k for k, held in kinds.items() if not any(held(f) for f in seen)]
        assert not missing, f"the scan did not see the user in {missing}: {sorted(seen)}"
        if servers is not None:
            on_servers = servers.scan(list(subject.needles().values()))
            places = " ".join(p for paths in on_servers.values() for p in paths)
            for server in ("hw_dead_letters", "seq", f"{servers.prefix}:"):
                assert server in places, f"the server scan must see the user in {server}"

        created = http.post(
            "/v1/deletions", json={"user_id": subject.user, "legal_basis": "gdpr-art17"}
        )
        assert created.status_code == 202, created.text
        request_id = created.json()["request_id"]
        wait_for(lambda: http.get(f"/v1/deletions/{request_id}").json()["status"] == "completed")
        audit = http.get(f"/v1/deletions/{request_id}").json()
        assert audit["verified_at"] is not None
        for store in audit["stores"]:
            # Each store was checked again by a path of its own, for the user and for
            # each of the user's events the archive held, and nothing was found.
            assert store["verification"]["residue"] == 0, store
            assert store["verification"]["detail"]["event_ids_searched"] == 3000, store
        left = scan(home, subject.needles().values())
        assert not left, f"after completed, still on disk: {left}"
        if servers is not None:
            left = servers.scan(list(subject.needles().values()))
            assert not left, f"after completed, still on the servers: {left}"
        # Every line headwater logged, as its JSON log writes it, extra fields and all
        # (the test's own HTTP client logs its URLs: not ours).
        formatter = JsonFormatter()
        logged = "\n".join(formatter.format(r) for r in caplog.records if r.name != "httpx")
        assert logged
        assert not [n for n in subject.needles().values() if n in logged]
    stack.stop()
    left = scan(home, subject.needles().values())
    assert not left, f"after the stack stopped, on disk: {left}"
    assert len(files_scanned(home)) > 10
