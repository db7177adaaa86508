"""The feature definitions of a deployment and what is built from them, for
``Application``: the versions in the control plane, the live definitions a consumer or
reader follows, backfills from the archive, the request-time reader and the recommender.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from headwater._extras import needs_extra
from headwater.batch.declared import user_row_names
from headwater.features.backfills import BackfillLedger
from headwater.features.engine import FeatureEngine
from headwater.features.live import LiveDefinitions
from headwater.features.reader import FeatureReader
from headwater.features.versions import FeatureVersions
from headwater.recommend.recommender import Recommender

if TYPE_CHECKING:
    from headwater.application.root import Application
    from headwater.features.backfill import Backfill

__all__ = [
    "budgets",
    "feature_reader",
    "feature_versions",
    "live_definitions",
    "new_backfill",
    "recommender",
]


def feature_versions(app: Application) -> FeatureVersions:
    """The versions of the feature definitions, version 1 (the configured features)
    registered when the control plane has none."""
    versions = FeatureVersions(app.control)
    if versions.head()[0] == 0:
        versions.ensure_initial(app.configured_features(), source="configured")
    return versions


def live_definitions(app: Application) -> LiveDefinitions:
    """The current feature definitions over a control-plane connection of their own."""
    db = app.open_control()
    return LiveDefinitions(FeatureVersions(db), _feature_template(app), ledger=BackfillLedger(db))


def _feature_template(app: Application) -> FeatureEngine:
    return FeatureEngine(
        app.configured_features(),
        budgets_s=budgets(app),
        lateness_ms=int(app.settings.feature_lateness_s * 1000),
    )


def new_backfill(app: Application) -> Backfill:
    """Backfills from the archive into an online-store connection of their own."""
    with needs_extra():
        from headwater.features.backfill import Backfill

    app.feature_versions  # noqa: B018 - registers version 1 on a new control plane
    return Backfill(
        FeatureVersions(app.control),
        app.feature_backfills,
        app.open_archive_table(),
        app.open_online_store(),
        _feature_template(app),
        partitions=app.bus.partitions,
        erased=app.erased_subjects,
        subject=app.hasher,
    )


def budgets(app: Application) -> dict[str, float]:
    """Each event type's freshness budget, from its current contract."""
    return {r.name: r.definition.freshness_budget_s for r in app.registry.current()}


def feature_reader(app: Application) -> FeatureReader:
    """The request-time reader over the shared online-store connection."""
    app.feature_versions  # noqa: B018 - registers version 1 on a new control plane
    live = app.live_definitions()
    return FeatureReader(
        app.online,
        live.engine(stream=False),
        partition_of=app.bus.partition_of,
        definitions=live,
        batch=user_row_names(app.batch_settings),
    )


def recommender(app: Application) -> Recommender:
    """Recommendations from the streaming features and the batch's."""
    return Recommender.over(app.features.read, app.online, app.batch_settings.features())
