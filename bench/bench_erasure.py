"""Erasure on the embedded stack under load (issue 7): request -> every store confirmed.

``headwater up`` (its defaults: the orchestrator passes every 0.5 s) runs pinned to
core 0. This process, on core 1, keeps realistic signals flowing at ``--rate`` events/s
(pre-encoded batches of 500, event ids renewed on every pass over the batches) for the
whole run. First each erasure target gets a few signals of its own (so every store
holds something of it), then:

- steady: one ``POST /v1/deletions`` every ``--every`` seconds for ``--steady``
  seconds; each request is followed with ``GET /v1/deletions/{id}`` every 100 ms until
  its status is ``completed`` (every participant confirmed and the request closed).
  Latency: request sent -> the answer that says completed (this includes the wait of
  the status polls behind the load's publishes, in this process and at the gateway).
  Also per request, on the server's clock: request received -> completed (the
  erasure itself), and the last store's confirmation -> completed (the independent
  verification of every store and the close).
- burst: the signals stop (``--burst-under-load`` keeps them flowing), then ``--burst``
  requests are sent at once (16 in flight), and the time until the last one completes
  is taken (the open count of ``GET /v1/deletions`` reaches zero).

Baseline, same run: the latency of the ``POST /v1/deletions`` itself (request
accepted, erasure event on the bus), and the publish latency of the signal batches.

    .venv/bin/python bench/bench_erasure.py [--rate 20000] [--steady 30] [--burst 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit
from _workload import (
    CLIENT_CORE,
    SERVER_CORES,
    pin,
    prepare_home,
    server_env,
    start_server,
    stop_server,
    summary_ms,
)
from headwater.demo.traffic import Traffic

BATCH = 500
#: Status polls that failed at the HTTP level (each is simply asked again).
POLL_ERRORS: list[str] = []
#: Deletion requests whose connection dropped before an answer (each is sent again).
POST_ERRORS: list[str] = []


class Load:
    """Signals at a fixed rate until stopped: a pool of batches, ids renewed per pass."""

    def __init__(self, seconds_of_batches: float, rate: float, seed: int) -> None:
        traffic = Traffic(users=100_000, items=50_000, seed=seed)
        self.token = traffic._run.encode()  # the id prefix, renewed on every pass
        n = max(1, int(seconds_of_batches * rate / BATCH))
        self.bodies = [msgspec.json.encode(traffic.batch(BATCH)) for _ in range(n)]
        self.rate = rate
        self.accepted = 0
        self.failed = 0
        self.sent = 0
        self.publish_ms: list[float] = []
        self.stop = asyncio.Event()

    def body(self, i: int) -> bytes:
        body = self.bodies[i % len(self.bodies)]
        laps = i // len(self.bodies)
        return body if not laps else body.replace(self.token, f"{laps:08x}".encode())

    async def run(self, client: httpx.AsyncClient, url: str, key: str) -> float:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        tasks: set[asyncio.Task[None]] = set()

        async def one(body: bytes) -> None:
            t0 = time.perf_counter()
            try:
                r = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError:
                # An overloaded server drops connections; count it, keep the load going.
                self.failed += 1
                return
            self.publish_ms.append((time.perf_counter() - t0) * 1000)
            if r.status_code not in (200, 207):
                self.failed += 1
                return
            self.accepted += int(msgspec.json.decode(r.content)["accepted"])

        start = time.perf_counter()
        i = 0
        while not self.stop.is_set():
            delay = start + i * BATCH / self.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(self.body(i)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        self.sent = i * BATCH
        await asyncio.gather(*tasks)
        return time.perf_counter() - start


async def erase(
    client: httpx.AsyncClient, base: str, key: str, user: str, accepted_ms: list[float]
) -> tuple[str, float]:
    t0 = time.perf_counter()
    for attempt in range(3):
        try:
            r = await client.post(
                f"{base}/v1/deletions",
                content=msgspec.json.encode({"user_id": user, "legal_basis": "gdpr-art17"}),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )
            break
        except httpx.TransportError:
            # A kept-alive connection the server closed as it was reused: sent again
            # (counted; a second request for the user is harmless here).
            POST_ERRORS.append(user)
            if attempt == 2:
                raise
    accepted_ms.append((time.perf_counter() - t0) * 1000)
    if r.status_code != 202:
        raise RuntimeError(f"deletion {r.status_code}: {r.text[:300]}")
    return str(msgspec.json.decode(r.content)["request_id"]), t0


async def until_completed(
    client: httpx.AsyncClient, base: str, request_id: str, t0: float, timeout_s: float
) -> tuple[float, dict[str, Any]]:
    """Latency to completed (ms, inf on timeout) and the final audit."""
    audit: dict[str, Any] = {}
    while time.perf_counter() - t0 < timeout_s:
        try:
            r = await client.get(f"{base}/v1/deletions/{request_id}")
        except httpx.HTTPError:
            POLL_ERRORS.append(request_id)  # a dropped poll: ask again at the next one
            await asyncio.sleep(0.1)
            continue
        if r.status_code == 200:
            audit = msgspec.json.decode(r.content)
            if audit["status"] == "completed":
                return (time.perf_counter() - t0) * 1000, audit
        await asyncio.sleep(0.1)
    return float("inf"), audit


def per_store_ms(audits: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Request received -> each store's confirmation, per store (server clock)."""
    took: dict[str, list[float]] = {}
    for audit in audits:
        received = datetime.fromisoformat(audit["received_at"])
        for store in audit.get("stores", []):
            if store.get("confirmed_at"):
                at = datetime.fromisoformat(store["confirmed_at"])
                took.setdefault(store["participant"], []).append(
                    (at - received).total_seconds() * 1000
                )
    return {name: summary_ms(values, 0) for name, values in sorted(took.items())}


