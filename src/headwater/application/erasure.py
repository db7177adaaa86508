"""The erasure side of a deployment, built for ``Application``: the erasure ledger,
sealed with the home's erasure key, the orchestrator that creates, chases,
completes and audits requests, and the erased users read back from the ledger.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from headwater.erasure.ledger import ErasureLedger
from headwater.erasure.orchestrator import ErasureOrchestrator
from headwater.erasure.subject import SubjectSealer, load_erasure_key

if TYPE_CHECKING:
    from headwater.application.root import Application

__all__ = ["erased_subjects", "erasure_ledger", "orchestrator"]


def erasure_ledger(app: Application) -> ErasureLedger:
    """The erasure ledger in the shared control plane, sealing subjects with the home's key."""
    sealer = SubjectSealer(load_erasure_key(app.settings.home))
    return ErasureLedger(app.control, sealer)


def orchestrator(app: Application) -> ErasureOrchestrator:
    """The orchestrator over the shared ledger, bus, tombstones and verifier, with the
    deadlines, chase and backup retention of the settings."""
    from headwater.application.consumers import expected_participants

    settings = app.settings
    return ErasureOrchestrator(
        app.ledger,
        app.bus,
        app.hasher,
        deadline=timedelta(seconds=settings.erasure_deadline_s),
        webhook_url=settings.erasure_webhook,
        tombstones=app.tombstones,
        expected=expected_participants(),
        warn_at=settings.erasure_warn_at,
        chase_after=None
        if settings.erasure_chase_s is None
        else timedelta(seconds=settings.erasure_chase_s),
        verifier=app.verifier,
        backup_retention=None
        if settings.backup_retention_s is None
        else timedelta(seconds=settings.backup_retention_s),
    )


def erased_subjects(app: Application) -> dict[str, int]:
    """Each erased user's subject hash with its erasure time (ms), from fresh tombstones."""
    tombstones = app.new_tombstones()
    tombstones.refresh(force=True)
    return dict(tombstones.erased_at)
