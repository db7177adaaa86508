"""Workloads and load tools shared by the feature, freshness, read and erasure benchmarks.

Signals are made the way the gateway makes them (validated against the shipped
contracts, envelope stamped, MessagePack encoded); servers run as subprocesses pinned
to core 0 while the load generator runs on core 1; latencies are taken open loop,
from the time a request was due, so a slow server cannot hide its queue.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec

from headwater.access.keys import ApiKeys
from headwater.bus import Message
from headwater.config import Settings
from headwater.contract.definition import RegisteredEventType
from headwater.contract.loader import default_definitions
from headwater.contract.signal import decode_signal, encode_signal
from headwater.contract.validator import SignalValidator
from headwater.control import open_control_database
from headwater.demo.traffic import Traffic
from headwater.registry.contracts import ContractRegistry

SERVER_CORE = 0
#: The cores ``taskset`` gives a server: one by default; ``BENCH_SERVER_CORES=0,1`` lets
#: it use the whole machine (its C-level work, SQLite and Delta, runs beside the GIL).
SERVER_CORES = os.environ.get("BENCH_SERVER_CORES", str(SERVER_CORE))
CLIENT_CORE = 1


def signal_messages(
    n: int,
    *,
    users: int = 100_000,
    items: int = 50_000,
    seed: int = 7,
    cover: bool = False,
    spread_s: float = 0.0,
) -> list[Message]:
    """``n`` realistic signals as the gateway puts them on the bus (Zipf users and items).

    ``cover`` adds one event for each declared user the Zipf draw left out, spread
    evenly through the stream, so that every user has a row afterwards. ``spread_s``
    moves the event times (not the receive times) back so that the stream, in bus
    order, covers that many seconds ending now: rows then hold what a platform running
    that long holds (a busy user's minute and hour buckets, for one), not seconds' worth.
    """
    msgs = _signal_messages(n, users=users, items=items, seed=seed, cover=cover)
    if spread_s <= 0:
        return msgs
    end = datetime.now(UTC)
    out = []
    for i, m in enumerate(msgs):
        at = end - timedelta(seconds=spread_s * (1 - i / len(msgs)))
        sig = msgspec.structs.replace(decode_signal(m.value), timestamp=at)
        out.append(Message(m.key, encode_signal(sig)))
    return out


def _signal_messages(n: int, *, users: int, items: int, seed: int, cover: bool) -> list[Message]:
    validator = SignalValidator(RegisteredEventType(d, 1) for d in default_definitions().values())
    traffic = Traffic(users=users, items=items, seed=seed)

    def accepted(events: list[dict[str, Any]]) -> list[Message]:
        now = datetime.now(UTC)
        out = []
        for event in validator.validate_events(events, now=now).accepted:
            event.producer = "bench"
            event.received_at = now
            event.schema_version = 1
            out.append(Message(event.user_id, encode_signal(event)))
        return out

    msgs: list[Message] = []
    while len(msgs) < n:
        msgs.extend(accepted(traffic.batch(500)))
    msgs = msgs[:n]
    if not cover:
        return msgs
    seen = {m.key for m in msgs}
    missing = [f"u{k:07d}" for k in range(users) if f"u{k:07d}" not in seen]
    extra: list[Message] = []
    for first in range(0, len(missing), 500):
        extra.extend(accepted([traffic.event(user_id=u) for u in missing[first : first + 500]]))
    if not extra:
        return msgs
    every = len(msgs) / len(extra)
    mixed: list[Message] = []
    next_at = 0.0
    for i, m in enumerate(msgs):
        while extra and i >= next_at:
            mixed.append(extra.pop())
            next_at += every
        mixed.append(m)
    return mixed + extra


def pin(core: int) -> None:
    """Run this process on one core."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_ms(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """p50, p99 and max of latencies given in milliseconds."""
    return {
        "p50": round(pct(values, 0.50), digits),
        "p99": round(pct(values, 0.99), digits),
        "max": round(max(values), digits),
    }


def prepare_home(home: Path) -> str:
    """A data directory with the shipped contracts and a key for every role a benchmark
    plays (publish every type, read, erase, operate); the key."""
    settings = Settings.from_env(home)
    db = open_control_database(settings.control_url)
    ContractRegistry(db).apply(default_definitions())
    key, _ = ApiKeys(db).create(
        "bench",
        roles=("producer", "reader", "privacy", "operator"),
        event_types=("*",),
        rate_limit_eps=10_000_000,
    )
    db.close()
    return key


def server_env(home: Path) -> dict[str, str]:
    """This environment without HEADWATER_* settings, the data under ``home``; but
    ``HEADWATER_FEATURE_PROCESSES`` passes, so runs can compare one member and two."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HEADWATER_") or k == "HEADWATER_FEATURE_PROCESSES"
    }
    env["HEADWATER_HOME"] = str(home)
    return env


