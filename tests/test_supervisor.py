"""``headwater up --processes``: one process per component on the embedded files.

Publish, read, erase through the gateway process; a consumer process killed with
SIGKILL is started again and nothing is lost or counted twice. The feature consumer
runs as two members of one group, each on its share of the partitions.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import msgspec
import pytest

from headwater.access.keys import ApiKeys
from headwater.config import Settings
from headwater.contract.loader import default_definitions
from headwater.control import open_control_database
from headwater.errors import ConfigurationError, HeadwaterError
from headwater.members import Scaling, feature_members
from headwater.registry.contracts import ContractRegistry
from headwater.supervisor import Supervisor
from tests._live import alive, children_of, free_port, headwater_up
from tests.erasure.test_end_to_end import events, wait_for


def _prepare(home: Path) -> str:
    db = open_control_database(Settings.from_env(home).control_url)
    ContractRegistry(db).apply(default_definitions())
    key, _ = ApiKeys(db).create("web", roles=("producer", "reader", "privacy"))
    db.close()
    return key


def test_each_component_in_its_own_process(tmp_path: Path) -> None:
    home = tmp_path / "hw"
    key = _prepare(home)
    settings = msgspec.structs.replace(Settings.from_env(home), feature_processes=2)
    sup = Supervisor(settings, port=free_port(), run_batch=False)
    sup.start()
    try:
        assert set(sup.children) == {
            "features",
            "features-2",
            "platform-erasure",
            "archive",
            "batch-erasure",
            "orchestrator",
            "gateway",
        }
        with httpx.Client(base_url=sup.url, headers={"Authorization": f"Bearer {key}"}) as http:
            # Users on many partitions: each member applies its own share.
            crowd = [f"user-{n}" for n in range(12)]
            for user in ("ann", "bob", *crowd):
                assert http.post("/v1/signals", json=events(user, 10)).status_code == 200

            def views(user: str) -> int:
                body = http.get(f"/v1/users/{user}/features").json()
                return int(body["features"]["counts"].get("view", 0)) if body["found"] else 0

            wait_for(lambda: all(views(u) == 10 for u in ("ann", "bob", *crowd)))

            def split() -> bool:
                # Each member reports its partitions with its heartbeat: a moment after a
                # rebalance, one may still report what it held before.
                (group,) = [g for g in sup.app.status()["groups"] if g["group"] == "features"]
                shares = [set(i["partitions"]) for i in group["instances"]]
                return len(shares) == 2 and all(shares) and not shares[0] & shares[1]

            wait_for(split)

            # A member dies; the other takes its partitions, then it is started again and
            # the group shares them again: every count stays exact.
            for name in ("features", "features-2"):
                member = sup.children[name]
                assert member is not None
                os.kill(member.pid, signal.SIGKILL)
                member.wait()
                for user in ("bob", *crowd):
                    more = events(user, 5, start=10 if name == "features" else 15)
                    assert http.post("/v1/signals", json=more).status_code == 200
                wait_for(lambda name=name: name in sup.check(), timeout=10)
                assert sup.children[name] is not member
            wait_for(lambda: all(views(u) == 20 for u in ("bob", *crowd)))
            assert views("ann") == 10  # nothing counted twice after the restarts

            created = http.post(
                "/v1/deletions", json={"user_id": "ann", "legal_basis": "account-closed"}
            )
            assert created.status_code == 202, created.text
            request_id = created.json()["request_id"]
            audit = wait_for(
                lambda: (
                    (a := http.get(f"/v1/deletions/{request_id}").json())["status"] == "completed"
                    and a
                ),
                timeout=60,
            )
            assert {s["participant"] for s in audit["stores"]} == {
                "online-features",
                "bus-log",
                "dead-letters",
                "idempotency-window",
                "archive",
                "batch-derived",
            }
            assert not http.get("/v1/users/ann/features").json()["found"]
            assert views("bob") == 20
    finally:
        sup.stop()
    assert all(p is not None and p.poll() is not None for p in sup.children.values())


def test_up_processes_stops_every_process_on_sigterm(tmp_path: Path) -> None:
    # A fresh home: a key, no contracts. `up --processes` registers the shipped ones, as
    # `up` does, so the first publish is accepted.
    home = tmp_path / "hw"
    db = open_control_database(Settings.from_env(home).control_url)
    key, _ = ApiKeys(db).create("web", roles=("producer", "reader", "privacy"))
    db.close()
    port = free_port()
    env = {
        **os.environ,
        "HEADWATER_HOME": str(home),
        "HEADWATER_BATCH_SCHEDULE": "off",
        "HEADWATER_FEATURE_PROCESSES": "2",
    }
    with headwater_up(port, env, "--processes") as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "one process per component" in line, line
        assert httpx.get(f"http://127.0.0.1:{port}/v1/health").status_code == 200
        published = httpx.post(
            f"http://127.0.0.1:{port}/v1/signals",
            json=events("ann", 3),
            headers={"Authorization": f"Bearer {key}"},
        )
        assert published.status_code == 200, published.text
        children = children_of(proc.pid)
        # The six components, a second feature member and the batch scheduler.
        assert len(children) == 8
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in children)


def test_the_feature_consumer_runs_as_told_or_grows_to_one_process_per_core(
    tmp_path: Path,
) -> None:
    auto = Settings.from_env(tmp_path)
    assert auto.feature_processes is None
    assert feature_members(auto, partitions=8, cores=1) == (1, 1)
    assert feature_members(auto, partitions=8, cores=2) == (1, 2)
    assert feature_members(auto, partitions=4, cores=16) == (1, 4)  # a partition each
    two = msgspec.structs.replace(auto, feature_processes=2)
    assert feature_members(two, partitions=8, cores=1) == (2, 2)  # as told, whatever the cores
    assert feature_members(two, partitions=1, cores=4) == (1, 1)


def test_a_feature_group_behind_gets_another_member_until_it_has_caught_up(
    tmp_path: Path,
) -> None:
    home = tmp_path / "hw"
    key = _prepare(home)
    sup = Supervisor(
        Settings.from_env(home),
        port=free_port(),
        run_batch=False,
        cores=2,
        scaling=Scaling(up_lag_s=1.0, settle_s=1.0, down_after_s=2.0, check_s=0.2),
    )
    sup.start()
    try:
        assert sup.feature_members == (1, 2)
        assert "features-2" not in sup.children
        users = [f"user-{n}" for n in range(12)]
        with httpx.Client(base_url=sup.url, headers={"Authorization": f"Bearer {key}"}) as http:

            def views(user: str) -> int:
                body = http.get(f"/v1/users/{user}/features").json()
                return int(body["features"]["counts"].get("view", 0)) if body["found"] else 0

            # The only member stops reading: the group falls behind and gets a second.
            first = sup.children["features"]
            assert first is not None
            os.kill(first.pid, signal.SIGSTOP)
            try:
                for user in users:
                    assert http.post("/v1/signals", json=events(user, 10)).status_code == 200
                wait_for(lambda: not sup.check() and "features-2" in sup.children, timeout=30)
                # It takes the partitions over once the stopped member's session lapses.
                wait_for(lambda: all(views(u) == 10 for u in users), timeout=60)
            finally:
                os.kill(first.pid, signal.SIGCONT)
            # Caught up and staying so: the added member stops; the first goes on alone.
            added = sup.children["features-2"]
            wait_for(lambda: not sup.check() and "features-2" not in sup.children, timeout=30)
            assert added is not None
            assert added.poll() is not None
            for user in users:
                more = events(user, 5, start=10)
                assert http.post("/v1/signals", json=more).status_code == 200
            wait_for(lambda: all(views(u) == 15 for u in users), timeout=60)
    finally:
        sup.stop()


def test_a_component_that_fails_to_start_leaves_no_process_behind(tmp_path: Path) -> None:
    """`start` raises when a component exits while starting; the components it had
    started are stopped first, not left running with no one to stop them."""
    home = tmp_path / "hw"
    _prepare(home)
    settings = msgspec.structs.replace(Settings.from_env(home), feature_processes=2)
    sup = Supervisor(settings, port=free_port(), run_batch=False)
    broken = next(child for child in sup._children if child.name == "archive")
    broken.args = ("consume", "no-such-store")
    with pytest.raises(HeadwaterError, match="archive exited with 2 while starting"):
        sup.start()
    procs = [proc for proc in sup.children.values() if proc is not None]
    assert {"features", "platform-erasure", "batch-erasure", "orchestrator"} <= {
        name for name, proc in sup.children.items() if proc is not None
    }
    assert all(proc.poll() is not None for proc in procs), "every started process stopped"
    assert not sup.members.members, "the feature group's added member stopped too"

    def ours(pid: int) -> bool:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        return f"HEADWATER_HOME={home}".encode() in environ

    left = [pid for pid in children_of(os.getpid()) if alive(pid) and ours(pid)]
    assert not left, f"processes of this stack still running: {left}"


@pytest.mark.parametrize("raw", ["0", "-1", "two", "1.5"])
def test_a_feature_process_count_that_is_not_one_or_more_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("HEADWATER_FEATURE_PROCESSES", raw)
    with pytest.raises(ConfigurationError, match="HEADWATER_FEATURE_PROCESSES"):
        Settings.from_env(tmp_path)
    monkeypatch.setenv("HEADWATER_FEATURE_PROCESSES", "3")
    assert Settings.from_env(tmp_path).feature_processes == 3


def test_up_processes_killed_leaves_no_process_behind(tmp_path: Path) -> None:
    # SIGKILL gives the supervisor no moment to stop its processes: each notices its
    # parent is gone and stops as on SIGTERM (the gateway frees its port).
    port = free_port()
    env = {
        **os.environ,
        "HEADWATER_HOME": str(tmp_path / "hw"),
        "HEADWATER_FEATURE_PROCESSES": "2",
    }
    with headwater_up(port, env, "--processes") as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "one process per component" in line, line
        children = children_of(proc.pid)
        assert len(children) == 8  # six components, a second feature member, the batch
        proc.kill()
        proc.wait()
        wait_for(lambda: not any(alive(pid) for pid in children), timeout=60)
        with pytest.raises(httpx.ConnectError):  # the port is free: nothing answers
            httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2)
