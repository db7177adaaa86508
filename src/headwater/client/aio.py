"""The asyncio producer client: ``track()`` queues, a background task sends."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from headwater.client._batching import (
    Delivered,
    PublishReport,
    Refused,
    RejectedEvent,
    RetryPolicy,
    Transient,
)
from headwater.client._core import Answer, ClientCore, log, register_exit, unregister_exit
from headwater.client._http1 import Http1Poster, Target, uses_proxy
from headwater.client.sync import blocking_sender, post_blocking
from headwater.errors import PublishFailedError

__all__ = ["AsyncHeadwaterClient"]


class AsyncHeadwaterClient(ClientCore):
    """The asyncio twin of HeadwaterClient: the same queue, retries, spool and reports;
    the sender is a task on the loop of the first ``track()``, ``flush()`` or
    ``publish()``. Spool writes are local SQLite commits, made on the loop."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        batch_size: int = 500,
        max_batch_bytes: int = 1024 * 1024,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        on_rejection: Callable[[RejectedEvent], None] | None = None,
        on_overflow: Callable[[list[dict[str, Any]]], None] | None = None,
        on_error: Callable[[PublishFailedError], None] | None = None,
        max_queue_events: int = 100_000,
        flush_interval: float = 1.0,
        close_timeout: float = 10.0,
        spool: str | Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            max_batch_bytes=max_batch_bytes,
            retry=retry,
            on_rejection=on_rejection,
            on_overflow=on_overflow,
            on_error=on_error,
            max_queue_events=max_queue_events,
            flush_interval=flush_interval,
            close_timeout=close_timeout,
            spool=spool,
        )
        self._url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._timeout = timeout
        # Batches go out on a kept-alive HTTP/1.1 connection of the client's own (about a
        # quarter of httpx's CPU a POST); through httpx where a transport is given or the
        # environment names a proxy for the URL.
        self._http: Http1Poster | httpx.AsyncClient
        if transport is None and not uses_proxy(self._url):
            self._http = Http1Poster(Target(self._url, self._headers), timeout)
        else:
            self._http = httpx.AsyncClient(
                base_url=self._url, timeout=timeout, transport=transport, headers=self._headers
            )
        self._send_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        register_exit(self)

    async def track(
        self,
        event_type: str,
        user_id: str,
        surface: str,
        *,
        item_id: str | None = None,
        payload: dict[str, Any] | None = None,
        **fields: Any,
    ) -> str:
        """Queue one event; its event id. Never waits for the network."""
        event_id, full = self._tracked(
            event_type, user_id, surface, item_id=item_id, payload=payload, fields=fields
        )
        self._start()
        if full:
            self._wake.set()
        return event_id

    async def flush(self, timeout: float | None = None) -> PublishReport:
        """Send every queued event now (see HeadwaterClient.flush)."""
        self._start()
        deadline = None if timeout is None else time.monotonic() + timeout
        async with self._send_lock:
            return await self._drain_async(deadline)

    async def publish(self, events: Sequence[dict[str, Any]]) -> PublishReport:
        """Queue events and flush: the report covers them (and what was queued before)."""
        self._start()
        async with self._send_lock:  # queued under the lock: the task cannot take them
            self._enqueue(events)
            return await self._drain_async(None)

    def _start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _post(self, body: bytes) -> Answer:
        http = self._http
        if isinstance(http, Http1Poster):
            return await http.post("/v1/signals", body, "application/json")
        try:
            r = await http.post(
                "/v1/signals", content=body, headers={"Content-Type": "application/json"}
            )
        except httpx.TransportError as exc:
            return (None, b"", None, f"{type(exc).__name__}: {exc}")
        return (r.status_code, r.content, r.headers.get("Retry-After"), "")

    async def _drain_async(self, deadline: float | None) -> PublishReport:
        # The awaited twin of ClientCore._drain.
        report = PublishReport()
        target = len(self._queue)
        while target > 0 and (taken := self._next_batch()) is not None:
            batch, body = taken
            for attempt in itertools.count(1):
                try:
                    outcome = self._settle(batch, await self._post(body))
                except BaseException:
                    self._queue.requeue(batch)
                    raise
                if not isinstance(outcome, Transient | Refused):
                    break
                pause = self._stops(outcome, attempt, deadline)
                if pause is None:
                    self._queue.requeue(batch)
                    raise self._give_up(outcome, attempt, report)
                await asyncio.sleep(pause)
            if isinstance(outcome, Delivered):
                target -= len(batch)
                self._count(report, outcome.report, attempt - 1)
        return report

    async def _run(self) -> None:
        while not self._closed:
            try:
                await self._step()
            except Exception:  # noqa: BLE001 - the sender must outlive any one failure
                log.exception("producer client background send failed")
                await asyncio.sleep(self.retry.cap_s)

    async def _step(self) -> None:
        wait = self._pace.wait(len(self._queue), time.monotonic())
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            return
        async with self._send_lock:
            if self._closed or (taken := self._next_batch()) is None:
                return
            batch, body = taken
            try:
                outcome = self._settle(batch, await self._post(body))
            except BaseException:
                self._queue.requeue(batch)  # cancelled mid-send: the batch is not lost
                raise
            self._paced(outcome, batch)

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop the task and flush what is queued, waiting at most ``timeout``
        (``close_timeout`` by default); raise PublishFailedError with what is left."""
        if self._closed:
            return
        self._closed = True
        unregister_exit(self)
        deadline = time.monotonic() + (self.close_timeout if timeout is None else timeout)
        try:
            if self._task is not None:
                self._wake.set()
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                async with self._send_lock:
                    await self._drain_async(deadline)
        except TimeoutError as exc:
            raise PublishFailedError(
                "close timed out while a batch was in flight", events=self._queue.snapshot()
            ) from exc
        finally:
            await self._http.aclose()
            self._close_spool()

    def exit_flush(self) -> None:
        """At exit the loop is gone: send what is queued with a blocking connection."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + self.close_timeout
        http = blocking_sender(self._url, self._headers, self._timeout, None)
        try:
            self._drain(lambda body: post_blocking(http, body), deadline)
        except PublishFailedError as exc:
            self._left_over(exc)
        finally:
            http.close()
        self._close_spool()

    async def __aenter__(self) -> AsyncHeadwaterClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