def start_server(
    args: Sequence[str], port: int, env: dict[str, str], *, timeout_s: float = 60
) -> subprocess.Popen[bytes]:
    """A headwater process on the server cores, once it answers /v1/health; its log goes
    to ``server.log`` beside the data."""
    log = Path(env["HEADWATER_HOME"]).parent / "server.log"
    return launch([sys.executable, "-m", "headwater", *args], port, env, log, timeout_s=timeout_s)


def launch(
    argv: Sequence[str], port: int, env: dict[str, str], log: Path, *, timeout_s: float = 60
) -> subprocess.Popen[bytes]:
    """Any server pinned to the server cores, once it answers /v1/health on ``port``.

    Its stderr goes to ``log`` (never to a pipe nobody reads: a full pipe would block
    the server mid-run).
    """
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CORES, *argv],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    if answers_health(proc, port, timeout_s):
        return proc
    proc.kill()
    raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")


def answers_health(proc: subprocess.Popen[bytes], port: int, timeout_s: float) -> bool:
    """Whether ``proc`` answers /v1/health on ``port`` within ``timeout_s`` (False once
    it exited)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1)
        except httpx.HTTPError:
            time.sleep(0.1)
        else:
            return True
    return False


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then wait (consumers finish their batch and commit)."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class RawHttp:
    """A minimal HTTP/1.1 keep-alive connection: pre-built requests, Content-Length replies.

    An httpx request costs the load generator more CPU than a feature read costs the
    server; this costs a few tens of microseconds, so the client is not the bottleneck.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawHttp:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one pre-built request; its status and body."""
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


def get_request(path: str, key: str | None = None) -> bytes:
    """A pre-built keep-alive GET (with ``key`` as its bearer token, if given)."""
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode()


async def open_loop(
    port: int,
    requests: Sequence[bytes],
    rate_rps: float,
    *,
    connections: int = 32,
    check: Callable[[int, bytes], None] | None = None,
) -> tuple[list[float], list[float]]:
    """Send ``requests`` at a fixed rate over a pool of connections.

    Returns the latencies and how late each request left (ms). Each latency runs from
    when the request was due, not when a connection was free: a server that falls
    behind shows its queueing delay (no coordinated omission); the lateness shows
    whether the load generator itself kept up.
    """
    pool: asyncio.Queue[RawHttp] = asyncio.Queue()
    conns = [await RawHttp.open(port) for _ in range(connections)]
    for c in conns:
        pool.put_nowait(c)
    latencies: list[float] = []
    lateness: list[float] = []

    async def one(due: float, raw: bytes) -> None:
        conn = await pool.get()
        lateness.append((time.perf_counter() - due) * 1000)
        try:
            status, body = await conn.request(raw)
        finally:
            pool.put_nowait(conn)
        latencies.append((time.perf_counter() - due) * 1000)
        if check is not None:
            check(status, body)

    tasks = []
    gc.disable()  # a collection in the load generator would show as server latency
    start = time.perf_counter() + 0.05
    for i, raw in enumerate(requests):
        due = start + i / rate_rps
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due, raw)))
    await asyncio.gather(*tasks)
    gc.enable()
    for c in conns:
        c.close()
    return latencies, lateness


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far, every thread of it (``ProcessLookupError``
    once it is gone)."""
    stat = _proc_stat(f"/proc/{pid}/stat")
    if stat is None:
        raise ProcessLookupError(pid)
    return _cpu_ticks(stat[1]) / _TICK


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU so far of each thread of a process, by thread id (the main
    thread has the process's id)."""
    return {tid: ticks / _TICK for tid, (_, ticks) in _thread_ticks(pid).items()}


class CpuSnapshot:
    """The CPU time so far of every thread of a process tree, and of the whole machine.

    ``cores_between(earlier)`` turns two snapshots into cores used: per process (named by
    its command after ``-m headwater``, or its script), per thread (that name and the
    thread's own), the machine's busy cores from ``/proc/stat`` (every process and the
    kernel's own threads: writeback, the journal), and what of those no listed thread
    took (the kernel's threads, and any thread that ended between the two snapshots),
    and each process's reads and writes in MB/s (``/proc/<pid>/io``). Linux only;
    elsewhere the snapshot is empty and so is the answer.
    """

    def __init__(self, roots: Sequence[int]) -> None:
        self.at = time.perf_counter()
        self.machine_ticks = _machine_busy_ticks()
        #: (pid, tid) -> (process name, thread name, CPU ticks so far)
        self.threads: dict[tuple[int, int], tuple[str, str, int]] = {}
        #: pid -> (process name, bytes its read calls returned, bytes it had written to
        #: storage) so far, from ``/proc/<pid>/io``
        self.io: dict[int, tuple[str, int, int]] = {}
        for pid in _tree(roots):
            name = _process_name(pid)
            for tid, (comm, ticks) in _thread_ticks(pid).items():
                self.threads[(pid, tid)] = (name, comm, ticks)
            io = _io_bytes(pid)
            if io is not None:
                self.io[pid] = (name, *io)

    def cores_between(self, earlier: CpuSnapshot) -> dict[str, Any]:
        """Cores used from ``earlier`` to this snapshot."""
        wall = self.at - earlier.at
        if wall <= 0 or not self.threads:
            return {}
        processes: dict[str, float] = {}
        by_thread: list[tuple[float, str]] = []
        for key, (name, comm, ticks) in self.threads.items():
            before = earlier.threads.get(key)
            used = (ticks - (before[2] if before else 0)) / _TICK / wall
            processes[name] = processes.get(name, 0.0) + used
            by_thread.append((used, f"{name} / {comm}"))
        # Python does not name its threads for the OS: those of one process and name
        # are told apart by rank, the busiest first.
        threads: dict[str, float] = {}
        ranks: dict[str, int] = {}
        for used, label in sorted(by_thread, reverse=True):
            ranks[label] = ranks.get(label, 0) + 1
            if used >= 0.005:
                threads[label if ranks[label] == 1 else f"{label} #{ranks[label]}"] = used
        machine = (self.machine_ticks - earlier.machine_ticks) / _TICK / wall
        io: dict[str, list[float]] = {}
        for pid, (name, read, written) in self.io.items():
            _, read_before, written_before = earlier.io.get(pid, (name, 0, 0))
            sums = io.setdefault(name, [0.0, 0.0])
            sums[0] += (read - read_before) / 1e6 / wall
            sums[1] += (written - written_before) / 1e6 / wall
        return {
            "seconds": round(wall, 1),
            "machine_busy": round(machine, 3),
            "processes": {
                k: round(v, 3) for k, v in sorted(processes.items(), key=lambda kv: -kv[1])
            },
            "threads": {k: round(v, 3) for k, v in threads.items()},
            "not_in_these_processes": round(machine - sum(processes.values()), 3),
            # MB/s per process: "read" is every byte its read calls returned (files, from
            # the page cache or not, and sockets: a gateway's request bodies), "written"
            # what it had written to storage (its files' pages, whenever they reach disk).
            "io_mb_per_s": {
                k: {"read": round(r, 1), "written": round(w, 1)}
                for k, (r, w) in sorted(io.items(), key=lambda kv: -kv[1][1])
                if r >= 0.05 or w >= 0.05
            },
        }


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _proc_stat(path: str) -> tuple[str, list[str]] | None:
    """A ``/proc`` stat file: the command's name and the fields after it (the state
    first), or None where the process or thread is gone."""
    text = _read(path)
    if text is None or ")" not in text:
        return None
    return text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()


def _cpu_ticks(fields: list[str]) -> int:
    """User + system ticks from a stat file's fields."""
    return int(fields[11]) + int(fields[12])


def _thread_ticks(pid: int) -> dict[int, tuple[str, int]]:
    """Each thread of a process: its name and CPU ticks so far, by thread id."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    out: dict[int, tuple[str, int]] = {}
    for tid in tids:
        stat = _proc_stat(f"/proc/{pid}/task/{tid}/stat")
        if stat is not None:  # else the thread ended
            out[int(tid)] = (stat[0], _cpu_ticks(stat[1]))
    return out


def _io_bytes(pid: int) -> tuple[int, int] | None:
    """A process's ``rchar`` and ``write_bytes`` from ``/proc/<pid>/io`` (None where
    gone or not readable)."""
    fields = dict(
        line.split(": ", 1)
        for line in (_read(f"/proc/{pid}/io") or "").splitlines()
        if ": " in line
    )
    try:
        return int(fields["rchar"]), int(fields["write_bytes"])
    except (KeyError, ValueError):
        return None


def _machine_busy_ticks() -> int:
    """Every CPU's ticks but idle and I/O wait, from ``/proc/stat`` (0 where absent)."""
    for line in (_read("/proc/stat") or "").splitlines():
        if line.startswith("cpu "):
            v = [int(x) for x in line.split()[1:]]
            # user nice system idle iowait irq softirq steal (guest time is in user)
            return sum(v[:3]) + sum(v[5:8])
    return 0


def _tree(roots: Sequence[int]) -> list[int]:
    """The processes ``roots`` and every descendant of theirs."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        stat = _proc_stat(f"/proc/{entry}/stat") if entry.isdigit() else None
        if stat is not None:
            children.setdefault(int(stat[1][1]), []).append(int(entry))
    out: list[int] = []
    todo = list(roots)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _process_name(pid: int) -> str:
    """``serve``, ``consume features``, ... for a headwater process; else its script."""
    args = (_read(f"/proc/{pid}/cmdline") or "").split("\0")
    if "headwater" in args:
        rest = args[args.index("headwater") + 1 :]
        words = [a for a in rest[:2] if a and not a.startswith("-")]
        return " ".join(words[:2] if words[:1] == ["consume"] else words[:1]) or "headwater"
    scripts = [Path(a).name for a in args if a.endswith(".py")]
    return scripts[0] if scripts else Path(args[0]).name if args[0] else str(pid)
