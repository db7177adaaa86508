"""End-to-end freshness on the embedded stack: publish accepted -> readable through the API.

``headwater up`` (gateway, SQLite bus, feature consumer, erasure participants and
orchestrator in one process, its default settings) runs pinned to core 0 (to both cores
with ``BENCH_SERVER_CORES=0,1``). This process, on core 1, sends realistic batches of
500 signals open loop at a fixed rate, 20,000 events/s by default: through the producer
SDK (``--client sdk``, the default: 16 ``AsyncHeadwaterClient`` producers, each with one
batch in flight, the SDK giving each event its ULID), or as pre-encoded JSON bodies
posted with httpx, 16 at most in flight (``--client http``, as bench_gateway.py does;
before 2026-12-05 this was the only client, and it queued every batch due in httpx's
pool, whose cost per request grows with the queue: past about 50,000 events/s that
client, not the server, set the rate). Each batch carries one probe: a view by a user id
seen nowhere else. A poller asks the batch read API (``POST /v1/features/batch``, only
the ``counts`` feature) for every probe not yet visible, every ``--poll-ms``; a probe's
freshness runs from the moment its publish was accepted (the 200 arrived) to the first
answer that shows it. That is what a user sees, within the poll interval. The lower
bound runs to when that read was sent: the difference is the read's own round trip,
reported too.

Baseline, same run: the publish latency itself (request sent -> 200), which bounds
what the consumer can be blamed for. If the server exposes ``/metrics``, its
``headwater_freshness_seconds`` histogram is read at the end (bucket estimates).

    .venv/bin/python bench/bench_freshness.py [--rate 20000] [--seconds 30] [--client sdk]

``accepted_eps_per_10s`` gives the accepted rate per 10 s window: whether a rate was
sustained, not only reached. ``cpu_cores_steady`` gives, from 30% to 90% of the publish
window, the cores each process of the run and each of its threads used (from
``/proc/<pid>/task/<tid>/stat``; the client is this script), the machine's busy cores
(``/proc/stat``), what of those no listed thread took (the kernel's own threads), and
each process's reads and writes in MB/s (``io_mb_per_s``, from ``/proc/<pid>/io``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit
from _workload import (
    CLIENT_CORE,
    SERVER_CORES,
    CpuSnapshot,
    pin,
    prepare_home,
    server_env,
    start_server,
    stop_server,
    summary_ms,
)
from headwater.client import AsyncHeadwaterClient
from headwater.demo.traffic import Traffic
from headwater.wire import new_event_ids

BATCH = 500
T = TypeVar("T")
#: Publishes in flight at most. Batches due while all are out wait their turn (counted in
#: ``client_send_lateness_ms``): a pool with thousands of queued requests costs the
#: client more CPU per request than the gateway spends on it.
IN_FLIGHT = 16


def batches_of(n: int, run: str, seed: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """``n`` batches of 499 realistic events and one probe; (probe user, events). The
    events carry no event id: the producer SDK gives each a ULID, as it does for a
    producer that leaves the id to it (the HTTP client sends the SDK's ids too)."""
    traffic = Traffic(users=100_000, items=50_000, seed=seed)
    out = []
    for i in range(n):
        events = traffic.batch(BATCH - 1)
        probe = f"probe-{run}-{i}"
        probe_event = traffic.event("web", user_id=probe, event_type="view", age=timedelta(0))
        events.insert(i % BATCH, probe_event)
        for event in events:
            del event["event_id"]
        out.append((probe, events))
    return out


class Probes:
    """Probes published and not yet seen, and the freshness of those seen."""

    def __init__(self) -> None:
        self.pending: dict[str, tuple[float, float]] = {}  # user -> (sent, accepted)
        # (sent, accepted -> answer that showed it, accepted -> that read was sent)
        self.fresh_ms: list[tuple[float, float, float]] = []
        self.read_ms: list[float] = []  # round trip of each poll


class Publishes:
    """What the publishers saw: each publish's latency and lateness, the events accepted
    and when, and the probes now waiting to be seen."""

    def __init__(self, probes: Probes) -> None:
        self.probes = probes
        self.accepted = 0
        self.publish_ms: list[float] = []
        self.lateness_ms: list[float] = []  # due -> sent
        self.accepted_at: list[tuple[float, int]] = []

    def sending(self, due: float) -> float:
        sent = time.perf_counter()
        self.lateness_ms.append((sent - due) * 1000)
        return sent

    def answered(self, probe: str, sent: float, done: float, accepted: int) -> None:
        self.accepted += accepted
        self.accepted_at.append((done, accepted))
        self.publish_ms.append((done - sent) * 1000)
        self.probes.pending[probe] = (sent, done)


async def open_loop(
    batches: Sequence[tuple[str, T]],
    rate_rps: float,
    one: Callable[[float, str, T], Coroutine[Any, Any, None]],
) -> float:
    """``one(due, probe, batch)`` started for each batch at its due time, whatever is still
    in flight; the seconds until every one has finished."""
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.05
    for i, (probe, batch) in enumerate(batches):
        due = start + i / rate_rps
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due, probe, batch)))
    await asyncio.gather(*tasks)
    return time.perf_counter() - start


