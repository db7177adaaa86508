"""The consumer runtime: poll, apply, commit after the write, dead letters, and erasure
events applied in order with the signals around them.

It sits above the bus and the erasure ledger: every consumer (features, archive, the
erasure participants) is a ``Consumer`` that this runtime drives.
"""

from __future__ import annotations

from headwater.runtime.consumer import Consumer
from headwater.runtime.loop import ERASURE_LINGER_S, ConsumerRuntime, RuntimeStats
from headwater.runtime.platform import PlatformErasure

__all__ = ["ERASURE_LINGER_S", "Consumer", "ConsumerRuntime", "PlatformErasure", "RuntimeStats"]
