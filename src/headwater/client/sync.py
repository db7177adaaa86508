"""The synchronous producer client: ``track()`` queues, a background thread sends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from headwater.client._batching import PublishReport, RejectedEvent, RetryPolicy
from headwater.client._core import Answer, ClientCore, log, register_exit, unregister_exit
from headwater.client._http1 import Target, uses_proxy
from headwater.client._http1_blocking import BlockingPoster
from headwater.errors import PublishFailedError

__all__ = ["HeadwaterClient", "blocking_sender", "post_blocking"]


def blocking_sender(
    url: str, headers: dict[str, str], timeout: float, transport: httpx.BaseTransport | None
) -> BlockingPoster | httpx.Client:
    """What posts batches from a thread: a kept-alive ``http.client`` connection, or
    httpx where a transport is given or the environment names a proxy for ``url``."""
    if transport is None and not uses_proxy(url):
        return BlockingPoster(Target(url, headers), timeout)
    return httpx.Client(base_url=url, timeout=timeout, transport=transport, headers=headers)


def post_blocking(http: BlockingPoster | httpx.Client, body: bytes) -> Answer:
    """One POST of a batch; a failure in transit is an answer without a status."""
    if isinstance(http, BlockingPoster):
        return http.post("/v1/signals", body, "application/json")
    try:
        r = http.post("/v1/signals", content=body, headers={"Content-Type": "application/json"})
    except httpx.TransportError as exc:
        return (None, b"", None, f"{type(exc).__name__}: {exc}")
    return (r.status_code, r.content, r.headers.get("Retry-After"), "")


class HeadwaterClient(ClientCore):
    """Publish signals to a headwater gateway without losing one.

    ``track()`` queues an event and returns at once; a background thread sends a batch
    when ``batch_size`` events wait or every ``flush_interval`` seconds. A batch that
    fails in transit or gets 408, 429 or 5xx stays queued and is retried with backoff
    (honouring Retry-After), for as long as it takes; ``on_error`` hears of a run of
    failures. An event the contract rejects is final: reported to ``on_rejection``,
    never retried. At most ``max_queue_events`` wait; an event past the bound is not
    queued and goes to ``on_overflow`` (and the ``overflowed`` count). With ``spool``
    (a file path) queued events are kept on disk and a client opened on the same path
    after a crash sends them. ``flush()`` sends what is queued and raises
    PublishFailedError carrying the events it could not deliver; ``close()`` (and an
    exit hook, if the client was not closed) flushes within ``close_timeout``.
    """

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
        transport: httpx.BaseTransport | None = None,
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
        self._http = blocking_sender(
            url.rstrip("/"), {"Authorization": f"Bearer {api_key}"}, timeout, transport
        )
        # One sender at a time (the thread or a flush): a batch is never sent twice at once.
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="headwater-sender", daemon=True)
        self._thread.start()
        register_exit(self)

    def track(
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
        if full:
            self._wake.set()
        return event_id

    def flush(self, timeout: float | None = None) -> PublishReport:
        """Send every queued event now; what the gateway answered for them.

        Raises PublishFailedError (its ``events`` are every event still queued, its
        ``rejected`` the refusals seen) when a batch fails past the retries or
        ``timeout``; the events stay queued and the background thread resends them.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._send_lock:
            return self._drain(self._post, deadline)

    def publish(self, events: Sequence[dict[str, Any]]) -> PublishReport:
        """Queue events and flush: the report covers them (and what was queued before)."""
        with self._send_lock:  # queued under the lock: the background thread cannot take them
            self._enqueue(events)
            return self._drain(self._post, None)

    def _post(self, body: bytes) -> Answer:
        return post_blocking(self._http, body)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._step()
            except Exception:  # noqa: BLE001 - the sender must outlive any one failure
                log.exception("producer client background send failed")
                self._stopping.wait(self.retry.cap_s)

    def _step(self) -> None:
        wait = self._pace.wait(len(self._queue), time.monotonic())
        if wait > 0:
            self._wake.wait(wait)
            self._wake.clear()
            return
        with self._send_lock:
            if self._stopping.is_set() or (taken := self._next_batch()) is None:
                return
            batch, body = taken
            try:
                outcome = self._settle(batch, self._post(body))
            except BaseException:
                self._queue.requeue(batch)
                raise
            self._paced(outcome, batch)

    def close(self, timeout: float | None = None) -> None:
        """Stop the thread and flush what is queued, waiting at most ``timeout``
        (``close_timeout`` by default); raise PublishFailedError with what is left."""
        if self._closed:
            return
        self._closed = True
        unregister_exit(self)
        deadline = time.monotonic() + (self.close_timeout if timeout is None else timeout)
        self._stopping.set()
        self._wake.set()
        try:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if not self._send_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise PublishFailedError(
                    "close timed out while a batch was in flight",
                    events=self._queue.snapshot(),
                )
            try:
                self._drain(self._post, deadline)
            finally:
                self._send_lock.release()
        finally:
            self._http.close()
            self._close_spool()

    def exit_flush(self) -> None:
        """Close at interpreter exit; log what could not be delivered."""
        try:
            self.close()
        except PublishFailedError as exc:
            self._left_over(exc)

    def __enter__(self) -> HeadwaterClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
