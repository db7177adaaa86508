"""The idempotency-window port: which event ids were accepted, and which are being
published right now.

A gateway claims a batch's ids before it publishes them (``claim``), under a token of
its own, and confirms the token once the bus has the batch (``confirm``). A concurrent
or retried send of the same ids meanwhile finds them claimed by another token: it
waits for that token's confirmation (then they are duplicates), and if the claim
outlives its lease (the gateway died), it asks the bus whether the batch got there
before taking the claim over (``take_over``). So a hedged retry, or a retry after a
gateway died between the bus's acknowledgement and the confirmation, never publishes
an event twice.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

import msgspec

__all__ = ["Claim", "IdempotencyWindow", "Pending"]


class Pending(msgspec.Struct, frozen=True):
    """An id another send claimed and has not confirmed yet."""

    token: str
    claimed_ms: int


class Claim(msgspec.Struct):
    """What a claim found for each id."""

    mine: set[str] = msgspec.field(default_factory=set)  # claimed for this token: publish
    done: set[str] = msgspec.field(default_factory=set)  # accepted before: duplicates
    pending: dict[str, Pending] = msgspec.field(default_factory=dict)  # another send's


class IdempotencyWindow(Protocol):
    """Event ids accepted within the last ``window_s`` seconds, with their user.

    The user id is kept so that erasure can remove a user's entries: the window is
    one of the stores erasure must reach.
    """

    url: str
    window_s: float

    def seen(self, event_ids: Sequence[str]) -> set[str]:
        """Which of these event ids were accepted (confirmed) within the window."""
        ...

    def claim(self, entries: Sequence[tuple[str, str]], token: str) -> Claim:
        """Claim ``(event_id, user_id)`` pairs for ``token``, atomically: each id is
        claimed now, or was accepted, or is claimed by another token."""
        ...

    def claim_many(self, sends: Sequence[tuple[Sequence[tuple[str, str]], str]]) -> list[Claim]:
        """``claim`` for each ``(entries, token)`` in order, in one write where the
        backend allows (a gateway's concurrent requests share it)."""
        ...

    def confirm(self, token: str) -> None:
        """The token's ids are on the bus: accepted from now on (durably)."""
        ...

    def confirm_many(self, tokens: Sequence[str]) -> None:
        """``confirm`` for each token, in one write where the backend allows."""
        ...

    def release(self, token: str, event_ids: Sequence[str]) -> None:
        """The token's publish failed: its claims on ``event_ids`` go, so a retry can
        claim them."""
        ...

    def take_over(self, claims: Mapping[str, Sequence[str]], token: str) -> set[str]:
        """Move the claims of expired tokens (``old token -> ids``) to ``token``; the ids
        moved (an id already confirmed or taken by someone else is left alone)."""
        ...

    def remember(self, entries: Sequence[tuple[str, str]]) -> None:
        """Record ``(event_id, user_id)`` pairs as accepted now (a claim and its
        confirmation in one step)."""
        ...

    def erase_user(self, user_id: str) -> int:
        """Forget every entry of a user; the number removed."""
        ...

    def count_user(self, user_id: str) -> int:
        """Entries of a user still held (an independent check for erasure evidence)."""
        ...

    def erase_users(self, user_ids: Sequence[str]) -> dict[str, int]:
        """``erase_user`` for many users at once (a burst of erasures); removed per user."""
        ...

    def count_users(self, user_ids: Sequence[str]) -> dict[str, int]:
        """``count_user`` for many users at once."""
        ...

    def scrub(self, erased: Collection[str] = (), *, rebuild: bool = False) -> dict[str, object]:
        """After an erasure: as :meth:`headwater.online.base.OnlineStore.scrub`
        (``erased``: the users' ids; their entries' event ids are searched too)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
