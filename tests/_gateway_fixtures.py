"""Gateway fixtures shared by the gateway and client tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from headwater.config import Settings
from headwater.contract.loader import default_definitions
from headwater.gateway.app import create_app
from headwater.gateway.services import GatewayServices


@pytest.fixture
def services(tmp_path: Path) -> Iterator[GatewayServices]:
    svc = GatewayServices(Settings.from_env(tmp_path / "hw"))
    svc.registry.apply(default_definitions())
    svc.refresh_contracts()
    yield svc
    svc.close()


@pytest.fixture
def client(services: GatewayServices) -> Iterator[TestClient]:
    with TestClient(create_app(services)) as c:
        yield c


@pytest.fixture
def web_key(services: GatewayServices) -> str:
    secret, _ = services.keys.create("web")
    return secret


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
