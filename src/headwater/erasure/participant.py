"""What every component that holds a user's data implements to take part in erasure.

A participant answers for one or more stores (``participants``), erases a user from
each and proves it with its own scan (``erase``), and may erase a run of users in one
pass (``erase_many``). Every hook is declared here with its default, so the consumer
runtime calls methods that mypy checks, never ones it looks up by name.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from headwater.bus.base import Record
from headwater.erasure.events import Confirmation, ErasureEvent
from headwater.erasure.ledger import Participant

__all__ = ["DEFAULT_CONFIRM_WITHIN_S", "ErasureParticipant"]

#: How long the orchestrator waits for a store's confirmation before it chases and alerts.
DEFAULT_CONFIRM_WITHIN_S = 300.0


class ErasureParticipant(abc.ABC):
    """A component that holds user data: it erases a user from its stores, with proof."""

    #: The component's name in logs; its stores have their own names (``participants``).
    name: str

    @abc.abstractmethod
    def participants(self) -> list[Participant]:
        """The stores this component answers for, each registered with the ledger so
        that every new erasure request waits for its confirmation."""

    @abc.abstractmethod
    def erase(self, event: ErasureEvent) -> list[Confirmation]:
        """Erase the event's user from each addressed store and verify it with a scan of
        the store: one confirmation per store."""

    def erase_many(self, events: Sequence[ErasureEvent]) -> list[Confirmation]:
        """Erase a run of requests; a component that can do it in one pass over its
        stores overrides this (a burst of requests then costs one pass, not one each)."""
        return [c for event in events for c in self.erase(event)]

    def ready(self, events: Sequence[ErasureEvent]) -> set[int]:
        """Which of a run's requests (their places in ``events``) can be erased now. A
        component that follows another one's erasure (the batch follows the archive)
        answers those that one has recorded, so that none waits for another request's
        leader; the others are always ready."""
        return set(range(len(events)))

    def purge_dropped(self, records: Sequence[Record]) -> None:
        """Records of erased users that arrived after the erasure and were dropped: a
        component that stores the records themselves (the bus log) removes them too."""
        del records
