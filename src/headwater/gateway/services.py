"""The backends one gateway process holds open, built from Settings."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

import msgspec

from headwater.access.keys import ProducerKeys
from headwater.access.ratelimit import RateLimiter
from headwater.bus import Bus, open_bus
from headwater.bus.dead_letters import DeadLetterStore
from headwater.config import Settings
from headwater.contract.registry import ContractRegistry
from headwater.contract.validator import Limits
from headwater.control import ControlDatabase, open_control_database
from headwater.dedupe import IdempotencyWindow, open_idempotency_window
from headwater.erasure.ledger import ErasureLedger
from headwater.erasure.orchestrator import ErasureOrchestrator
from headwater.erasure.subject import SubjectHasher, load_erasure_key
from headwater.erasure.tombstones import TombstoneFilter
from headwater.features.engine import FeatureEngine
from headwater.features.reader import FeatureReader
from headwater.features.spec import DEFAULT_FEATURES, load_features
from headwater.ingest.erased import ErasedUsers
from headwater.ingest.ingestor import Ingestor
from headwater.online import OnlineStore, open_online_store

__all__ = ["GatewayServices", "feature_engine"]


class GatewayServices:
    """Control plane, bus, idempotency window and the ingestor over them."""

    def __init__(self, settings: Settings, *, limits: Limits | None = None) -> None:
        self.settings = settings
        self.control: ControlDatabase = open_control_database(settings.control_url)
        self.registry = ContractRegistry(self.control)
        self.keys = ProducerKeys(self.control)
        self.dead_letters = DeadLetterStore(self.control)
        self.bus: Bus = open_bus(settings.bus_url)
        self.window: IdempotencyWindow = open_idempotency_window(
            settings.dedupe_url, window_s=settings.dedupe_window_s
        )
        self.limiter = RateLimiter()
        self.ledger = ErasureLedger(self.control)
        self.hasher = SubjectHasher(load_erasure_key(settings.home))
        self.tombstones = TombstoneFilter(self.ledger, self.hasher)
        policy: Literal["accept", "reject"] = (
            "reject" if settings.erased_user_policy == "reject" else "accept"
        )
        self.ingestor = Ingestor(
            self.registry,
            self.bus,
            self.window,
            limits=limits,
            erased=ErasedUsers(self.tombstones, policy),
        )
        self.orchestrator = ErasureOrchestrator(
            self.ledger,
            self.bus,
            self.hasher,
            deadline=timedelta(seconds=settings.erasure_deadline_s),
            webhook_url=settings.erasure_webhook,
            tombstones=self.tombstones,
        )
        self.online: OnlineStore = open_online_store(settings.online_url)
        self.features = FeatureReader(
            self.online, feature_engine(self.registry, settings), partition_of=self.bus.partition_of
        )

    def refresh_contracts(self) -> None:
        """Use newly registered contracts now: validation and freshness budgets."""
        self.ingestor.refresh()
        self.features.engine.budgets_s = {
            r.name: r.definition.freshness_budget_s for r in self.registry.current()
        }

    def describe(self) -> dict[str, object]:
        """Where each backend is (for /v1/health)."""
        return {
            "control": _redact(self.settings.control_url),
            "bus": _redact(self.settings.bus_url),
            "dedupe": _redact(self.settings.dedupe_url),
            "online": _redact(self.settings.online_url),
            "limits": msgspec.to_builtins(self.ingestor.limits),
        }

    def close(self) -> None:
        """Close every backend."""
        self.ingestor.close()
        self.online.close()
        self.window.close()
        self.bus.close()
        self.control.close()


def feature_engine(registry: ContractRegistry, settings: Settings | None = None) -> FeatureEngine:
    """The declared features (``HEADWATER_FEATURES_FILE`` or the built-in set), with each
    event type's freshness budget from its contract and the configured lateness bound."""
    budgets = {r.name: r.definition.freshness_budget_s for r in registry.current()}
    if settings is None:
        return FeatureEngine(DEFAULT_FEATURES, budgets_s=budgets)
    specs = load_features(settings.features_file) if settings.features_file else DEFAULT_FEATURES
    return FeatureEngine(
        specs, budgets_s=budgets, lateness_ms=int(settings.feature_lateness_s * 1000)
    )


def _redact(url: str) -> str:
    # Never echo credentials embedded in a URL.
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
