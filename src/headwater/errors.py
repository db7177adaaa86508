"""The one exception tree of headwater.

Callers catch these, never a driver's own exception: every adapter translates
``sqlite3``, ``psycopg``, ``redis``, ``confluent_kafka`` and ``nats`` errors at its
boundary.

::

    HeadwaterError
    ├── ConfigurationError            bad URL, unknown scheme, bad setting
    │   └── MissingDependencyError    an optional driver is not installed (names the extra)
    ├── ContractError
    │   ├── ContractDefinitionError   a definition file or document is malformed
    │   ├── IncompatibleChangeError   an evolution rule refused a change (carries every violation)
    │   └── UnknownEventTypeError     no definition registered under that name
    ├── BatchError                    a whole publish batch is refused (no event of it is published)
    │   ├── MalformedBatchError       the body is not a JSON array or NDJSON of events
    │   ├── BatchTooLargeError        more than the allowed events or bytes
    │   └── RequestTimeoutError       the body did not arrive within the time allowed
    ├── BackendError                  a store, bus or control plane failed
    │   ├── BackendUnavailableError   the server cannot be reached; the operation can be retried
    │   │   ├── BatchRunningError     another process holds the batch lock (names it, since when)
    │   │   └── WaitingForError       another component must act first: a normal, short wait
    │   ├── BusError
    │   ├── OnlineStoreError
    │   ├── ArchiveError
    │   └── ControlPlaneError
    ├── AccessError
    │   ├── AuthenticationError       missing or unknown producer key
    │   ├── PermissionDeniedError     event type or surface outside the key's scope
    │   └── RateLimitedError          over the producer's rate limit (carries retry_after)
    ├── PublishFailedError            events the client could not deliver (carried; still queued)
    │   ├── PublishUnauthorizedError  the gateway refused the key (also an AuthenticationError)
    │   └── PublishForbiddenError     the key may not publish them (also a PermissionDeniedError)
    ├── ConsumerError
    │   ├── MissingDeletionHandlerError  a consumer that stores user data has no erasure handler
    │   └── FencedError               another member took the partition: this write was refused
    └── ErasureError                  an erasure request cannot be created or reported
        ├── NoErasureParticipantsError no store has registered: consumers are not running
        └── UnknownErasureRequestError
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = [
    "AccessError",
    "ArchiveError",
    "AuthenticationError",
    "BackendError",
    "BackendUnavailableError",
    "BatchError",
    "BatchRunningError",
    "BatchTooLargeError",
    "BusError",
    "ConfigurationError",
    "ConsumerError",
    "ContractDefinitionError",
    "ContractError",
    "ControlPlaneError",
    "ErasureError",
    "FencedError",
    "HeadwaterError",
    "IncompatibleChangeError",
    "MalformedBatchError",
    "MissingDeletionHandlerError",
    "MissingDependencyError",
    "NoErasureParticipantsError",
    "OnlineStoreError",
    "PermissionDeniedError",
    "PublishFailedError",
    "PublishForbiddenError",
    "PublishUnauthorizedError",
    "RateLimitedError",
    "RequestTimeoutError",
    "UnknownErasureRequestError",
    "UnknownEventTypeError",
    "WaitingForError",
]


class HeadwaterError(Exception):
    """Base of every error headwater raises on purpose."""


class ConfigurationError(HeadwaterError):
    """A URL, setting or argument cannot be used."""


class MissingDependencyError(ConfigurationError):
    """An optional backend's driver is not installed."""

    def __init__(self, backend: str, module: str, extra: str) -> None:
        super().__init__(
            f"the {backend} backend needs the '{module}' package: pip install 'headwater[{extra}]'"
        )
        self.backend = backend
        self.module = module
        self.extra = extra


class ContractError(HeadwaterError):
    """A contract definition or registration problem."""


class ContractDefinitionError(ContractError):
    """A definition file or document does not describe a valid event type."""


class Violation(Protocol):
    """What an evolution rule reports (``contract.compat.Violation``); kept structural so
    that this module imports nothing of headwater."""

    def describe(self) -> str:
        """One line naming the type, field, rule and the two versions."""
        ...


class IncompatibleChangeError(ContractError):
    """A proposed definition breaks an evolution rule; every violation is listed."""

    def __init__(self, violations: Sequence[Violation]) -> None:
        lines = "\n".join(f"  - {v.describe()}" for v in violations)
        super().__init__(f"{len(violations)} incompatible change(s) refused:\n{lines}")
        self.violations = list(violations)


