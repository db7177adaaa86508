"""The online store port's conformance suite, over SQLite, Redis and Redis Cluster."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from headwater.errors import FencedError
from headwater.online import OnlineStore, Position, open_online_store
from tests.conftest import server_url


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis_cluster),
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'online.db'}"
        return
    if request.param == "redis-cluster":
        cluster = request.getfixturevalue("redis_cluster_url")
        url = f"{cluster}/?prefix=t{uuid.uuid4().hex[:10]}&partitions=8"
    else:
        url = f"{server_url('redis')}?prefix=t{uuid.uuid4().hex[:10]}"
    yield url
    store = open_online_store(url)
    for ns in ("user", "item", "other"):
        store.clear(ns)
    store.close()


@pytest.fixture
def store(store_url: str) -> Iterator[OnlineStore]:
    s = open_online_store(store_url)
    yield s
    s.close()


def test_put_and_get(store: OnlineStore) -> None:
    store.put("user", {"u1": b"a", "u2": b"b"})
    assert store.get("user", ["u1", "u2", "u3"]) == {"u1": b"a", "u2": b"b"}
    store.put("user", {"u1": b"a2"})
    assert store.get("user", ["u1"]) == {"u1": b"a2"}
    assert store.get("item", ["u1"]) == {}, "namespaces are separate"
    assert store.get("user", []) == {}


def test_rows_and_positions_are_written_together(store: OnlineStore) -> None:
    store.put(
        "user",
        {"u1": b"x"},
        group="features",
        positions={0: Position(10, 1000), 3: Position(7, 2000)},
    )
    assert store.positions("features") == {0: Position(10, 1000), 3: Position(7, 2000)}
    store.put("user", {}, group="features", positions={0: Position(12, 3000)})
    assert store.positions("features")[0] == Position(12, 3000)
    assert store.positions("other-group") == {}


def test_delete_count_keys_clear(store: OnlineStore) -> None:
    store.put("user", {f"u{i}": b"v" for i in range(1500)})
    assert store.count("user", ["u1", "u2", "nope"]) == 2
    assert store.delete("user", ["u1", "nope"]) == 1
    assert store.count("user", ["u1"]) == 0
    assert len(store.get("user", [f"u{i}" for i in range(1500)])) == 1499
    assert len(store.keys("user")) == 1499
    assert store.clear("user") == 1499
    assert store.keys("user") == []


def test_durable_across_reopen(store_url: str) -> None:
    first = open_online_store(store_url)
    first.put("user", {"u": b"kept"}, group="g", positions={1: Position(5, 9)})
    first.close()
    second = open_online_store(store_url)
    assert second.get("user", ["u"]) == {"u": b"kept"}
    assert second.positions("g") == {1: Position(5, 9)}
    second.close()


def test_binary_values_round_trip(store: OnlineStore) -> None:
    blob = bytes(range(256)) * 40
    store.put("user", {"bin": blob})
    assert store.get("user", ["bin"])["bin"] == blob


def test_a_claim_fences_off_the_previous_owner(store_url: str) -> None:
    old, new = open_online_store(store_url), open_online_store(store_url)
    try:
        first = old.claim("features", [0, 1])
        assert first == {0: 1, 1: 1}
        old.put(
            "user", {"u1": b"old"}, group="features", positions={0: Position(5, 1)}, fence=first
        )
        # Another member takes partition 1 (a rebalance): the old owner may still write
        # partition 0 alone, but nothing that covers partition 1.
        second = new.claim("features", [1])
        assert second == {1: 2}
        with pytest.raises(FencedError) as refused:
            old.put(
                "user",
                {"u2": b"stale"},
                group="features",
                positions={1: Position(9, 2)},
                fence=first,
            )
        assert refused.value.partitions == (1,)
        assert old.get("user", ["u2"]) == {}, "nothing of a fenced write is stored"
        assert 1 not in old.positions("features")
        old.put(
            "user",
            {"u3": b"ok"},
            group="features",
            positions={0: Position(6, 3)},
            fence={0: first[0]},
        )
        new.put(
            "user", {"u2": b"new"}, group="features", positions={1: Position(9, 4)}, fence=second
        )
        assert new.get("user", ["u1", "u2", "u3"]) == {"u1": b"old", "u2": b"new", "u3": b"ok"}
        assert new.positions("features") == {0: Position(6, 3), 1: Position(9, 4)}
        # Another group keeps its own generations.
        assert new.claim("archive", [1]) == {1: 1}
    finally:
        old.close()
        new.close()