def received_to_completed_ms(audits: list[dict[str, Any]]) -> dict[str, float] | None:
    """Request received -> completed on the server's clock: the erasure itself, without
    the client's and the gateway's queues under load (``request_to_completed_ms`` has
    them: the status polls wait behind the load's publishes)."""
    took = [
        (
            datetime.fromisoformat(a["completed_at"]) - datetime.fromisoformat(a["received_at"])
        ).total_seconds()
        * 1000
        for a in audits
        if a.get("completed_at")
    ]
    return summary_ms(took, 0) if took else None


def confirmed_to_completed_ms(audits: list[dict[str, Any]]) -> dict[str, float] | None:
    """The last store's confirmation -> completed (server clock): the independent
    verification of every store, then the close, as the orchestrator's pass finds it."""
    took = []
    for audit in audits:
        confirmed = [s["confirmed_at"] for s in audit.get("stores", []) if s.get("confirmed_at")]
        if audit.get("completed_at") and confirmed:
            last = max(datetime.fromisoformat(c) for c in confirmed)
            done = datetime.fromisoformat(audit["completed_at"])
            took.append((done - last).total_seconds() * 1000)
    return summary_ms(took, 0) if took else None


def slowest(audits: list[dict[str, Any]], n: int = 5) -> list[dict[str, Any]]:
    """The requests slowest to complete, each store's confirmation time beside (ms after
    the request was received, server clock): which store held each one up."""
    rows = []
    for audit in audits:
        if not audit.get("completed_at"):
            continue
        received = datetime.fromisoformat(audit["received_at"])
        done = datetime.fromisoformat(audit["completed_at"])
        stores = {
            s["participant"]: round(
                (datetime.fromisoformat(s["confirmed_at"]) - received).total_seconds() * 1000
            )
            for s in audit.get("stores", [])
            if s.get("confirmed_at")
        }
        rows.append(
            {
                "completed_ms": round((done - received).total_seconds() * 1000),
                **stores,
                "attempts": {
                    s["participant"]: len(s.get("history", []))
                    for s in audit.get("stores", [])
                    if len(s.get("history", [])) > 1
                },
                "store_seconds": {
                    s["participant"]: a["evidence"]["seconds"]
                    for s in audit.get("stores", [])
                    for a in s.get("history", [])
                    if a.get("outcome") == "applied" and "seconds" in (a.get("evidence") or {})
                },
                "refused": refusals(audit),
            }
        )
    return sorted(rows, key=lambda r: -r["completed_ms"])[:n]


