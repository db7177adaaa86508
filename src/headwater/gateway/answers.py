"""The gateway's request bodies and answers that no other package defines, as msgspec
structures: the OpenAPI document's schemas are generated from them (``_schemas``).

Answers built elsewhere as plain objects (an erasure audit, an SLO report) are
converted to these at the route, and the structures forbid unknown fields: a key added
to the object without its field here fails the route's tests instead of going
undocumented.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from headwater.access.keys import ApiKey
from headwater.contract.compat import Violation
from headwater.contract.definition import FieldSpec
from headwater.erasure.attempts import Attempt

__all__ = [
    "ChangedType",
    "ContractDocument",
    "ContractHistory",
    "ContractList",
    "ContractPlan",
    "ContractSummary",
    "ContractVersion",
    "CreatedKey",
    "DeletionAudit",
    "DeletionList",
    "KeyAnswer",
    "KeyList",
    "LoggedOut",
    "SessionAnswer",
    "StoreAudit",
    "Strict",
    "SubmittedSignal",
]

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class Strict(msgspec.Struct, forbid_unknown_fields=True):
    """Base of the answers converted from plain objects: unknown keys are refused."""


# -- publish -------------------------------------------------------------------------


class SubmittedSignal(msgspec.Struct, forbid_unknown_fields=True):
    """One event as a producer sends it (``POST /v1/signals``): the contract checks the
    rest, per event type (payload fields, surfaces, item, time window)."""

    event_id: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=128,
            description="Producer-assigned, globally unique; the idempotency key",
        ),
    ]
    event_type: Annotated[str, msgspec.Meta(description="A registered event type, e.g. view")]
    user_id: _Id
    surface: Annotated[str, msgspec.Meta(description="Where it happened, e.g. web or ios")]
    timestamp: Annotated[
        datetime, msgspec.Meta(description="RFC 3339 with an offset; at most 7 days old")
    ]
    payload: Annotated[
        dict[str, Any], msgspec.Meta(description="Fields declared by the event type")
    ]
    item_id: Annotated[
        str | None,
        msgspec.Meta(description="Required for types that carry an item, absent otherwise"),
    ] = None


# -- contracts -----------------------------------------------------------------------


class ContractDocument(msgspec.Struct):
    """A team's document of event type definitions (JSON or YAML)."""

    team: str
    event_types: Annotated[
        dict[str, dict[str, Any]],
        msgspec.Meta(description="Each event type's definition by name: surfaces, item, payload"),
    ]


class ContractVersion(Strict):
    """One version of an event type's definition."""

    version: int
    registered_at: str
    name: str
    owner: str
    surfaces: list[str]
    has_item: bool
    payload: dict[str, FieldSpec]
    freshness_budget_s: float
    description: str


class ContractSummary(ContractVersion):
    """An event type's latest definition and the numbers of all its versions."""

    versions: list[int] = []


class ContractList(Strict):
    """``GET /v1/contracts``."""

    event_types: list[ContractSummary]


class ContractHistory(Strict):
    """``GET /v1/contracts/{name}``: every version, oldest first."""

    name: str
    versions: list[ContractVersion]


class ChangedType(Strict):
    """An event type that gets a new version."""

    name: str
    version: int


class ContractPlan(Strict):
    """What registering a document does (or did): added, changed, unchanged, refused."""

    compatible: bool
    added: list[str]
    changed: list[ChangedType]
    unchanged: list[str]
    violations: list[Violation]


# -- erasure -------------------------------------------------------------------------


class StoreAudit(Strict):
    """One store's part of an erasure request: confirmed (when, how, evidence) or not."""

    participant: str
    status: str
    attempts: int
    due_at: str
    next_retry_at: str | None
    confirmed_at: str | None
    store: str | None
    method: str | None
    rows_removed: int | None
    rows_remaining: int | None
    evidence: dict[str, Any] | None
    error: str | None
    alerted_at: str | None
    verification: dict[str, Any] | None
    history: list[Attempt]


class DeletionAudit(Strict):
    """An erasure request's audit: status, deadline, and one row per store."""

    request_id: str
    subject_hash: str
    status: str
    legal_basis: str
    legal_basis_text: str
    reference: str | None
    requested_by: str
    received_at: str
    deadline: str
    time_remaining_s: float | None
    past_deadline: bool
    completed_at: str | None
    completed_late: bool
    late_by_s: float | None
    deadline_warnings: list[float]
    deadline_alerted_at: str | None
    verified_at: str | None
    confirmed: int
    outstanding: int
    stores: list[StoreAudit]


class DeletionList(Strict):
    """``GET /v1/deletions``: the requests asked for and the counts per status."""

    status: str
    requests: list[DeletionAudit]
    counts: dict[str, int]


# -- dashboard and keys --------------------------------------------------------------


class SessionAnswer(Strict):
    """A dashboard login: the key's team and the roles the session acts with (operator,
    and reader when the key holds it; the session is in the cookie)."""

    team: str
    roles: list[str]


class LoggedOut(Strict):
    """A dashboard logout."""

    logged_out: bool


class CreatedKey(Strict):
    """A new API key: its secret, shown in this answer only, and its record."""

    api_key: str
    key: ApiKey


class KeyList(Strict):
    """Every API key (never a secret)."""

    keys: list[ApiKey]


class KeyAnswer(Strict):
    """One API key's record."""

    key: ApiKey
