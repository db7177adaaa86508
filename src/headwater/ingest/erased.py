"""What the gateway does with events of erased users: the documented policy.

``accept`` (the default): an erased user may come back; events timestamped after the
erasure are accepted as new activity. Events from before the erasure are rejected
(rule ``user_erased``): they would be dropped by every consumer anyway, and the
producer learns why.

``reject``: every event of an erased user is rejected, whatever its time.
"""

from __future__ import annotations

from typing import Literal

from headwater.contract._compiled import TypedSignal
from headwater.contract.validator import BatchResult, Rejection, Violation
from headwater.erasure.tombstones import TombstoneFilter

__all__ = ["POLICIES", "ErasedUsers"]

POLICIES = ("accept", "reject")


class ErasedUsers:
    """Screens accepted events against the tombstones."""

    def __init__(
        self, tombstones: TombstoneFilter, policy: Literal["accept", "reject"] = "accept"
    ) -> None:
        self.tombstones = tombstones
        self.policy = policy

    def screen(self, result: BatchResult) -> BatchResult:
        """The result with erased users' refused events moved to the rejections."""
        self.tombstones.refresh()
        if not self.tombstones.erased_at:
            return result
        # Each user of the batch hashed and looked up once; a batch of none erased (the
        # common case) is handed back as it is, without a pass over its events.
        hits = self.tombstones.erased_among({event.user_id for event in result.accepted})
        if not hits:
            return result
        kept: list[TypedSignal] = []
        kept_index: list[int] = []
        rejections = list(result.rejections)
        for index, event in zip(result.accepted_indices, result.accepted, strict=True):
            at = hits.get(event.user_id)
            refused = at is not None and (
                self.policy == "reject" or event.timestamp.timestamp() * 1000 <= at
            )
            if not refused:
                kept.append(event)
                kept_index.append(index)
                continue
            message = (
                "the user was erased; this deployment rejects their events"
                if self.policy == "reject"
                else "the user was erased after this event happened; it cannot be accepted"
            )
            violation = Violation(field="user_id", rule="user_erased", message=message)
            rejections.append(
                Rejection(
                    index=index,
                    event_id=event.event_id,
                    field="user_id",
                    rule="user_erased",
                    message=message,
                    violations=(violation,),
                    event_type=str(type(event).__struct_config__.tag),
                )
            )
        if len(kept) == len(result.accepted):
            return result  # the erased users' events all came after their erasures
        rejections.sort(key=lambda r: r.index)
        return BatchResult(result.total, kept, kept_index, rejections)