def rebuilt(audits: list[dict[str, Any]]) -> dict[str, int]:
    """Per store, the erasures after which it rebuilt its file (an old copy of what was
    erased was left in a page: ``VACUUM``)."""
    out: dict[str, int] = {}
    for audit in audits:
        for store in audit.get("stores", []):
            for attempt in store.get("history", []):
                evidence = attempt.get("evidence") or {}
                scrub = evidence.get("scrub") or evidence.get("online_scrub") or {}
                if isinstance(scrub, dict) and scrub.get("vacuumed"):
                    out[store["participant"]] = out.get(store["participant"], 0) + 1
    return out


def refused_by_store(audits: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per store, the confirmations the verification sent back, by the file or key kind
    it found the user in (a path's last part)."""
    out: dict[str, dict[str, int]] = {}
    for audit in audits:
        for refusal in refusals(audit):
            places = out.setdefault(refusal["participant"], {})
            for found in refusal["found"]:
                for place in found or {"?": 1}:
                    name = str(place).rsplit("/", 1)[-1]
                    places[name] = places.get(name, 0) + 1
    return out


def refusals(audit: dict[str, Any]) -> list[dict[str, Any]]:
    """The confirmations the verification sent back: when (ms after the request), which
    store, and where it found the user (file or key -> occurrences)."""
    received = datetime.fromisoformat(audit["received_at"])
    out = []
    for store in audit.get("stores", []):
        for attempt in store.get("history", []):
            if attempt.get("method") != "verification":
                continue
            detail = (attempt.get("evidence") or {}).get("detail") or {}
            checks = detail.get("checks", [detail])
            out.append(
                {
                    "at_ms": round(
                        (datetime.fromisoformat(attempt["at"]) - received).total_seconds() * 1000
                    ),
                    "participant": store["participant"],
                    "found": [c.get("hits") or c.get("keys") for c in checks],
                    # What the store's last attempt before it said of its own files.
                    "scrub": next(
                        (
                            (a.get("evidence") or {}).get("scrub")
                            for a in reversed(store.get("history", []))
                            if a.get("method") != "verification" and a["at"] <= attempt["at"]
                        ),
                        None,
                    ),
                }
            )
    return out


async def open_count(client: httpx.AsyncClient, base: str) -> int:
    r = await client.get(f"{base}/v1/deletions", params={"status": "open", "limit": 1})
    return int(msgspec.json.decode(r.content)["counts"].get("open", 0))


async def seed(client: httpx.AsyncClient, base: str, key: str, users: list[str]) -> None:
    """A few signals for every target user, so each store has something to erase."""
    traffic = Traffic(users=1000, items=50_000, seed=99)
    events = [traffic.event(user_id=u) for u in users for _ in range(3)]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    for first in range(0, len(events), BATCH):
        body = msgspec.json.encode(events[first : first + BATCH])
        r = await client.post(f"{base}/v1/signals", content=body, headers=headers)
        if r.status_code not in (200, 207):
            raise RuntimeError(f"seed {r.status_code}: {r.text[:300]}")


async def drive(args: argparse.Namespace, port: int, key: str) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {key}"}
    base = f"http://127.0.0.1:{port}"
    run = uuid.uuid4().hex[:6]
    steady_users = [f"er-{run}-s{i}" for i in range(int(args.steady / args.every))]
    burst_users = [f"er-{run}-b{i}" for i in range(args.burst)]
    load = Load(args.pool_seconds, args.rate, args.seed)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with (
        httpx.AsyncClient(timeout=120, limits=limits, headers=auth) as load_client,
        httpx.AsyncClient(timeout=120, limits=limits, headers=auth) as client,
    ):
        await seed(client, base, key, steady_users + burst_users)
        load_task = asyncio.create_task(load.run(load_client, f"{base}/v1/signals", key))
        await asyncio.sleep(args.warmup)

        accepted_ms: list[float] = []
        followers = []
        for i, user in enumerate(steady_users):
            due = i * args.every
            started = time.perf_counter()
            request_id, t0 = await erase(client, base, key, user, accepted_ms)
            followers.append(
                asyncio.create_task(until_completed(client, base, request_id, t0, args.timeout))
            )
            await asyncio.sleep(max(0.0, args.every - (time.perf_counter() - started)))
            del due
        followed = list(await asyncio.gather(*followers))
        steady_ms = [ms for ms, _ in followed]
        if not args.burst_under_load:
            load.stop.set()
            load_seconds = await load_task

        burst_start = time.perf_counter()
        queue = list(burst_users)
        burst_accepted_ms: list[float] = []

        async def sender() -> None:
            while queue:
                await erase(client, base, key, queue.pop(), burst_accepted_ms)

        await asyncio.gather(*(sender() for _ in range(16)))
        submitted_s = time.perf_counter() - burst_start
        remaining = args.burst
        while remaining and time.perf_counter() - burst_start < args.timeout * 20:
            await asyncio.sleep(0.25)
            remaining = await open_count(client, base)
        burst_s = time.perf_counter() - burst_start
        flowing = not load_task.done()
        if args.burst_under_load:
            load.stop.set()
            load_seconds = await load_task
    done = [x for x in steady_ms if x != float("inf")]
    return {
        "rate_target_eps": args.rate,
        "signals_accepted": load.accepted,
        "signals_eps": round(load.accepted / load_seconds),
        "signal_batches_failed": load.failed,
        "steady": {
            "requests": len(steady_ms),
            "every_s": args.every,
            "completed": len(done),
            "request_to_completed_ms": summary_ms(done, 0) if done else None,
            "received_to_completed_ms": received_to_completed_ms([a for _, a in followed]),
            "request_to_store_confirmed_ms": per_store_ms([a for _, a in followed]),
            "last_confirmed_to_completed_ms": confirmed_to_completed_ms([a for _, a in followed]),
            "slowest": slowest([a for _, a in followed]),
            "refused_by_store": refused_by_store([a for _, a in followed]),
            "refused": [r for _, a in followed for r in refusals(a)][:10],
            "rebuilt_after_erasure": rebuilt([a for _, a in followed]),
            "p99_target_ms": 5000,
            "status_polls_failed": len(POLL_ERRORS),
            "deletion_posts_resent": len(POST_ERRORS),
        },
        "burst": {
            "requests": args.burst,
            "submit_s": round(submitted_s, 2),
            "all_completed_s": round(burst_s, 2) if not remaining else None,
            "still_open": remaining,
            "signals_flowing": flowing and args.burst_under_load,
        },
        "baseline": {
            "deletion_request_accepted_ms": summary_ms(accepted_ms + burst_accepted_ms, 1),
            "signal_publish_ms": summary_ms(load.publish_ms, 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20_000, help="signals/s")
    parser.add_argument("--steady", type=float, default=30.0, help="seconds of requests")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between requests")
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument(
        "--burst-under-load",
        action="store_true",
        help="keep the signals flowing during the burst (by default they stop first)",
    )
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=60.0, help="per steady request (s)")
    parser.add_argument("--pool-seconds", type=float, default=20.0, help="batches generated")
    parser.add_argument("--port", type=int, default=8733)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument(
        "--processes",
        action="store_true",
        help="headwater up --processes: one process per component",
    )
    parser.add_argument("--keep-log", help="copy the server's log here at the end")
    args = parser.parse_args()
    pin(CLIENT_CORE)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "hw"
        key = prepare_home(home)
        command = ["up", "--port", str(args.port)]
        if args.processes:
            command.append("--processes")
        server = start_server(command, args.port, server_env(home))
        try:
            figures = asyncio.run(drive(args, args.port, key))
        finally:
            died = server.poll()
            if died is not None:
                sys.stderr.write(f"the server exited during the run (status {died})\n")
            stop_server(server)
            if args.keep_log:
                shutil.copyfile(Path(tmp) / "server.log", args.keep_log)
    figures["server_cores"] = SERVER_CORES
    figures["deployment"] = "headwater up --processes" if args.processes else "headwater up"
    emit("erasure", figures)


if __name__ == "__main__":
    main()