async def http_publisher(
    client: httpx.AsyncClient,
    url: str,
    key: str,
    batches: list[tuple[str, bytes]],
    rate_rps: float,
    seen: Publishes,
) -> float:
    """Pre-encoded bodies posted with httpx, ``IN_FLIGHT`` at most at once."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(due: float, probe: str, body: bytes) -> None:
        async with slots:
            sent = seen.sending(due)
            r = await client.post(url, content=body, headers=headers)
            done = time.perf_counter()
        if r.status_code not in (200, 207):
            raise RuntimeError(f"{r.status_code}: {r.text[:300]}")
        seen.answered(probe, sent, done, int(msgspec.json.decode(r.content)["accepted"]))

    return await open_loop(batches, rate_rps, one)


async def poller(
    client: httpx.AsyncClient, base: str, probes: Probes, every_s: float, stop: asyncio.Event
) -> int:
    polls = 0
    while True:
        waiting = list(probes.pending)
        if not waiting and stop.is_set():
            return polls
        if waiting:
            asked = time.perf_counter()
            r = await client.post(
                f"{base}/v1/features/batch",
                content=msgspec.json.encode({"user_ids": waiting, "features": ["counts"]}),
                headers={"Content-Type": "application/json"},
            )
            seen_at = time.perf_counter()
            polls += 1
            probes.read_ms.append((seen_at - asked) * 1000)
            for answer in msgspec.json.decode(r.content)["users"]:
                if answer["found"] and answer["features"]["counts"].get("view"):
                    sent, accepted = probes.pending.pop(answer["user_id"])
                    probes.fresh_ms.append(
                        (sent, (seen_at - accepted) * 1000, (asked - accepted) * 1000)
                    )
            # Sleep what is left of the interval (a slow answer delays the next poll).
            await asyncio.sleep(max(0.0, every_s - (time.perf_counter() - asked)))
        else:
            await asyncio.sleep(every_s)


async def sdk_publisher(
    base: str,
    key: str,
    batches: list[tuple[str, list[dict[str, Any]]]],
    rate_rps: float,
    seen: Publishes,
    *,
    through_httpx: bool = False,
) -> float:
    """Through the producer SDK: ``IN_FLIGHT`` producers (``AsyncHeadwaterClient``, one
    batch in flight each); a batch due takes the next idle one and ``publish``es."""
    producers = [
        AsyncHeadwaterClient(
            base,
            key,
            batch_size=BATCH,
            flush_interval=3600.0,
            transport=httpx.AsyncHTTPTransport() if through_httpx else None,
        )
        for _ in range(IN_FLIGHT)
    ]
    idle: asyncio.Queue[AsyncHeadwaterClient] = asyncio.Queue()
    for producer in producers:
        idle.put_nowait(producer)

    async def one(due: float, probe: str, events: list[dict[str, Any]]) -> None:
        producer = await idle.get()
        try:
            sent = seen.sending(due)
            report = await producer.publish(events)
            done = time.perf_counter()
        finally:
            idle.put_nowait(producer)
        if report.rejected:
            raise RuntimeError(f"rejected: {report.rejected[0]}")
        seen.answered(probe, sent, done, report.accepted)

    try:
        return await open_loop(batches, rate_rps, one)
    finally:
        for producer in producers:
            await producer.aclose()


def per_window(accepted_at: list[tuple[float, int]], seconds: float) -> list[int]:
    """Events accepted per second in each ``seconds`` window from the first answer on
    (the last window partial): whether a rate was sustained, not only reached."""
    if not accepted_at:
        return []
    first = min(t for t, _ in accepted_at)
    sums: dict[int, int] = {}
    for t, n in accepted_at:
        k = int((t - first) // seconds)
        sums[k] = sums.get(k, 0) + n
    return [round(sums.get(k, 0) / seconds) for k in range(max(sums) + 1)]


def histogram_quantiles(text: str, qs: tuple[float, ...]) -> dict[str, Any]:
    """Quantile estimates (upper bucket bounds) of headwater_freshness_seconds, all types."""
    buckets: dict[float, float] = {}
    pattern = re.compile(r'^headwater_freshness_seconds_bucket\{.*le="([^"]+)".*\}\s+(\S+)$')
    for line in text.splitlines():
        m = pattern.match(line)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets[le] = buckets.get(le, 0.0) + float(m.group(2))
    if not buckets:
        return {}
    total = buckets[float("inf")]
    out: dict[str, Any] = {"events": int(total)}
    for q in qs:
        bound = next((le for le, n in sorted(buckets.items()) if n >= q * total), float("inf"))
        out[f"p{round(q * 100)}_le_s"] = bound
    return out


async def cpu_in_steady_phase(roots: Sequence[int], seconds: float) -> dict[str, Any]:
    """Cores used by the server's processes and threads, this client and the whole
    machine, from 30% to 90% of the publish window (its start and end left out)."""
    await asyncio.sleep(0.3 * seconds)
    first = await asyncio.to_thread(CpuSnapshot, roots)
    await asyncio.sleep(0.6 * seconds)
    last = await asyncio.to_thread(CpuSnapshot, roots)
    return last.cores_between(first)


async def drive(
    args: argparse.Namespace, port: int, key: str, roots: Sequence[int]
) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    n = int(args.seconds * args.rate / BATCH)
    batches = batches_of(n, uuid.uuid4().hex[:6], seed=args.seed)
    if args.client == "http":
        bodies = [
            (
                probe,
                msgspec.json.encode(
                    [
                        {**e, "event_id": event_id}
                        for e, event_id in zip(events, new_event_ids(len(events)), strict=True)
                    ]
                ),
            )
            for probe, events in batches
        ]
    # The workload is built ahead and held to the end: millions of dicts the collector
    # would otherwise go over again and again while the client publishes. A producer
    # builds its events as they happen; frozen, they cost the client what they cost it.
    gc.freeze()
    # Frozen is not enough: the SDK's per-event dicts (each event given its id) refer to
    # the workload's values, and each collection reads the header of every one of them,
    # scattered over gigabytes: about 0.05 of a core at 60,000 events/s, on the cores the
    # server shares (BENCHMARKS.md). A producer's own events are young and in cache. The
    # collector stays off while the load runs, as in _workload.open_loop, unless
    # ``--client-gc``.
    if not args.client_gc:
        gc.disable()
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    probes = Probes()
    seen = Publishes(probes)
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with (
        httpx.AsyncClient(timeout=60, limits=limits) as pub_client,
        httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {key}"}) as poll_client,
    ):
        poll_task = asyncio.create_task(
            poller(poll_client, base, probes, args.poll_ms / 1000, stop)
        )
        rate_rps = args.rate / BATCH
        cpu_task = asyncio.create_task(cpu_in_steady_phase(roots, args.seconds))
        if args.client == "http":
            url = f"{base}/v1/signals"
            elapsed = await http_publisher(pub_client, url, key, bodies, rate_rps, seen)
        else:
            elapsed = await sdk_publisher(
                base, key, batches, rate_rps, seen, through_httpx=args.sdk_httpx
            )
        stop.set()
        try:
            polls = await asyncio.wait_for(poll_task, timeout=60)
        except TimeoutError:
            polls = -1
        client_cores = (time.process_time() - cpu_started) / (time.perf_counter() - wall_started)
        cpu = await cpu_task if cpu_task.done() else {}
        cpu_task.cancel()
        gc.enable()
        metrics = await pub_client.get(f"{base}/metrics")
    warm = min(s for s, _, _ in probes.fresh_ms) + args.warmup if probes.fresh_ms else 0.0
    steady = [f for s, f, _ in probes.fresh_ms if s >= warm]
    lower = [max(0.0, f) for s, _, f in probes.fresh_ms if s >= warm]
    return {
        "batches": n,
        "accepted_events": seen.accepted,
        "achieved_eps": round(seen.accepted / elapsed),
        "accepted_eps_per_10s": per_window(seen.accepted_at, 10.0),
        "probes": len(probes.fresh_ms),
        "probes_never_seen": len(probes.pending),
        "probes_after_warmup": len(steady),
        "freshness_ms": summary_ms(steady, 1),
        "freshness_lower_bound_ms": summary_ms(lower, 1),
        "read_round_trip_ms": summary_ms(probes.read_ms, 1),
        "publish_latency_ms": summary_ms(seen.publish_ms, 1),
        "client_send_lateness_ms": summary_ms(seen.lateness_ms, 1),
        "client_collector": "on" if args.client_gc else "off while publishing",
        "client_cores": round(client_cores, 3),
        "cpu_cores_steady": cpu,
        "polls": polls,
        "server_histogram": histogram_quantiles(metrics.text, (0.5, 0.99))
        if metrics.status_code == 200
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20_000, help="events/s")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of probes left out")
    parser.add_argument("--poll-ms", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=8731)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--processes", action="store_true", help="headwater up --processes: one per component"
    )
    parser.add_argument(
        "--client",
        choices=("sdk", "http"),
        default="sdk",
        help="publish through the producer SDK (AsyncHeadwaterClient), or post pre-encoded "
        "bodies with httpx (the client's own cost left out as far as possible)",
    )
    parser.add_argument(
        "--sdk-httpx",
        action="store_true",
        help="the SDK's producers post through httpx (its path before 2026-12-06), not "
        "on their own HTTP/1.1 connections",
    )
    parser.add_argument(
        "--client-gc",
        action="store_true",
        help="keep the client's cyclic collector on while it publishes (before 2026-12-07)",
    )
    args = parser.parse_args()
    pin(CLIENT_CORE)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "hw"
        key = prepare_home(home)
        env = server_env(home)
        command = ["up", "--home", str(home), "--port", str(args.port)]
        if args.processes:
            command.append("--processes")
        server = start_server(command, args.port, env)
        try:
            figures = asyncio.run(drive(args, args.port, key, [os.getpid()]))
        finally:
            stop_server(server)
    f, p = figures["freshness_ms"], figures["publish_latency_ms"]
    emit(
        "freshness",
        {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "server_cores": SERVER_CORES,
            "deployment": "headwater up --processes" if args.processes else "headwater up",
            "client": args.client + (" (through httpx)" if args.sdk_httpx else ""),
            "target_rate_eps": args.rate,
            "poll_interval_ms": args.poll_ms,
            **figures,
            "freshness_p99_target_ms": 500,
            "freshness_p99_vs_publish_p99": round(f["p99"] / p["p99"], 2) if p["p99"] else None,
        },
    )


if __name__ == "__main__":
    main()
