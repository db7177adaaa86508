"""Hostile input against a real gateway process (``headwater serve``), measured.

A 200 MB chunked body to every route that reads one, with and without a key; a gzip
bomb; 30 connections that send their body too slowly and one that sends its headers
too slowly, while others are served; slow bodies to routes that never read them (30
without a key, health, the dashboard page, the logout), closed all the same;
duplicate keys, NaN, deep nesting and invalid UTF-8. Each gets its documented status,
the server's memory stays bounded, and nothing reaches the bus.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from headwater.access.keys import ApiKeys
from headwater.bus import open_bus
from headwater.config import Settings
from headwater.contract.loader import default_definitions
from headwater.control import open_control_database
from headwater.gateway.server import KEEP_ALIVE_S
from headwater.registry.contracts import ContractRegistry
from tests._gateway_fixtures import problem
from tests._live import free_port, wait_healthy

pytestmark = pytest.mark.slow

TIMEOUT_S = 2.0
#: (method, path) of every route that reads a body.
BODY_ROUTES = [
    ("POST", "/v1/signals"),
    ("POST", "/v1/contracts/check"),
    ("POST", "/v1/contracts"),
    ("PUT", "/v1/contracts/view/owner"),
    ("POST", "/v1/features/batch"),
    ("POST", "/v1/deletions"),
    ("POST", "/v1/admin/keys"),
    ("POST", "/dashboard/session"),
]


def _rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str, Path, int]]:
    home = tmp_path_factory.mktemp("hostile") / "hw"
    db = open_control_database(Settings.from_env(home).control_url)
    ContractRegistry(db).apply(default_definitions())
    admin, _ = ApiKeys(db).create("web", roles=("admin",))
    db.close()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env.update(
        HEADWATER_HOME=str(home),
        HEADWATER_BODY_TIMEOUT=f"{TIMEOUT_S}s",
        HEADWATER_HEADER_TIMEOUT=f"{TIMEOUT_S}s",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "headwater", "serve", "--port", str(port)], env=env
    )
    try:
        wait_healthy(port, proc, timeout=30)
        yield port, admin, home, proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def _status(raw: bytes) -> int:
    line = raw.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1.1 "), raw[:200]
    return int(line.split()[1])


def _send_huge(port: int, method: str, path: str, key: str | None, total: int) -> int:
    """Stream ``total`` bytes as a chunked body; the status the server answered."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    head += "Content-Type: application/json\r\n"
    if key:
        head += f"Authorization: Bearer {key}\r\n"
    sock.sendall(head.encode() + b"\r\n")
    chunk = b"[" + b" " * (64 * 1024 - 1)
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    sock.setblocking(False)
    answer = b""
    try:
        while sent < total:
            try:
                answer += sock.recv(65536)
                break  # the server answered before the body was complete
            except BlockingIOError:
                pass
            try:
                sock.send(frame)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    sock.settimeout(10)
    try:
        while b"\r\n\r\n" not in answer:
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    except (ConnectionResetError, TimeoutError):
        pass
    sock.close()
    return _status(answer)


def test_a_huge_body_to_every_route_is_refused_while_read(
    server: tuple[int, str, Path, int],
) -> None:
    port, admin, _home, pid = server
    before = _rss_kib(pid)
    for method, path in BODY_ROUTES:
        refused = _send_huge(port, method, path, admin, 200 * 1024 * 1024)
        assert refused == 413, (method, path, refused)
        if path != "/dashboard/session":  # the login itself is public
            anonymous = _send_huge(port, method, path, None, 200 * 1024 * 1024)
            assert anonymous == 401, (method, path, anonymous)
    peak = _rss_kib(pid, "VmHWM")
    grown_mb = (peak - before) / 1024
    assert grown_mb < 50, f"server peak RSS grew by {grown_mb:.1f} MB"


def test_a_gzip_bomb_is_refused_after_the_limit(server: tuple[int, str, Path, int]) -> None:
    port, admin, _home, pid = server
    bomb = gzip.compress(b"[" + b" " * (200 * 1024 * 1024) + b"]", compresslevel=9)
    assert len(bomb) < 1024 * 1024
    before = _rss_kib(pid)
    r = httpx.post(
        f"http://127.0.0.1:{port}/v1/signals",
        content=bomb,
        headers={"Authorization": f"Bearer {admin}", "Content-Encoding": "gzip"},
        timeout=30,
    )
    assert "decompressed" in problem(r, 413, "too-large")["detail"]
    assert (_rss_kib(pid, "VmHWM") - before) / 1024 < 50


def test_slow_bodies_and_slow_headers_time_out_while_others_are_served(
    server: tuple[int, str, Path, int],
) -> None:
    port, admin, _home, _pid = server
    slow = []
    for _ in range(30):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(
            b"POST /v1/signals HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
            + f"Authorization: Bearer {admin}\r\n\r\n[".encode()
        )
        slow.append(s)
    trickle = socket.create_connection(("127.0.0.1", port), timeout=10)
    trickle.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    # Meanwhile the gateway serves everyone else.
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        for _ in range(5):
            assert http.get("/v1/health").status_code == 200
            time.sleep(0.1)
    for _ in range(4):
        time.sleep(0.5)
        try:
            trickle.sendall(b"X-Slow: 1\r\n")
        except OSError:
            break
    for s in slow:
        answer = s.recv(65536)
        assert _status(answer) == 408, answer[:200]
        assert b"Connection: close" in answer or b"connection: close" in answer
        s.close()
    assert time.monotonic() - started < TIMEOUT_S + 4
    trickle.settimeout(TIMEOUT_S + 4)
    assert trickle.recv(65536) == b"", "a connection whose headers trickle is closed"
    trickle.close()


