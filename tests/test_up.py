"""``headwater up`` as a process: the gateway's limits hold, the first admin key is shown once.

``up`` serves the API itself (a thread of the embedded stack), so it must run with the
same server configuration as ``headwater serve``: a header that trickles is cut off, a
header over 64 KB is refused.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests._live import free_port

pytestmark = pytest.mark.slow

TIMEOUT_S = 2.0


@contextmanager
def _up(home: Path) -> Iterator[tuple[int, list[str]]]:
    """``headwater up`` on ``home``: its port and the lines it printed until it served."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env.update(
        HEADWATER_HOME=str(home),
        HEADWATER_BATCH_SCHEDULE="off",
        HEADWATER_HEADER_TIMEOUT=f"{TIMEOUT_S}s",
        HEADWATER_BODY_TIMEOUT=f"{TIMEOUT_S}s",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "headwater", "up", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not lines or not lines[-1].startswith("headwater up on"):
            line = proc.stdout.readline()
            assert line, f"headwater up exited: {lines}"
            lines.append(line.rstrip("\n"))
        yield port, lines
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


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
    with _up(home) as (port, lines):
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
    with _up(home) as (_port, again):
        assert not any("hwk_" in line for line in again), again
        assert not any("admin key" in line for line in again), again
