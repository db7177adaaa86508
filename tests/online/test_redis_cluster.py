"""The online store on a Redis Cluster: key layout, round trips, SCAN on every master,
and driver errors named at the boundary."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from headwater._redis import cluster_nodes, is_cluster_url
from headwater.bus.base import partition_for
from headwater.errors import BackendUnavailableError, ConfigurationError, OnlineStoreError
from headwater.online import Position, open_online_store
from headwater.online.redis_cluster import RedisClusterOnlineStore
from tests._redis_cluster import LocalCluster, local_cluster

T = TypeVar("T")

pytestmark = pytest.mark.redis_cluster


@pytest.fixture
def store(redis_cluster_url: str) -> Any:
    url = f"{redis_cluster_url}/?prefix=c{uuid.uuid4().hex[:10]}&partitions=8"
    s = open_online_store(url)
    assert isinstance(s, RedisClusterOnlineStore)
    yield s
    s.clear("user")
    s.close()


def test_cluster_urls_are_recognised() -> None:
    assert is_cluster_url("redis+cluster://a:7000,b:7001")
    assert is_cluster_url("redis://a:7000?cluster=true&prefix=x")
    assert not is_cluster_url("redis://a:6379/0?prefix=x")
    assert cluster_nodes("redis+cluster://u:p@a:7000,b:7001/?prefix=x") == [
        ("a", 7000),
        ("b", 7001),
    ]
    with pytest.raises(ConfigurationError, match="partition count"):
        open_online_store("redis+cluster://127.0.0.1:1")


def test_a_partitions_rows_position_and_fence_share_one_slot(store: Any) -> None:
    client = store._redis
    users = [f"user-{i}" for i in range(40)]
    store.claim("features", list(range(8)))
    store.put(
        "user",
        dict.fromkeys(users, b"row"),
        group="features",
        positions={p: Position(1, 1) for p in range(8)},
        fence=dict.fromkeys(range(8), 1),
    )
    for user in users:
        p = partition_for(user, 8)
        row = client.keyslot(store._key("user", user))
        assert row == client.keyslot(f"{{{store.prefix}:p{p}}}:positions:features")
        assert row == client.keyslot(f"{{{store.prefix}:p{p}}}:fence:features")
    assert store.get("user", users) == dict.fromkeys(users, b"row")


def test_reading_one_user_is_one_command(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put("user", {"alice": b"a", "bob": b"b"})
    sent: list[tuple[Any, ...]] = []
    real = store._redis.execute_command

    def counting(*args: Any, **kwargs: Any) -> Any:
        sent.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(store._redis, "execute_command", counting)
    assert store.get("user", ["alice"]) == {"alice": b"a"}
    assert [a[0] for a in sent] == ["GET"]


def test_keys_and_clear_scan_every_master(store: Any, redis_cluster: LocalCluster) -> None:
    users = [f"u{i}" for i in range(200)]
    store.put("user", dict.fromkeys(users, b"v"))
    client = store._redis
    holders = {client.get_node_from_key(store._key("user", u)).name for u in users}
    assert len(holders) > 1, "the rows spread over more than one master"
    assert sorted(store.keys("user")) == sorted(users)
    assert store.count("user", users) == 200
    assert store.delete("user", users[:50]) == 50
    assert store.clear("user") == 150
    assert store.keys("user") == []


def test_a_plain_client_on_a_cluster_names_the_node(redis_cluster: LocalCluster) -> None:
    # The failure of issue 22: a single-node client meets MOVED; it says so, with the node.
    store = open_online_store(f"redis://127.0.0.1:{redis_cluster.ports[0]}?prefix=p")
    from redis.cluster import RedisCluster

    cluster = RedisCluster.from_url(f"redis://127.0.0.1:{redis_cluster.ports[0]}")
    here = cluster.get_node("127.0.0.1", redis_cluster.ports[0])
    # A user whose row lives on another master than the one the URL names.
    user = next(
        u
        for u in (f"someone-{i}" for i in range(100))
        if cluster.get_node_from_key(f"p:user:{u}") != here
    )
    cluster.close()
    try:
        with pytest.raises(OnlineStoreError, match=r"MovedError: \d+ 127\.0\.0\.1:\d+"):
            store.get("user", [user])
    finally:
        store.close()


def test_acknowledged_writes_survive_their_master_being_killed(
    tmp_path: Path, redis_cluster: LocalCluster
) -> None:
    """Puts waited for a replica (``WAIT 1``): after the master of their slot is
    SIGKILLed and its replica promoted, every acknowledged row and the position are
    there, and writing goes on against the promoted master."""
    with local_cluster(tmp_path / "cluster") as cluster:
        store = open_online_store(f"{cluster.url}/?prefix=f&partitions=4")
        users = [u for u in (f"u{i}" for i in range(400)) if partition_for(u, 4) == 0]
        fence = store.claim("features", [0])
        for n, user in enumerate(users, 1):
            store.put(
                "user",
                {user: f"row{n}".encode()},
                group="features",
                positions={0: Position(n, n)},
                fence=fence,
            )
        killed, promoted = cluster.fail_over("{f:p0}:positions:features")
        assert promoted != killed
        assert store.positions("features")[0] == Position(len(users), len(users))
        rows = store.get("user", users)
        assert rows == {u: f"row{n}".encode() for n, u in enumerate(users, 1)}
        # The promoted master has no replica yet: nothing to wait for, writes go on.
        store.put("user", {users[0]: b"after"}, group="features", fence=fence)
        assert store.get("user", [users[0]]) == {users[0]: b"after"}
        store.close()


def _acknowledged(write: Callable[[], T], within_s: float = 15.0) -> T:
    """``write`` retried until a replica acknowledges it within ``wait_ms``: on a busy
    machine a replica that is up can take longer than that to answer one ``WAIT``."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return write()
        except BackendUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_write_no_replica_acknowledged_is_not_acknowledged(tmp_path: Path) -> None:
    """The online store's put and every write of the idempotency window (a claim with
    its user index, a confirmation) wait for a replica: with the replica of their master
    stalled, each fails with ``BackendUnavailableError`` after ``wait_ms`` instead of
    being acknowledged, and succeeds again (the same call, retried) once it answers."""
    from redis.cluster import RedisCluster

    from headwater.dedupe import open_idempotency_window

    with local_cluster(tmp_path / "cluster") as cluster:
        url = f"{cluster.url}/?prefix=w&partitions=4&wait_ms=300"
        store = open_online_store(url)
        window = open_idempotency_window(url, window_s=600)
        master = cluster.master_of("{w:p0}:user:x")
        # A hash tag on the master of partition 0 puts every key of the window's claim
        # (the id, the user index, the token's confirmation) on that master too.
        client = RedisCluster.from_url(f"redis://127.0.0.1:{master}")
        tag = next(t for t in map(str, range(10_000)) if client.get_node_from_key(t).port == master)
        client.close()
        user = next(u for u in (f"{{{tag}}}u{i}" for i in range(100)) if partition_for(u, 4) == 0)
        event, token = f"{{{tag}}}e", f"{{{tag}}}t"
        # Before the stall: acknowledged (the replica count is learnt on the way).
        _acknowledged(lambda: store.put("user", {user: b"before"}))
        replica = cluster.replica_of(master)
        with cluster.stalled(replica):
            with pytest.raises(BackendUnavailableError, match="0 of 1 replicas"):
                store.put("user", {user: b"row"})
            with pytest.raises(BackendUnavailableError, match="0 of 1 replicas"):
                window.claim([(event, user)], token)
            with pytest.raises(BackendUnavailableError, match="0 of 1 replicas"):
                window.confirm(token)
        # The replica catches up after the stall: the same calls, retried until it does.
        _acknowledged(lambda: store.put("user", {user: b"row"}))
        assert _acknowledged(lambda: window.claim([(event, user)], token)).mine == {event}
        _acknowledged(lambda: window.confirm(token))
        assert window.seen([event]) == {event}
        assert store.get("user", [user]) == {user: b"row"}
        window.close()
        store.close()


