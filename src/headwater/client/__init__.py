"""Python clients: the producer SDK (a bounded queue sent from the background, retries,
rejection and overflow reports, an optional on-disk spool; docs/sdk.md) and the feature
read client."""

from __future__ import annotations

from headwater.client._batching import (
    PublishReport,
    RejectedEvent,
    RetryPolicy,
    build_event,
    new_event_id,
)
from headwater.client.aio import AsyncHeadwaterClient
from headwater.client.reader import AsyncFeatureClient, FeatureClient, UserFeatures
from headwater.client.sync import HeadwaterClient

__all__ = [
    "AsyncFeatureClient",
    "AsyncHeadwaterClient",
    "FeatureClient",
    "HeadwaterClient",
    "PublishReport",
    "RejectedEvent",
    "RetryPolicy",
    "UserFeatures",
    "build_event",
    "new_event_id",
]
