"""What the sync and asyncio clients share: the buffer, batching and reporting.

Only sending differs between them (a blocking or an awaited POST, a blocking or an
awaited sleep between retries); everything else lives here once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from headwater.client._batching import (
    PublishReport,
    RejectedEvent,
    RetryPolicy,
    batches,
    build_event,
    decide,
)

__all__ = ["Answer", "ClientCore"]

#: One attempt's answer: status (None when the request failed in transit), body,
#: the Retry-After header, and the transport error.
Answer = tuple[int | None, bytes, str | None, str]


class ClientCore:
    """Buffering, batch splitting, retry decisions and rejection reporting."""

    def __init__(
        self,
        *,
        batch_size: int,
        max_batch_bytes: int,
        retry: RetryPolicy | None,
        on_rejection: Callable[[RejectedEvent], None] | None,
    ) -> None:
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.retry = retry or RetryPolicy()
        self.on_rejection = on_rejection
        self._buffer: list[dict[str, Any]] = []
        #: Everything sent by this client so far, automatic flushes included.
        self.totals = PublishReport()

    def _buffered(
        self,
        event_type: str,
        user_id: str,
        surface: str,
        *,
        item_id: str | None,
        payload: dict[str, Any] | None,
        fields: dict[str, Any],
    ) -> tuple[str, bool]:
        """Buffer one event; its id, and whether a full batch now waits."""
        event = build_event(
            event_type=event_type,
            user_id=user_id,
            surface=surface,
            item_id=item_id,
            payload=payload,
            **fields,
        )
        self._buffer.append(event)
        return str(event["event_id"]), len(self._buffer) >= self.batch_size

    def _take_buffer(self) -> list[dict[str, Any]]:
        pending, self._buffer = self._buffer, []
        return pending

    def _batches(
        self,
        events: Sequence[dict[str, Any]],
    ) -> Iterator[tuple[list[dict[str, Any]], bytes]]:
        return batches(events, self.batch_size, self.max_batch_bytes)

    def _decide(
        self,
        answer: tuple[int | None, bytes, str | None, str],
        events: list[dict[str, Any]],
        attempt: int,
    ) -> PublishReport | float:
        status, content, retry_after, error = answer
        outcome = decide(
            status, content, retry_after, events, attempt=attempt, policy=self.retry, error=error
        )
        if isinstance(outcome, PublishReport):
            outcome.retries = attempt - 1
        return outcome

    def _report(self, report: PublishReport) -> PublishReport:
        self.totals.merge(report)
        if self.on_rejection is not None:
            for rejected in report.rejected:
                self.on_rejection(rejected)
        return report