def test_the_erasure_verification_scans_every_master(redis_cluster_url: str) -> None:
    """The independent check of an erasure finds a user's keys on any master, the
    online rows (hash-tagged) and the idempotency window's entries (by key or value),
    and nothing once both stores erased the user."""
    from headwater._redis import RedisConnection
    from headwater.dedupe import open_idempotency_window
    from headwater.erasure.checks import redis_scan
    from headwater.erasure.verify import Subject

    url = f"{redis_cluster_url}/?prefix=v{uuid.uuid4().hex[:8]}&partitions=8"
    store = open_online_store(url)
    window = open_idempotency_window(url, window_s=3600)
    conn = RedisConnection(url, what="verification")
    users = [f"erased-{i}" for i in range(12)]
    try:
        store.put("user", dict.fromkeys(users, b"row"))
        window.remember([(f"ev-{u}", u) for u in users])
        check = redis_scan(conn.client, conn.prefix, cluster=conn.cluster)
        subjects = [Subject(u, f"s-{u}") for u in users]
        _, found = check(subjects)
        # The row, the window's index of the user, and its entry (whose value names the user).
        assert all(found[u][0] == 3 for u in users), found
        assert store.delete("user", users) == len(users)
        assert window.erase_users(users) == dict.fromkeys(users, 1)
        _, found = check(subjects)
        assert all(found[u][0] == 0 for u in users), found
    finally:
        conn.close()
        window.close()
        store.close()


def test_a_cluster_window_is_not_shared_with_the_rate_limiter() -> None:
    from headwater.config import _shared_limiter

    cluster = "redis+cluster://r1:7000,r2:7000"
    assert _shared_limiter("/tmp", "postgresql://pg/hw", cluster) == "postgresql://pg/hw"
    assert _shared_limiter("/tmp", "postgresql://pg/hw", "redis://r:6379") == "redis://r:6379"
