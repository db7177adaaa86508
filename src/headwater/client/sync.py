"""The synchronous producer client."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import httpx

from headwater.client._batching import PublishReport, RejectedEvent, RetryPolicy
from headwater.client._core import Answer, ClientCore

__all__ = ["HeadwaterClient"]


class HeadwaterClient(ClientCore):
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
        super().__init__(
            batch_size=batch_size,
            max_batch_bytes=max_batch_bytes,
            retry=retry,
            on_rejection=on_rejection,
        )
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
        event_id, full = self._buffered(
            event_type, user_id, surface, item_id=item_id, payload=payload, fields=fields
        )
        if full:
            self.flush()
        return event_id

    def flush(self) -> PublishReport:
        """Send every buffered event."""
        return self.publish(self._take_buffer())

    def publish(self, events: Sequence[dict[str, Any]]) -> PublishReport:
        """Send events now, in as many batches as the limits need."""
        report = PublishReport()
        for chunk, body in self._batches(events):
            report.merge(self._send(chunk, body))
        return self._report(report)

    def _send(self, events: list[dict[str, Any]], body: bytes) -> PublishReport:
        for attempt in itertools.count(1):
            answer: Answer
            try:
                r = self._http.post(
                    "/v1/signals", content=body, headers={"Content-Type": "application/json"}
                )
                answer = (r.status_code, r.content, r.headers.get("Retry-After"), "")
            except httpx.TransportError as exc:
                answer = (None, b"", None, f"{type(exc).__name__}: {exc}")
            outcome = self._decide(answer, events, attempt)
            if isinstance(outcome, PublishReport):
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
