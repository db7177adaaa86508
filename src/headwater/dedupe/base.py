"""The idempotency-window port."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["IdempotencyWindow"]


class IdempotencyWindow(Protocol):
    """Event ids accepted within the last ``window_s`` seconds, with their user.

    The user id is kept so that erasure can remove a user's entries: the window is
    one of the stores erasure must reach.
    """

    url: str
    window_s: float

    def seen(self, event_ids: Sequence[str]) -> set[str]:
        """Which of these event ids were accepted within the window."""
        ...

    def remember(self, entries: Sequence[tuple[str, str]]) -> None:
        """Record ``(event_id, user_id)`` pairs as accepted now (durably)."""
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

    def close(self) -> None:
        """Release connections."""
        ...
