"""A consumer process for the crash test: runs until idle, may be killed at any moment."""

from __future__ import annotations

import sys

from headwater.bus import open_bus
from headwater.runtime import ConsumerRuntime
from tests.bus._counting import CountingHandler


def main() -> None:
    bus_url, store = sys.argv[1], sys.argv[2]
    bus = open_bus(bus_url)
    handler = CountingHandler(store)
    runtime = ConsumerRuntime(bus, "crash", handler, batch_size=500, poll_timeout=2.0)
    runtime.run(idle_exit=True)
    handler.close()
    bus.close()


if __name__ == "__main__":
    main()
