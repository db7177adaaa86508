"""The composition root and the registry of consumers.

``Application`` builds every component of a deployment from ``Settings``;
``CONSUMERS`` declares each consumer once. Everything that starts headwater (the
gateway, ``headwater consume``, ``up``, ``up --processes``, the CLI) starts here.
"""

from __future__ import annotations

from headwater.application.consumers import (
    CONSUMERS,
    ConsumerSpec,
    consumer_named,
    expected_participants,
)
from headwater.application.root import Application

__all__ = ["CONSUMERS", "Application", "ConsumerSpec", "consumer_named", "expected_participants"]
