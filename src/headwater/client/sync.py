"""The synchronous producer client."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import httpx

from headwater.client._batching import (
    PublishReport,
    RejectedEvent,
    RetryPolicy,
    batches,
    build_event,
    decide,
)

__all__ = ["HeadwaterClient"]


class HeadwaterClient:
    """Publish signals to a headwater gateway: batching, retries, rejection reports.

    ``track()`` buffers an event and sends a batch when ``batch_size`` events wait;
    ``flush()`` sends the rest. 429, 503 and network errors are retried with backoff;
    an event the contract rejects is never retried but reported (``on_rejection`` and
    the returned PublishReport).
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
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.retry = retry or RetryPolicy()
        self.on_rejection = on_rejection
        self._buffer: list[dict[str, Any]] = []
        #: Everything sent by this client so far, automatic flushes included.
        self.totals = PublishReport()
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            timeout=timeout,
            transport=transport,
            headers={"Authorization": f"Bearer {api_key}"},
        )

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
        """Buffer one event (sent when the batch is full); its event id."""
        event = build_event(
            event_type=event_type,
            user_id=user_id,
            surface=surface,
            item_id=item_id,
            payload=payload,
            **fields,
        )
        self._buffer.append(event)
        if len(self._buffer) >= self.batch_size:
            self.flush()
        return str(event["event_id"])

    def flush(self) -> PublishReport:
        """Send every buffered event."""
        pending, self._buffer = self._buffer, []
        return self.publish(pending)

    def publish(self, events: Sequence[dict[str, Any]]) -> PublishReport:
        """Send events now, in as many batches as the limits need."""
        report = PublishReport()
        for chunk, body in batches(events, self.batch_size, self.max_batch_bytes):
            report.merge(self._send(chunk, body))
        self.totals.merge(report)
        if self.on_rejection is not None:
            for rejected in report.rejected:
                self.on_rejection(rejected)
        return report

    def _send(self, events: list[dict[str, Any]], body: bytes) -> PublishReport:
        for attempt in itertools.count(1):
            status: int | None = None
            content, retry_after, error = b"", None, ""
            try:
                response = self._http.post(
                    "/v1/signals", content=body, headers={"Content-Type": "application/json"}
                )
                status, content = response.status_code, response.content
                retry_after = response.headers.get("Retry-After")
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
            outcome = decide(
                status,
                content,
                retry_after,
                events,
                attempt=attempt,
                policy=self.retry,
                error=error,
            )
            if isinstance(outcome, PublishReport):
                outcome.retries = attempt - 1
                return outcome
            time.sleep(outcome)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Flush what is buffered and close the connection."""
        try:
            if self._buffer:
                self.flush()
        finally:
            self._http.close()

    def __enter__(self) -> HeadwaterClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
