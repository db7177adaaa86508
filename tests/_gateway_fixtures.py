"""Gateway fixtures shared by the gateway and client tests."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from headwater.application import Application
from headwater.bus.base import Bus
from headwater.config import Settings
from headwater.contract.signal import event_id_of
from headwater.gateway.app import create_app


@pytest.fixture
def hw(tmp_path: Path) -> Iterator[Application]:
    app = Application(Settings.from_env(tmp_path / "hw"))
    app.register_shipped_contracts()
    yield app
    app.close()


@pytest.fixture
def client(hw: Application) -> Iterator[TestClient]:
    with TestClient(create_app(hw)) as c:
        yield c


@pytest.fixture
def web_key(hw: Application) -> str:
    secret, _ = hw.keys.create("web")
    return secret


@pytest.fixture
def admin_key(hw: Application) -> str:
    secret, _ = hw.keys.create("admins", roles=("admin",))
    return secret


def make_key(hw: Application, team: str, *roles: str, **scope: Any) -> str:
    """A key of ``team`` with ``roles`` (and producer scope options)."""
    secret, _ = hw.keys.create(team, roles=roles, **scope)
    return secret


def ids_on_bus(bus: Bus) -> list[str]:
    """The event ids of every signal on the bus, sorted (read by a group of its own)."""
    consumer = bus.consumer(f"check-{time.time_ns()}")
    ids: list[str] = []
    while records := consumer.poll(1000, 0.2):
        ids.extend(event_id_of(r.value) for r in records)
    consumer.close()
    return sorted(ids)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def problem(response: Any, status: int, kind: str) -> dict[str, Any]:
    """The problem document of an error answer, checked: its media type, ``status``, the
    ``type`` of ``kind``, a title and a detail."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == "application/problem+json", response.headers
    doc: dict[str, Any] = response.json()
    assert doc["type"] == f"https://headwater.dev/problems/{kind}", doc
    assert doc["status"] == status, doc
    assert doc["title"], doc
    assert doc["detail"], doc
    return doc


def problem_answer(status: int, kind: str, detail: str, **headers: str) -> Any:
    """A gateway's error answer as an ``httpx.Response``, for a scripted transport."""
    import httpx

    doc = {
        "type": f"https://headwater.dev/problems/{kind}",
        "title": kind,
        "status": status,
        "detail": detail,
        "instance": "/v1/signals",
    }
    return httpx.Response(
        status,
        headers={"Content-Type": "application/problem+json", **headers},
        content=json.dumps(doc).encode(),
    )
