"""The cyclic collector held off while a batch builds objects that form no cycles."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collector_paused"]


@contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic collection inside: for CPU-bound work that allocates many short-lived
    objects and no cycles (a batch of records, its rows), where the collector would run
    every 700 allocations and rescan every live row for nothing. It is the process's
    collector, for every thread: keep the work inside bounded (a batch in hand, never a
    wait for more input)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
