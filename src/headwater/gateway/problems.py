"""Every kind of error answer the gateway gives: its stable ``type`` URI, status and title.

An error answer is an RFC 9457 problem document (``headwater.wire.Problem``). Its
``type`` names the kind and never changes once published; ``detail`` says what went
wrong this time. docs/problems.md shows this table, and a test keeps them the same.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["KINDS", "PROBLEM_BASE", "ProblemKind", "kind"]

#: The prefix of every headwater problem type.
PROBLEM_BASE = "https://headwater.dev/problems/"


class ProblemKind(NamedTuple):
    """One kind of error: its slug (the last segment of its type), status and title."""

    slug: str
    status: int
    title: str
    meaning: str

    @property
    def type(self) -> str:
        """The stable type URI (``about:blank`` for plain HTTP errors)."""
        return "about:blank" if self.slug == "about:blank" else PROBLEM_BASE + self.slug


KINDS: dict[str, ProblemKind] = {
    k.slug: k
    for k in (
        ProblemKind(
            "malformed-body",
            400,
            "Malformed request body",
            "The body is not JSON, NDJSON or gzip as the route reads it, or not the object "
            "it expects (a key given twice, nesting too deep, a missing or unknown field). "
            "At publish, nothing of the batch was published.",
        ),
        ProblemKind(
            "invalid-argument",
            400,
            "Invalid argument",
            "A value the route checks itself is refused: an unknown role, team or key id.",
        ),
        ProblemKind(
            "invalid-erasure-request",
            400,
            "Invalid erasure request",
            "The erasure request cannot be created as asked (e.g. an unknown legal basis).",
        ),
        ProblemKind(
            "unauthenticated",
            401,
            "Missing, unknown or revoked API key",
            "Send a valid key as `Authorization: Bearer <key>`; the answer carries "
            "`WWW-Authenticate: Bearer`.",
        ),
        ProblemKind(
            "forbidden",
            403,
            "Not allowed for this key",
            "The key lacks the role the route needs, or the team or scope does not cover "
            "it. At publish, `errors` names each refused event, its field (`event_type` or "
            "`surface`) and the rule `scope`; nothing of the batch was published.",
        ),
        ProblemKind(
            "not-found",
            404,
            "No such route",
            "No route answers this path.",
        ),
        ProblemKind(
            "unknown-event-type",
            404,
            "Unknown event type",
            "No event type is registered under that name.",
        ),
        ProblemKind(
            "unknown-erasure-request",
            404,
            "Unknown erasure request",
            "No erasure request has that id.",
        ),
        ProblemKind(
            "method-not-allowed",
            405,
            "Method not allowed",
            "The route exists but does not answer this method.",
        ),
        ProblemKind(
            "body-timeout",
            408,
            "Request body too slow",
            "The body did not arrive within the time allowed; nothing was done, and the "
            "connection is closed.",
        ),
        ProblemKind(
            "incompatible-change",
            409,
            "Incompatible contract change",
            "An evolution rule refused a change; `errors` lists every violation with its "
            "event type, field, rule and versions. Nothing was registered.",
        ),
        ProblemKind(
            "too-large",
            413,
            "Request too large",
            "More events or bytes than the route takes (a publish batch: 500 events, "
            "1 MB); nothing was done, and the connection is closed.",
        ),
        ProblemKind(
            "invalid-definition",
            422,
            "Invalid contract definition",
            "The document of definitions is not valid: neither JSON nor YAML, or a "
            "definition that does not describe an event type.",
        ),
        ProblemKind(
            "invalid-parameters",
            422,
            "Invalid parameters",
            "A query or path parameter is missing or out of its bounds; `errors` names "
            "each one (`query.k`) and the rule it broke (`less_than_equal`).",
        ),
        ProblemKind(
            "rate-limited",
            429,
            "Over the rate limit",
            "The producer key is over its rate limit; retry after `Retry-After` seconds. "
            "Nothing of the batch was published.",
        ),
        ProblemKind(
            "internal",
            500,
            "Internal error",
            "headwater failed; the detail and the request id say where to look in the "
            "gateway's log.",
        ),
        ProblemKind(
            "backend-failed",
            500,
            "Backend failed",
            "A store, the bus or the control plane answered with an error.",
        ),
        ProblemKind(
            "missing-dependency",
            500,
            "Backend driver missing",
            "The deployment lacks an optional driver; the detail names the extra to install.",
        ),
        ProblemKind(
            "backend-unavailable",
            503,
            "Backend unavailable",
            "A store, the bus or the control plane cannot be reached; nothing was done, "
            "retry the whole request (`Retry-After`).",
        ),
        ProblemKind(
            "no-erasure-participants",
            503,
            "No erasure participants",
            "No store has registered for erasure yet: start the consumers first.",
        ),
        ProblemKind(
            "not-ready",
            503,
            "Not ready",
            "`GET /v1/ready`: a backend does not answer; `backends` says which.",
        ),
        ProblemKind(
            "about:blank",
            0,
            "(the HTTP status phrase)",
            "Any other HTTP error, with no meaning beyond its status.",
        ),
    )
}


def kind(slug: str) -> ProblemKind:
    """The kind named ``slug`` (a typo is a KeyError at import, not a wrong answer)."""
    return KINDS[slug]
