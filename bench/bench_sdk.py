"""The producer SDK's own CPU per publish of 500 events, without the network, and
its POST through the clients' transports.

Each round queues 400 batches of 499 realistic events and one probe (the end-to-end
bench's workload, without event ids), and for each: ``_enqueue`` (ids, the encode that
refuses an event that cannot be sent, the queue), ``_next_batch`` (the body) and
``_settle`` with the gateway's 200 answer (500 results, none rejected). What httpx costs
around it is left out: that is not the SDK's code. Baseline, same run: a plain loop that
gives each event its id in a copy and encodes the batch with msgspec, the least any
client does. The best of ``--repeat`` rounds of each is reported.

    .venv/bin/python bench/bench_sdk.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit
from _workload import launch
from bench_freshness import BATCH, batches_of
from headwater.client import AsyncHeadwaterClient, HeadwaterClient
from headwater.client._core import ClientCore
from headwater.ingest.ingestor import EventResult, IngestOutcome
from headwater.wire import new_event_ids

BATCHES = 400


def answer(n: int) -> bytes:
    """The gateway's 200 answer to a batch of ``n`` accepted events."""
    results = [
        EventResult(index=i, status="accepted", event_id=f"01JEBENCH{i:017d}") for i in range(n)
    ]
    outcome = IngestOutcome(
        accepted=n,
        duplicates=0,
        rejected=0,
        producer="bench",
        received_at="2026-12-05T16:00:00.000000Z",
        results=results,
    )
    return msgspec.json.encode(outcome)


def sdk_round(batches: list[list[dict[str, Any]]], body: bytes) -> float:
    """CPU seconds per publish through the SDK's queue, body and answer."""
    client = ClientCore(
        batch_size=BATCH,
        max_batch_bytes=1 << 20,
        retry=None,
        on_rejection=None,
        on_overflow=None,
        on_error=None,
        max_queue_events=100_000,
        flush_interval=3600.0,
        close_timeout=1.0,
        spool=None,
    )
    start = time.process_time()
    for events in batches:
        client._enqueue(events)
        taken = client._next_batch()
        assert taken is not None
        batch, _body = taken
        client._settle(batch, (200, body, None, ""))
    elapsed = time.process_time() - start
    if client.totals.accepted != len(batches) * BATCH:
        raise RuntimeError(f"accepted {client.totals.accepted}")
    return elapsed / len(batches)


def plain_round(batches: list[list[dict[str, Any]]]) -> float:
    """CPU seconds per batch: an id in a copy of each event, the batch encoded."""
    encode = msgspec.json.encode
    start = time.process_time()
    for events in batches:
        ids = new_event_ids(len(events))
        encode([{**e, "event_id": i} for e, i in zip(events, ids, strict=True)])
    return (time.process_time() - start) / len(batches)


ANSWERING_APP = textwrap.dedent("""
    import os
    ANSWER = open(os.environ["BENCH_ANSWER"], "rb").read()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": ANSWER})
""")
PRODUCERS = 16


def async_round(url: str, batches: list[list[dict[str, Any]]], *, httpx_path: bool) -> float:
    """Client CPU seconds per publish: ``PRODUCERS`` async clients, one batch each at once."""

    async def run() -> float:
        producers = [
            AsyncHeadwaterClient(
                url,
                "key",
                flush_interval=3600.0,
                transport=httpx.AsyncHTTPTransport() if httpx_path else None,
            )
            for _ in range(PRODUCERS)
        ]
        todo = list(reversed(batches))

        async def produce(client: AsyncHeadwaterClient) -> None:
            while todo:
                report = await client.publish(todo.pop())
                if report.accepted != BATCH:
                    raise RuntimeError(f"accepted {report.accepted}")

        start = time.process_time()
        await asyncio.gather(*(produce(p) for p in producers))
        elapsed = time.process_time() - start
        for client in producers:
            await client.aclose()
        return elapsed / len(batches)

    return asyncio.run(run())


def thread_round(url: str, batches: list[list[dict[str, Any]]], *, httpx_path: bool) -> float:
    """Client CPU seconds per publish through one HeadwaterClient."""
    transport = httpx.HTTPTransport() if httpx_path else None
    with HeadwaterClient(url, "key", flush_interval=3600.0, transport=transport) as client:
        start = time.process_time()
        for events in batches:
            if client.publish(events).accepted != BATCH:
                raise RuntimeError("not all accepted")
        return (time.process_time() - start) / len(batches)


def http_rounds(batches: list[list[dict[str, Any]]], body: bytes, rounds: int) -> dict[str, Any]:
    """The publishes through each client and transport, alternated; µs of CPU each."""
    runs: dict[str, list[float]] = {
        f"{c}_{t}": [] for c in ("async", "thread") for t in ("http1", "httpx")
    }
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "answering_app.py").write_text(ANSWERING_APP)
        (Path(tmp) / "answer.json").write_bytes(body)
        env = dict(os.environ, BENCH_ANSWER=str(Path(tmp) / "answer.json"))
        argv = [sys.executable, "-m", "uvicorn", "--app-dir", tmp, "answering_app:app"]
        argv += ["--port", "8741", "--log-level", "warning", "--no-access-log"]
        server = launch(argv, 8741, env, Path(tmp) / "server.log")
        try:
            url = "http://127.0.0.1:8741"
            async_round(url, batches[:40], httpx_path=False)  # imports, first connections
            for _ in range(rounds):
                for httpx_path in (False, True):
                    tag = "httpx" if httpx_path else "http1"
                    runs[f"async_{tag}"].append(async_round(url, batches, httpx_path=httpx_path))
                    runs[f"thread_{tag}"].append(thread_round(url, batches, httpx_path=httpx_path))
        finally:
            server.terminate()
            server.wait()
    best = {k: min(v) for k, v in runs.items()}
    return {
        "http_cpu_us_per_publish": {k: round(v * 1e6) for k, v in best.items()},
        "http_cpu_us_per_publish_runs": {k: [round(x * 1e6) for x in v] for k, v in runs.items()},
        "async_http1_vs_httpx": round(best["async_http1"] / best["async_httpx"], 3),
        "thread_http1_vs_httpx": round(best["thread_http1"] / best["thread_httpx"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--http-rounds", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})  # the answering server has the other core
    batches = [events for _probe, events in batches_of(BATCHES, "bench", seed=1)]
    gc.freeze()  # the workload is held to the end: not the SDK's garbage
    body = answer(BATCH)
    sdk, plain = [], []
    for _ in range(args.repeat):
        plain.append(plain_round(batches))
        sdk.append(sdk_round(batches, body))
    best_sdk, best_plain = min(sdk), min(plain)
    http = http_rounds(batches, body, args.http_rounds) if args.http_rounds else {}
    emit(
        "sdk",
        {
            "events_per_publish": BATCH,
            "publishes": BATCHES,
            "sdk_cpu_us_per_publish": round(best_sdk * 1e6),
            "sdk_cpu_us_per_publish_runs": [round(s * 1e6) for s in sdk],
            "plain_cpu_us_per_batch": round(best_plain * 1e6),
            "sdk_vs_plain": round(best_sdk / best_plain, 2),
            **http,
        },
    )


if __name__ == "__main__":
    main()