def test_slow_bodies_are_cut_off_on_routes_that_do_not_read_them(
    server: tuple[int, str, Path, int],
) -> None:
    # Without a key the route answers 401 before reading the body; health, the page and
    # the logout read none: the connection still closes when the body stops arriving.
    port, _admin, _home, _pid = server
    heads = [b"POST /v1/signals HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n["] * 30
    heads += [
        b"GET /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n[",
        b"DELETE /dashboard/session HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n[",
        b"GET /dashboard HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n[",
    ]
    open_: dict[socket.socket, bytes] = {}
    for head in heads:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(head)
        s.setblocking(False)
        open_[s] = b""
    started = time.monotonic()
    closed_after: list[float] = []
    answers: list[bytes] = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        while open_ and time.monotonic() - started < TIMEOUT_S + 8:
            # Meanwhile the gateway serves everyone else.
            assert http.get("/v1/health").status_code == 200
            for s in list(open_):
                try:
                    s.send(b" ")  # the body trickles: a byte every 0.25 s
                    more = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    more = b""
                if more:
                    open_[s] += more
                    continue
                closed_after.append(time.monotonic() - started)
                answers.append(open_.pop(s))
                s.close()
            time.sleep(0.25)
    for s in open_:
        s.close()
    assert not open_, f"{len(open_)} of {len(heads)} slow bodies still open"
    assert max(closed_after) < TIMEOUT_S + 4, closed_after
    statuses = sorted(_status(a) for a in answers if a)
    assert statuses.count(401) == 30, statuses


def _event(**over: Any) -> dict[str, Any]:
    e = {
        "event_id": "h-1",
        "event_type": "view",
        "user_id": "u1",
        "item_id": "i1",
        "surface": "web",
        "timestamp": datetime.now(UTC).isoformat(),
        "payload": {},
    }
    e.update(over)
    return e


@pytest.mark.parametrize(
    ("name", "body", "status", "says"),
    [
        (
            "duplicate key",
            (
                b'[{"event_id": "h-2", "event_type": "view", "user_id": "victim",'
                b' "user_id": "attacker", "item_id": "i1", "surface": "web",'
                b' "timestamp": "2026-01-01T00:00:00Z", "payload": {}}]'
            ),
            400,
            "user_id",
        ),
        ("NaN", b'[{"event_id": "h-3", "payload": {"dwell_ms": NaN}}]', 400, "not valid JSON"),
        ("Infinity", b'[{"event_id": "h-4", "payload": {"x": Infinity}}]', 400, "not valid JSON"),
        ("deep nesting", b"[" * 100_000 + b"]" * 100_000, 400, "deeper than 64"),
        ("invalid UTF-8", b'[{"event_id": "h-5\xff\xfe"}]', 400, "UTF-8"),
        ("not JSON", b"\x00\x01\x02", 400, "not valid JSON"),
    ],
)
def test_malformed_json_is_a_clear_400(
    server: tuple[int, str, Path, int], name: str, body: bytes, status: int, says: str
) -> None:
    port, admin, _home, _pid = server
    r = httpx.post(
        f"http://127.0.0.1:{port}/v1/signals",
        content=body,
        headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
        timeout=30,
    )
    doc = problem(r, status, "malformed-body")
    assert says.lower() in doc["detail"].lower(), (name, r.text[:300])


def test_nothing_of_it_reached_the_bus(server: tuple[int, str, Path, int]) -> None:
    port, admin, home, _pid = server
    # One valid publish proves the bus is reachable; it must be the only record.
    r = httpx.post(
        f"http://127.0.0.1:{port}/v1/signals",
        content=json.dumps([_event(event_id="h-ok")]),
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert r.status_code == 200, r.text
    bus = open_bus(Settings.from_env(home).bus_url)
    try:
        consumer = bus.consumer("hostile-check")
        records = []
        while batch := consumer.poll(1000, 0.5):
            records.extend(batch)
        consumer.close()
    finally:
        bus.close()
    assert [r.key for r in records] == ["u1"]


def test_an_idle_connection_outlives_the_clients_own_idle_expiry(
    server: tuple[int, str, Path, int],
) -> None:
    """A client drops an idle connection after its own expiry (httpx, and so the SDK:
    5 s); the server keeps it longer, so a request sent just as the client reuses it is
    never met by the server closing it (with equal times, a request failed with no
    answer). The connection stays usable past the client's expiry."""
    port = server[0]
    assert httpx.Limits().keepalive_expiry < KEEP_ALIVE_S  # type: ignore[operator]
    request = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"

    def answer(sock: socket.socket) -> bytes:
        """One whole response: its head, then as many body bytes as it announces."""
        raw = b""
        while b"\r\n\r\n" not in raw:
            more = sock.recv(65536)
            assert more, raw
            raw += more
        head, _, body = raw.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        while len(body) < length:
            more = sock.recv(65536)
            assert more, raw
            body += more
        return head

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        assert _status(answer(sock)) == 200
        time.sleep(httpx.Limits().keepalive_expiry + 1)  # type: ignore[operator]
        sock.sendall(request)
        assert _status(answer(sock)) == 200