class UnknownEventTypeError(ContractError):
    """No definition is registered under the event type's name."""


class BatchError(HeadwaterError):
    """A whole batch is refused before validation of its events; nothing is published."""


class MalformedBatchError(BatchError):
    """The body is not a JSON array of events nor NDJSON (or not the object a route reads).

    ``rule`` names what it broke (``duplicate_key``, ``max_depth``, ``not_json``,
    ``missing_field`` ...) and ``field`` where, as a JSON path (``$[3].payload.sku``),
    when the reader knows.
    """

    def __init__(self, message: str, *, rule: str = "", field: str | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.field = field


class BatchTooLargeError(BatchError):
    """The batch holds more events or bytes than allowed."""


class RequestTimeoutError(BatchError):
    """The request body did not arrive within the time allowed."""


class BackendError(HeadwaterError):
    """A store, the bus or the control plane failed."""


class BackendUnavailableError(BackendError):
    """A server cannot be reached; the operation did not happen and can be retried."""


class WaitingForError(BackendUnavailableError):
    """Another component must act first (the archive confirms an erasure before the batch
    recomputes from it): a normal wait, retried at a short steady interval."""


class BatchRunningError(BackendUnavailableError):
    """The batch lock is held by another process (possibly on another host): the run did
    not start; it can be retried once the holder finished or its lease expired."""


class BusError(BackendError):
    """The bus failed to publish, read or commit."""


class OnlineStoreError(BackendError):
    """The online feature store failed."""


class ArchiveError(BackendError):
    """The offline archive failed."""


class ControlPlaneError(BackendError):
    """The control-plane database failed."""


class AccessError(HeadwaterError):
    """A producer may not publish this."""


class AuthenticationError(AccessError):
    """The producer key is missing, unknown or revoked."""


class PermissionDeniedError(AccessError):
    """The key lacks the role, or the event type or surface is outside its scope.

    ``refused`` names each event a whole-batch scope check refused: its ``index``,
    ``event_id``, ``event_type``, the ``field`` and the ``rule``, and a ``message``.
    """

    def __init__(self, message: str, refused: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__(message)
        self.refused = [dict(r) for r in refused]


class RateLimitedError(AccessError):
    """The producer is over its rate limit."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PublishFailedError(HeadwaterError):
    """The producer client could not deliver some events; they stay queued.

    ``events`` are the events not accepted (each keeps its ``event_id``, so resending
    is safe: the gateway de-duplicates), ``event_ids`` their ids, ``rejected`` the
    per-event refusals seen before the failure (final, never resent), and
    ``accepted`` / ``duplicates`` what did get through.
    """

    def __init__(
        self,
        message: str,
        *,
        events: Sequence[dict[str, Any]] = (),
        rejected: Sequence[Any] = (),
        accepted: int = 0,
        duplicates: int = 0,
    ) -> None:
        super().__init__(message)
        self.events = list(events)
        self.rejected = list(rejected)
        self.accepted = accepted
        self.duplicates = duplicates

    @property
    def event_ids(self) -> list[str]:
        """The ids of the events not accepted."""
        return [str(e.get("event_id")) for e in self.events]


class PublishUnauthorizedError(PublishFailedError, AuthenticationError):
    """The gateway refused the producer key (401); the events stay queued."""


class PublishForbiddenError(PublishFailedError, PermissionDeniedError):
    """The key may not publish these event types or surfaces (403); the events stay queued."""


class ConsumerError(HeadwaterError):
    """A consumer cannot run."""


class MissingDeletionHandlerError(ConsumerError):
    """A consumer that stores user data registered no erasure handler."""


class FencedError(ConsumerError):
    """A consumer wrote for a partition it no longer owns: another member claimed it
    (a newer generation), so the write was refused and nothing of it was stored."""

    def __init__(self, message: str, partitions: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.partitions = tuple(partitions)


class ErasureError(HeadwaterError):
    """An erasure request cannot be created, applied or reported."""


class NoErasureParticipantsError(ErasureError):
    """No store has registered as a participant yet: start the consumers first."""


class UnknownErasureRequestError(ErasureError):
    """No erasure request exists with that id."""
