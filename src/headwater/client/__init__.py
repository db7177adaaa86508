"""Producer SDK: build signals, batch them, retry what may be retried, report rejections."""

from __future__ import annotations

from headwater.client._batching import (
    PublishReport,
    RejectedEvent,
    RetryPolicy,
    build_event,
    new_event_id,
)
from headwater.client.aio import AsyncHeadwaterClient
from headwater.client.sync import HeadwaterClient

__all__ = [
    "AsyncHeadwaterClient",
    "HeadwaterClient",
    "PublishReport",
    "RejectedEvent",
    "RetryPolicy",
    "build_event",
    "new_event_id",
]
