"""What a consumer of the bus implements: apply records durably, and take part in erasure."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from headwater.bus.base import Record
from headwater.erasure.participant import ErasureParticipant

__all__ = ["Consumer"]


class Consumer(ErasureParticipant):
    """A consumer that the runtime drives: ``handle`` signal records, erase users.

    Being an ``ErasureParticipant`` is not optional: a consumer stores what it reads, so
    it must be able to erase it (a class without ``erase`` cannot be instantiated).
    """

    #: The kinds of records the consumer acts on; None for every kind. One that acts on
    #: erasure events alone (the signals are another store's) names that kind, and the
    #: bus reads past the signals for it (a SQLite bus without decoding them).
    kinds: frozenset[str] | None = None

    @abc.abstractmethod
    def handle(self, records: Sequence[Record]) -> None:
        """Apply signal records to the store; idempotent by event id, and returns only
        once the writes are durable (the runtime commits the bus position after it)."""

    def on_idle(self, partitions: set[int]) -> None:
        """Caught up on ``partitions``: everything appended until now has been applied."""
        del partitions

    def on_assigned(self, partitions: set[int]) -> dict[int, int]:
        """The bus gave this member ``partitions``: claim them where the consumer writes
        and return each one's generation (a store without fencing returns none). From
        the claim on, a previous owner's writes for them are refused."""
        del partitions
        return {}

    def on_revoked(self, partitions: set[int]) -> None:
        """This member no longer holds ``partitions``."""
        del partitions
