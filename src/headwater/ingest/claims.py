"""Publishing each event id once, whatever gateways, retries and crashes do.

A send claims its events' ids in the idempotency window under a token of its own,
publishes the ones it claimed, and confirms the token once the bus has them. Another
send of the same ids meanwhile (a hedged retry at another gateway, a retry after a
timeout) finds them claimed: it waits for the confirmation and reports them as
duplicates. A claim older than its lease belongs to a gateway that died before it
confirmed; before taking it over, the waiting send asks the bus whether the events got
there (they did if the gateway died after the bus's acknowledgement): those are
duplicates, the others it publishes itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from headwater.bus.base import Bus
from headwater.dedupe.base import IdempotencyWindow, Pending

__all__ = ["LEASE_S", "Settled", "settle"]

log = logging.getLogger("headwater.ingest")

#: How long a claim is trusted before it is taken to belong to a gateway that died. A
#: gateway publishes within milliseconds of claiming; the bus's own timeout is 10 s.
LEASE_S = 30.0
#: Records are looked for from this long before the oldest claim (clocks differ).
CLOCK_SLACK_MS = 60_000
_POLL_S = 0.05


class Settled:
    """How the ids another send held were resolved."""

    def __init__(self) -> None:
        self.mine: set[str] = set()  # now this send's to publish
        self.done: set[str] = set()  # accepted by the other send: duplicates


def settle(
    window: IdempotencyWindow,
    bus: Bus,
    entries: Sequence[tuple[str, str]],
    pending: dict[str, Pending],
    token: str,
    *,
    lease_s: float = LEASE_S,
) -> Settled:
    """Wait for the sends holding ``pending`` ids (``entries`` are their ``(event id,
    user id)``) to confirm, or take over the claims of those that died. Blocks for up
    to about one lease."""
    out = Settled()
    users = dict(entries)
    waiting = dict(pending)
    while waiting:
        now_ms = int(time.time() * 1000)
        expired = {e: p for e, p in waiting.items() if now_ms - p.claimed_ms > lease_s * 1000}
        if expired:
            _take_over(window, bus, users, expired, token=token, out=out)
        # Look again at what is left: confirmed, released, or still being published.
        left = [(e, users[e]) for e in waiting if e not in out.mine and e not in out.done]
        if not left:
            break
        if not expired:
            time.sleep(_POLL_S)
        again = window.claim(left, token)
        out.mine |= again.mine
        out.done |= again.done
        waiting = again.pending
    return out


def _take_over(
    window: IdempotencyWindow,
    bus: Bus,
    users: dict[str, str],
    expired: dict[str, Pending],
    *,
    token: str,
    out: Settled,
) -> None:
    since = min(p.claimed_ms for p in expired.values()) - CLOCK_SLACK_MS
    by_user: dict[str, set[str]] = {}
    for event_id in expired:
        by_user.setdefault(users[event_id], set()).add(event_id)
    # None: this bus cannot look (Kafka), so the events are published again; at least
    # once, and every user's feature row still counts each id once.
    published = bus.find_event_ids(by_user, since) or set()
    by_token: dict[str, list[str]] = {}
    for event_id, p in expired.items():
        by_token.setdefault(p.token, []).append(event_id)
    taken = window.take_over(by_token, token)
    # Taken over and already on the bus: confirmed with this send, not published again.
    out.done |= taken & published
    out.mine |= taken - published
    log.warning(
        "took over expired claims",
        extra={
            "events": len(expired),
            "found_on_bus": len(taken & published),
            "published_again": len(taken - published),
            "dead_tokens": sorted(by_token)[:10],
        },
    )
