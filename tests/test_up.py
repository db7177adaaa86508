"""``headwater up`` as a process: the gateway's limits hold, the first admin key is shown once.

``up`` serves the API itself (a thread of the embedded stack), so it must run with the
same server configuration as ``headwater serve``: a header that trickles is cut off, a
header over 64 KB is refused.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from headwater.access.keys import ApiKeys
from headwater.config import Settings
from headwater.control import open_control_database
from tests._live import alive, children_of, cmdline, free_port, headwater_up
from tests.erasure.test_end_to_end import events, wait_for

pytestmark = pytest.mark.slow

TIMEOUT_S = 2.0


@contextmanager
def _up(home: Path, **extra: str) -> Iterator[tuple[int, list[str], int]]:
    """``headwater up`` on ``home`` (``extra``: more environment): its port, the lines it
    printed until it served, and its pid."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env.update(
        HEADWATER_HOME=str(home),
        HEADWATER_BATCH_SCHEDULE="off",
        HEADWATER_HEADER_TIMEOUT=f"{TIMEOUT_S}s",
        HEADWATER_BODY_TIMEOUT=f"{TIMEOUT_S}s",
        **extra,
    )
    with headwater_up(port, env) as proc:
        assert proc.stdout is not None
        lines: list[str] = []
        while not lines or not lines[-1].startswith("headwater up on"):
            line = proc.stdout.readline()
            assert line, f"headwater up exited: {lines}"
            lines.append(line.rstrip("\n"))
        yield port, lines, proc.pid
        if proc.poll() is None:  # still running: it stops cleanly
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0


def test_up_runs_the_feature_consumers_other_members_beside_its_thread(tmp_path: Path) -> None:
    home = tmp_path / "hw"
    db = open_control_database(Settings.from_env(home).control_url)
    key, _ = ApiKeys(db).create("web", roles=("producer", "reader", "operator"))
    db.close()
    with _up(home, HEADWATER_FEATURE_PROCESSES="2") as (port, _lines, pid):
        members = [c for c in children_of(pid) if "consume features" in cmdline(c)]
        assert len(members) == 1, members  # the thread is the other member
        url = f"http://127.0.0.1:{port}"
        users = [f"user-{n}" for n in range(12)]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:

            def member_pids() -> set[int]:
                status = http.get("/v1/status").json()
                (group,) = [g for g in status["groups"] if g["group"] == "features"]
                return {i["pid"] for i in group["instances"] if i["partitions"]}

            # Both hold a share of the partitions, then the users' events arrive.
            wait_for(lambda: member_pids() == {pid, members[0]})
            for user in users:
                assert http.post("/v1/signals", json=events(user, 10)).status_code == 200

            def views(user: str) -> int:
                body = http.get(f"/v1/users/{user}/features").json()
                return int(body["features"]["counts"].get("view", 0)) if body["found"] else 0

            wait_for(lambda: all(views(u) == 10 for u in users))
            # One scrape shows what both members observed (a shared metrics directory).
            scraped = http.get("/metrics").text
            seen = sum(
                float(line.rsplit(" ", 1)[1])
                for line in scraped.splitlines()
                if line.startswith("headwater_freshness_seconds_count{")
            )
            assert seen == 10 * len(users), seen
    assert not any(alive(c) for c in members)


def test_a_feature_member_stops_when_up_is_killed(tmp_path: Path) -> None:
    # SIGKILL leaves up no moment to stop its members: each notices on its own.
    with _up(tmp_path / "hw", HEADWATER_FEATURE_PROCESSES="2") as (_port, _lines, pid):
        members = [c for c in children_of(pid) if "consume features" in cmdline(c)]
        assert len(members) == 1, members
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not alive(members[0]), timeout=30)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (a header line every 0.5 s)."""
    deadline = time.monotonic() + seconds
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            sock.sendall(b"X-Slow: 1\r\n")
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def test_up_bounds_headers_and_shows_the_admin_key_once(tmp_path: Path) -> None:
    home = tmp_path / "hw"
    with _up(home) as (port, lines, _pid):
        assert any(line.strip().startswith("admin key: hwk_") for line in lines), lines
        with socket.create_connection(("127.0.0.1", port), timeout=10) as trickle:
            trickle.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
            assert _closed_within(trickle, TIMEOUT_S + 4), "a trickled header is cut off"
        try:
            huge = httpx.get(f"http://127.0.0.1:{port}/v1/health", headers={"X-Big": "a" * 200_000})
        except httpx.HTTPError:
            pass  # the connection was closed: refused
        else:
            assert huge.status_code != 200
        assert httpx.get(f"http://127.0.0.1:{port}/v1/health").status_code == 200
    # The same home again: the admin key exists, nothing secret is printed.
    with _up(home) as (_port, again, _pid):
        assert not any("hwk_" in line for line in again), again
        assert not any("admin key" in line for line in again), again


@pytest.mark.parametrize("processes", [False, True], ids=["up", "up --processes"])
def test_up_on_a_taken_port_says_so_in_one_line_and_starts_nothing(
    tmp_path: Path, processes: bool
) -> None:
    """A port already taken was a Python traceback from ``up`` (after every consumer had
    started), and a bare "gateway exited with 1" from ``up --processes``."""
    import subprocess
    import sys

    home = tmp_path / "hw"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env.update(HEADWATER_HOME=str(home), HEADWATER_BATCH_SCHEDULE="off")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        args = [sys.executable, "-m", "headwater", "up", "--port", str(port)]
        done = subprocess.run(
            [*args, "--processes"] if processes else args,
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    expected = (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(choose another port with --port)"
    )
    assert done.stderr.strip().splitlines() == [expected], done.stderr
    assert not (home / "bus.db").exists(), "nothing was started"


def test_a_stack_whose_api_does_not_start_stops_what_it_started(tmp_path: Path) -> None:
    import threading

    from headwater.errors import HeadwaterError
    from headwater.stack import EmbeddedStack

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        stack = EmbeddedStack(Settings.from_env(tmp_path / "hw"), port=port)
        with pytest.raises(HeadwaterError, match=f"did not start on http://127.0.0.1:{port}"):
            stack.start()
    running = [t.name for t in threading.enumerate() if t.name.startswith("consumer-")]
    assert not running, running
