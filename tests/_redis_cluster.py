"""A private Redis Cluster on free local ports: three masters, one replica each.

Each node is ``redis-server --cluster-enabled yes`` in a directory of its own, without
persistence; ``redis-cli --cluster create --cluster-replicas 1`` joins them. The node
timeout is short (1 s) so that a killed master's replica takes over within seconds.
Used by the test fixture ``redis_cluster_url`` and by ``bench/bench_reads.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LocalCluster", "local_cluster", "redis_server_binary"]

NODE_TIMEOUT_MS = 1000


def redis_server_binary() -> str | None:
    """``redis-server`` on the PATH (or in /usr/bin), if installed."""
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """Ports that are free, as is each one's cluster-bus port (port + 10000)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 55000 and port not in ports and _free(port + 10000):
            ports.append(port)
    return ports


def _cli(*args: str, timeout: float = 30.0) -> str:
    cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
    done = subprocess.run(
        [cli, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    return done.stdout + done.stderr


class LocalCluster:
    """The running nodes: their ports, processes, and who is master of what."""

    def __init__(self, ports: list[int], processes: dict[int, subprocess.Popen[bytes]]) -> None:
        self.ports = ports
        self.processes = processes
        self.commands: dict[int, list[str]] = {}

    @property
    def url(self) -> str:
        """``redis+cluster://`` naming every node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def info(self, port: int) -> str:
        """``CLUSTER INFO`` as one node sees it."""
        return _cli("-p", str(port), "cluster", "info", timeout=5)

    def masters(self) -> list[int]:
        """Ports of the nodes that are masters now (alive ones only)."""
        return [
            port
            for port in self.alive()
            if "role:master" in _cli("-p", str(port), "info", "replication", timeout=5)
        ]

    def alive(self) -> list[int]:
        return [p for p, proc in self.processes.items() if proc.poll() is None]

    def kill(self, port: int) -> None:
        """SIGKILL one node (no shutdown, no goodbye to the others)."""
        proc = self.processes[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def restart(self, port: int) -> None:
        """Start a killed node again (its nodes.conf makes it rejoin, as a replica)."""
        self.processes[port] = subprocess.Popen(
            self.commands[port], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def replica_of(self, master: int) -> int:
        """The port of a replica connected to ``master``."""
        info = _cli("-p", str(master), "info", "replication", timeout=5)
        for line in info.splitlines():
            if line.startswith("slave0:"):
                fields = dict(item.split("=", 1) for item in line.split(":", 1)[1].split(","))
                return int(fields["port"].strip())
        raise LookupError(f"node {master} has no connected replica")

    @contextmanager
    def stalled(self, port: int) -> Iterator[None]:
        """SIGSTOP one node for the block (it stays connected, and answers nothing)."""
        proc = self.processes[port]
        proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            proc.send_signal(signal.SIGCONT)

    def master_of(self, key: str) -> int:
        """The port of the master that holds ``key``'s slot now."""
        from redis.cluster import RedisCluster

        client = RedisCluster.from_url(f"redis://127.0.0.1:{self.alive()[0]}")
        try:
            return int(client.get_node_from_key(key).port)
        finally:
            client.close()

    def fail_over(self, key: str, timeout: float = 30.0) -> tuple[int, int]:
        """SIGKILL the master of ``key``'s slot and wait until its replica is promoted
        and the cluster is ok again; ``(killed, promoted)`` ports. The killed node stays
        down: a master without persistence that restarted before its replica took over
        would come back empty, still master of its slots, and its replica would copy
        the emptiness (see the README's scale-out section)."""
        victim = self.master_of(key)
        self.kill(victim)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                promoted = self.master_of(key)
            except Exception:
                promoted = victim
            if promoted != victim:
                self.wait_ok(timeout)
                return victim, promoted
            time.sleep(0.1)
        raise TimeoutError(f"no replica of {victim} was promoted within {timeout} s")

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node reports ``cluster_state:ok``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in self.info(p) for p in self.alive()):
                return
            time.sleep(0.1)
        raise TimeoutError(f"Redis Cluster on {self.ports} not ok after {timeout} s")

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)


def _answers(port: int) -> bool:
    try:
        return "PONG" in _cli("-p", str(port), "ping", timeout=5)
    except subprocess.TimeoutExpired:
        return False  # something else holds the port, or the node is slow: not yet


class ClusterStartError(TimeoutError):
    """The nodes did not come up; another attempt on other ports may succeed."""


@contextmanager
def local_cluster(
    directory: Path, *, masters: int = 3, replicas: int = 1
) -> Iterator[LocalCluster]:
    """Start the cluster in ``directory``, wait for ``cluster_state:ok``, stop it after."""
    server = redis_server_binary()
    if server is None:
        raise FileNotFoundError("redis-server is not installed")
    ports = _free_ports(masters * (1 + replicas))
    processes: dict[int, subprocess.Popen[bytes]] = {}
    cluster = LocalCluster(ports, processes)
    try:
        for port in ports:
            node_dir = directory / str(port)
            node_dir.mkdir(parents=True, exist_ok=True)
            cluster.commands[port] = [
                    server,
                    "--port", str(port),
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                    "--save", "",
                    "--appendonly", "no",
                    "--bind", "127.0.0.1",
                    "--dir", str(node_dir),
            ]  # fmt: skip
            cluster.restart(port)
        deadline = time.monotonic() + 20
        while True:
            exited = {p: n.returncode for p, n in processes.items() if n.poll() is not None}
            if exited:
                # Most likely another process took a port between choosing and binding.
                raise ClusterStartError(f"redis-server nodes exited while starting: {exited}")
            if all(_answers(p) for p in ports):
                break
            if time.monotonic() > deadline:
                raise ClusterStartError(f"redis-server nodes on {ports} did not start")
            time.sleep(0.05)
        out = _cli(
            "--cluster", "create",
            *(f"127.0.0.1:{p}" for p in ports),
            "--cluster-replicas", str(replicas),
            "--cluster-yes",
            timeout=60,
        )  # fmt: skip
        if "[OK]" not in out:
            raise RuntimeError(f"redis-cli --cluster create failed: {out[-2000:]}")
        cluster.wait_ok()
        if replicas:
            # Replicas are attached once each master counts them (failover needs them).
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                roles = [_cli("-p", str(p), "info", "replication", timeout=5) for p in ports]
                if sum("role:slave" in r and "master_link_status:up" in r for r in roles) == (
                    masters * replicas
                ):
                    break
                time.sleep(0.1)
        yield cluster
    finally:
        cluster.stop()
