"""End to end: publish through the gateway, the consumer updates rows, the API reads them
with as_of covering the event; on the SQLite and the Redis online store."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from headwater.application import Application
from headwater.config import Settings
from headwater.gateway.app import create_app
from headwater.runtime import ConsumerRuntime
from tests._gateway_fixtures import auth
from tests.conftest import server_url


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    if request.param == "redis":
        prefix = f"t{uuid.uuid4().hex[:10]}"
        monkeypatch.setenv("HEADWATER_ONLINE_URL", f"{server_url('redis')}?prefix={prefix}")
    return Settings.from_env(tmp_path / "hw")


@pytest.fixture
def stack(settings: Settings) -> Iterator[tuple[Application, TestClient, ConsumerRuntime]]:
    hw = Application(settings)
    hw.register_shipped_contracts()
    runtime = hw.consumer("features", batch_size=500)
    reader, _ = hw.keys.create("recommendations", roles=("reader",), kind="service")
    with TestClient(create_app(hw), headers=auth(reader)) as client:
        yield hw, client, runtime
    runtime.close()
    hw.online.clear("user")
    hw.close()


def drain(runtime: ConsumerRuntime) -> None:
    while runtime.step():
        pass
    runtime.step()  # one idle poll: as_of moves to now


def event(i: int, etype: str, user: str, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": f"{user}-{i}",
        "event_type": etype,
        "user_id": user,
        "item_id": f"item-{i}",
        "surface": "web",
        "timestamp": (datetime.now(UTC) - timedelta(seconds=30 - i)).isoformat(),
        "payload": {},
    }
    base.update(over)
    return base


def test_publish_then_read_fresh_features(
    stack: tuple[Application, TestClient, ConsumerRuntime],
) -> None:
    hw, client, runtime = stack
    # Views of the web team and a rating of the reviews team: a key for every type.
    key, _ = hw.keys.create("web", roles=("producer", "reader"), event_types=("*",))
    batch = [
        event(1, "view", "alice"),
        event(2, "view", "alice"),
        event(3, "click", "alice"),
        event(4, "view", "alice", item_id="item-1"),
        event(5, "rating", "alice", surface="reviews", payload={"rating": 4}),
        event(6, "view", "bob"),
    ]
    published_at = time.time()
    assert client.post("/v1/signals", json=batch, headers=auth(key)).status_code == 200
    drain(runtime)
    answer = client.get("/v1/users/alice/features").json()
    f = answer["features"]
    assert f["counts"] == {"view": 3, "click": 1, "rating": 1}
    assert [x["item_id"] for x in f["recently_viewed"]] == ["item-1", "item-2"]
    assert [x["item_id"] for x in f["recently_clicked"]] == ["item-3"]
    assert f["rating"] == {"mean": 4.0, "count": 1}
    assert f["window_counts"]["1h"] == {"view": 3, "click": 1, "rating": 1}
    assert sorted(f["active_surfaces_24h"]) == ["reviews", "web"]
    as_of = datetime.fromisoformat(answer["as_of"]).timestamp()
    assert as_of >= published_at - 0.01, "as_of covers the event"
    assert answer["stale"] is False
    assert answer["budgets_s"]["recently_viewed"] == 60.0
    selected = client.get("/v1/users/alice/features?features=counts,rating").json()
    assert set(selected["features"]) == {"counts", "rating"}
    many = client.post("/v1/features/batch", json={"user_ids": ["bob", "nobody", "alice"]})
    users = many.json()["users"]
    assert [u["user_id"] for u in users] == ["bob", "nobody", "alice"]
    assert users[0]["features"]["counts"] == {"view": 1}
    assert users[1]["found"] is False


def test_answer_turns_stale_when_the_consumer_stops(
    stack: tuple[Application, TestClient, ConsumerRuntime],
) -> None:
    hw, client, runtime = stack
    key, _ = hw.keys.create("web", roles=("producer", "reader"))
    client.post("/v1/signals", json=[event(1, "view", "carol")], headers=auth(key))
    drain(runtime)
    assert client.get("/v1/users/carol/features").json()["stale"] is False
    # The consumer stops; time passes beyond the view budget (simulated by tightening it).
    hw.features.engine.budgets_s["view"] = 0.2
    time.sleep(0.4)
    answer = client.get("/v1/users/carol/features").json()
    assert answer["stale"] is True
    assert "recently_viewed" in answer["stale_features"]
    assert answer["age_s"] >= 0.2


def test_bad_batch_read(stack: tuple[Application, TestClient, ConsumerRuntime]) -> None:
    _, client, _ = stack
    assert client.post("/v1/features/batch", content=b"{").status_code == 400
    assert (
        client.post("/v1/features/batch", content=b"{", headers={"Authorization": ""}).status_code
        == 401
    )
    ids = [f"u{i}" for i in range(1001)]
    assert client.post("/v1/features/batch", json={"user_ids": ids}).status_code == 413


def test_python_read_clients(stack: tuple[Application, TestClient, ConsumerRuntime]) -> None:
    import asyncio

    from headwater.client import AsyncFeatureClient, FeatureClient
    from headwater.errors import AuthenticationError, PermissionDeniedError
    from tests._live import serve

    hw, client, runtime = stack
    key, _ = hw.keys.create("web", roles=("producer", "reader"))
    client.post(
        "/v1/signals", json=[event(1, "view", "dana"), event(2, "click", "dana")], headers=auth(key)
    )
    drain(runtime)
    with serve(client.app) as url:  # type: ignore[arg-type]
        with FeatureClient(url, "hwk_0_wrong") as nobody, pytest.raises(AuthenticationError):
            nobody.get("dana")
        producer, _ = hw.keys.create("web")
        with (
            FeatureClient(url, producer) as not_a_reader,
            pytest.raises(PermissionDeniedError, match=r"HTTP 403 forbidden: .*role reader"),
        ):
            not_a_reader.get("dana")
        with FeatureClient(url, key) as reader:
            dana = reader.get("dana", ["counts"])
            assert dana.features == {"counts": {"view": 1, "click": 1}}
            assert dana.stale is False
            assert dana.as_of is not None
            both = reader.get_many(["dana", "nobody"])
            assert [u.found for u in both] == [True, False]

        async def read() -> bool:
            async with AsyncFeatureClient(url, key) as areader:
                return (await areader.get("dana")).found

        assert asyncio.run(read())


#: User ids the contract accepts (1 to 128 characters of any kind) that a URL path
#: does not carry as they are.
AWKWARD_IDS = ["a/b", "x?features=counts", "dana#2", "e%2Ff", "sp ace", "ü@mail.example", ".."]


def test_the_read_clients_read_any_user_id_as_itself(
    stack: tuple[Application, TestClient, ConsumerRuntime],
) -> None:
    """Each awkward id is read through the path as itself: not another user (``dana#2``
    is not ``dana``), not another route (``..``), not a query (``x?features=counts``)."""
    import asyncio

    from headwater.client import AsyncFeatureClient, FeatureClient
    from tests._live import serve

    hw, client, runtime = stack
    key, _ = hw.keys.create("web", roles=("producer", "reader"))
    sent = [event(1, "view", "dana")]
    sent += [event(i + 2, "click", user) for i, user in enumerate(AWKWARD_IDS)]
    assert client.post("/v1/signals", json=sent, headers=auth(key)).status_code == 200
    drain(runtime)
    with serve(client.app) as url, FeatureClient(url, key) as reader:  # type: ignore[arg-type]
        for user in AWKWARD_IDS:
            got = reader.get(user)
            assert (got.user_id, got.found) == (user, True), user
            assert got.features["counts"] == {"click": 1}, user
            assert reader.get(user, ["counts"]).features == {"counts": {"click": 1}}
        assert reader.get("dana").features["counts"] == {"view": 1}

        async def read() -> list[tuple[str, bool]]:
            async with AsyncFeatureClient(url, key) as areader:
                return [((a := await areader.get(u)).user_id, a.found) for u in AWKWARD_IDS]

        assert asyncio.run(read()) == [(u, True) for u in AWKWARD_IDS]


def test_the_read_clients_report_an_unreachable_api_as_unavailable() -> None:
    """No server, a server that never answers, an answer that is not the API's: each is
    BackendUnavailableError, which a caller retries or falls back on, and never a
    transport library's own exception."""
    import asyncio
    import socket

    from headwater.client import AsyncFeatureClient, FeatureClient
    from headwater.errors import BackendUnavailableError
    from tests._live import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    mute = f"http://127.0.0.1:{silent.getsockname()[1]}"
    try:
        for url in (closed, mute):
            with FeatureClient(url, "k", timeout=0.3) as reader:
                with pytest.raises(BackendUnavailableError, match="features API"):
                    reader.get("dana")
                with pytest.raises(BackendUnavailableError, match="features API"):
                    reader.get_many(["dana"])

            async def read(url: str = url) -> None:
                async with AsyncFeatureClient(url, "k", timeout=0.3) as areader:
                    with pytest.raises(BackendUnavailableError, match="features API"):
                        await areader.get("dana")
                    with pytest.raises(BackendUnavailableError, match="features API"):
                        await areader.get_many(["dana"])

            asyncio.run(read())
    finally:
        silent.close()


def test_an_answer_that_is_not_the_apis_is_unavailable() -> None:
    """A 200 whose body is not the features answer (a proxy's page, a cut body)."""
    import httpx

    from headwater.client import FeatureClient
    from headwater.errors import BackendUnavailableError

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<html>maintenance</html>")

    with (
        FeatureClient("http://api", "k", transport=httpx.MockTransport(handler)) as reader,
        pytest.raises(BackendUnavailableError, match="features API: unreadable answer"),
    ):
        reader.get("dana")
