"""Why a user is erased: a legal basis from a fixed list, and an optional reference.

Free text is not accepted: people fill it with e-mail addresses and dates of birth,
and the audit keeps it for years. A reference is a ticket or case number.
"""

from __future__ import annotations

import re

from headwater.errors import ErasureError

__all__ = ["LEGAL_BASES", "check_basis"]

#: Each accepted legal basis, with what it means.
LEGAL_BASES: dict[str, str] = {
    "gdpr-art17": "GDPR Article 17: the data subject's right to erasure",
    "gdpr-art21": "GDPR Article 21: objection to processing",
    "ccpa-deletion": "CCPA 1798.105: the consumer's right to delete",
    "consent-withdrawn": "the user withdrew the consent the data was kept under",
    "account-closed": "the user's account was closed",
    "retention-expired": "the retention period of the data ended",
    "legal-order": "a court or regulator ordered it",
}
_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/#-]{0,63}")


def check_basis(legal_basis: str, reference: str | None) -> None:
    """Refuse a basis outside the list, or a reference that is not a short identifier."""
    if legal_basis not in LEGAL_BASES:
        raise ErasureError(f"legal_basis {legal_basis!r} is not one of: {', '.join(LEGAL_BASES)}")
    if reference is not None and not _REFERENCE.fullmatch(reference):
        raise ErasureError(
            "reference must be a ticket or case id: 1 to 64 letters, digits and . _ : / # -"
        )
