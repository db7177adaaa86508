"""Which partitions a consumer holds, with the generation of each claim, and the log of
every change.

The bus decides who reads a partition; the consumer's store decides who may write for
it. When the bus gives this member a partition, the handler claims it in its store
(``Consumer.on_assigned``): a generation one above the last, after which a write
fenced with an older generation, by a member that has not yet noticed it lost the
partition, is refused atomically with the write. Every start, assignment, revocation
and stop is logged with the partitions and generations.
"""

from __future__ import annotations

import logging

from headwater.runtime.consumer import Consumer

__all__ = ["Membership"]

log = logging.getLogger("headwater.runtime")


class Membership:
    """The partitions one member holds now, each with its generation."""

    def __init__(self, group: str, member: str, handler: Consumer) -> None:
        self.group = group
        self.member = member
        self.handler = handler
        self.held: dict[int, int] = {}

    def sync(self, assigned: set[int]) -> None:
        """Bring what is held in line with what the bus assigns now."""
        gone = set(self.held) - assigned
        if gone:
            self.revoke(gone)
        new = assigned - set(self.held)
        if new:
            generations = self.handler.on_assigned(new)
            for p in new:
                self.held[p] = generations.get(p, 0)
            log.info(
                "assigned",
                extra={
                    "consumer": self.handler.name,
                    "group": self.group,
                    "member": self.member,
                    "partitions": sorted(new),
                    "generations": {str(p): self.held[p] for p in sorted(new)},
                },
            )

    def revoke(self, partitions: set[int]) -> None:
        """Let go of ``partitions`` (the bus moved them, or a write was fenced)."""
        self.handler.on_revoked(partitions)
        for p in partitions:
            self.held.pop(p, None)
        log.info(
            "revoked",
            extra={
                "consumer": self.handler.name,
                "group": self.group,
                "member": self.member,
                "partitions": sorted(partitions),
            },
        )
