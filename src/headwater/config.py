"""Where headwater keeps its data: backend URLs, from the environment or arguments.

Every URL defaults to an embedded backend under ``HEADWATER_HOME`` (``./.headwater``),
so one machine needs no server at all.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from headwater._duration import parse_duration
from headwater.errors import ConfigurationError

__all__ = ["Settings"]


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _policy(value: str) -> str:
    if value not in ("accept", "reject"):
        raise ConfigurationError(
            f"HEADWATER_ERASED_USER_POLICY must be accept or reject, not {value!r}"
        )
    return value


def _shared_limiter(base: str, control: str, dedupe: str) -> str:
    # Whatever every gateway of the deployment already shares: Redis first (one round
    # trip, no disk), then PostgreSQL, else a file beside the embedded stores. The rate
    # limiter speaks to one Redis node: a Redis Cluster window is not shared with it.
    from headwater._redis import is_cluster_url

    if dedupe.startswith(("redis://", "rediss://")) and not is_cluster_url(dedupe):
        return dedupe
    if control.startswith(("postgresql://", "postgres://")):
        return control
    return f"{base}/ratelimit.db"


def _processes(raw: str) -> int | None:
    if raw == "auto":
        return None
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigurationError(
            f"HEADWATER_FEATURE_PROCESSES must be auto or a whole number from 1, not {raw!r}"
        )
    return count


def _record_version(raw: str) -> int:
    if raw not in ("1", "2"):
        raise ConfigurationError(
            f"HEADWATER_BUS_RECORD_VERSION must be 1 or 2 (the version of the signal records "
            f"the gateway writes), not {raw!r}"
        )
    return int(raw)


def _fractions(raw: str, name: str) -> tuple[float, ...]:
    try:
        found = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigurationError(f"{name} must be fractions like 0.5,0.8, not {raw!r}") from None
    if any(not 0 < f < 1 for f in found):
        raise ConfigurationError(f"{name}: each fraction must be between 0 and 1, not {raw!r}")
    return tuple(sorted(found))


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Backend URLs and the data directory of one headwater deployment."""

    home: Path
    control_url: str
    bus_url: str
    online_url: str
    archive_url: str
    dedupe_url: str
    #: Where the per-key rate-limit buckets live: shared by every gateway that uses it.
    ratelimit_url: str = "memory://"
    dedupe_window_s: float = 86_400.0
    #: How long a gateway's claim on event ids is trusted before another may take it over.
    claim_lease_s: float = 30.0
    erasure_deadline_s: float = 30 * 86_400.0
    erasure_webhook: str | None = None
    #: How long a store has to confirm before it is chased (None: each store's own).
    erasure_chase_s: float | None = None
    #: Fractions of the time to the deadline at which outstanding stores are warned about.
    erasure_warn_at: tuple[float, ...] = (0.5, 0.8)
    #: How long the operator keeps the servers' own copies (PostgreSQL WAL archives and
    #: base backups, Redis snapshots); the erasure record dates their end by it.
    backup_retention_s: float | None = None
    erased_user_policy: str = "accept"
    features_file: str | None = None
    feature_lateness_s: float = 3600.0
    #: Consumer groups whose lag is reported; empty: every consumer of the registry.
    lag_groups: tuple[str, ...] = ()
    alert_webhook: str | None = None
    #: How often each gateway samples the dashboard's last hour (360 points at 10 s).
    dashboard_sample_s: float = 10.0
    #: Members of the feature consumer under ``up`` and ``up --processes``, each on a share
    #: of the partitions; None (``auto``): one, and more while its group is behind
    #: (``members``).
    feature_processes: int | None = None
    #: The version of the signal records the gateway writes on the bus (2: an array of
    #: ``RECORD_FIELDS``; 1: a map by field name, while consumers of a release before
    #: version 2 still read the bus). Every reader takes both.
    bus_record_version: int = 2

    @classmethod
    def from_env(cls, home: str | Path | None = None) -> Settings:
        """Settings from ``HEADWATER_*`` variables, embedded defaults under ``home``."""
        root = Path(home or _env("HEADWATER_HOME", ".headwater")).expanduser()
        base = f"sqlite:///{root}"  # absolute roots give sqlite:////abs, as SQLAlchemy does
        control = _env("HEADWATER_CONTROL_URL", f"{base}/control.db")
        dedupe = _env("HEADWATER_DEDUPE_URL", f"{base}/dedupe.db")
        chase = _env("HEADWATER_ERASURE_CHASE", "")
        backups = _env("HEADWATER_BACKUP_RETENTION", "")
        return cls(
            home=root,
            control_url=control,
            bus_url=_env("HEADWATER_BUS_URL", f"{base}/bus.db"),
            online_url=_env("HEADWATER_ONLINE_URL", f"{base}/online.db"),
            archive_url=_env("HEADWATER_ARCHIVE_URL", str(root / "archive")),
            dedupe_url=dedupe,
            ratelimit_url=_env("HEADWATER_RATELIMIT_URL", _shared_limiter(base, control, dedupe)),
            dedupe_window_s=parse_duration(
                _env("HEADWATER_DEDUPE_WINDOW", "24h"), "HEADWATER_DEDUPE_WINDOW"
            ),
            claim_lease_s=parse_duration(
                _env("HEADWATER_CLAIM_LEASE", "30s"), "HEADWATER_CLAIM_LEASE"
            ),
            erasure_deadline_s=parse_duration(
                _env("HEADWATER_ERASURE_DEADLINE", "30d"), "HEADWATER_ERASURE_DEADLINE"
            ),
            erasure_webhook=_env("HEADWATER_ERASURE_WEBHOOK", "") or None,
            erasure_chase_s=parse_duration(chase, "HEADWATER_ERASURE_CHASE") if chase else None,
            erasure_warn_at=_fractions(
                _env("HEADWATER_ERASURE_WARN_AT", "0.5,0.8"), "HEADWATER_ERASURE_WARN_AT"
            ),
            backup_retention_s=(
                parse_duration(backups, "HEADWATER_BACKUP_RETENTION") if backups else None
            ),
            erased_user_policy=_policy(_env("HEADWATER_ERASED_USER_POLICY", "accept")),
            lag_groups=tuple(
                g.strip() for g in _env("HEADWATER_LAG_GROUPS", "").split(",") if g.strip()
            ),
            alert_webhook=_env("HEADWATER_ALERT_WEBHOOK", "") or None,
            features_file=_env("HEADWATER_FEATURES_FILE", "") or None,
            feature_lateness_s=parse_duration(
                _env("HEADWATER_FEATURE_LATENESS", "1h"), "HEADWATER_FEATURE_LATENESS"
            ),
            dashboard_sample_s=parse_duration(
                _env("HEADWATER_DASHBOARD_SAMPLE", "10s"), "HEADWATER_DASHBOARD_SAMPLE"
            ),
            feature_processes=_processes(_env("HEADWATER_FEATURE_PROCESSES", "auto")),
            bus_record_version=_record_version(_env("HEADWATER_BUS_RECORD_VERSION", "2")),
        )
