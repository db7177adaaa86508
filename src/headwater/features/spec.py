"""Feature definitions: what to compute per user, declared once, not coded per consumer.

A feature is a value with a kind (count, window_count, recent_items, last_event,
mean, last_time, active_surfaces), the event types that feed it, and the kind's
parameters. A new feature is a new definition in this list or in a YAML file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import msgspec
import yaml

from headwater._duration import parse_duration
from headwater.errors import ConfigurationError

__all__ = ["DEFAULT_FEATURES", "KINDS", "FeatureSpec", "load_features"]

Kind = Literal[
    "count", "window_count", "recent_items", "last_event", "mean", "last_time", "active_surfaces"
]
#: Each is defined once, update and read, in ``_kinds.py``.
KINDS: tuple[str, ...] = get_args(Kind)


class FeatureSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One declared feature.

    ``event_types`` ``("*",)`` means every type. ``windows_s`` are the rolling windows of
    window_count; ``size`` bounds recent_items; ``field`` is the payload field of mean;
    ``fields`` are the payload fields last_event keeps; ``remove_when`` removes an item
    from recent_items when a payload field has a value (e.g. ``action: remove``).
    """

    name: str
    kind: Kind
    event_types: tuple[str, ...] = ("*",)
    windows_s: tuple[float, ...] = ()
    size: int = 20
    field: str = ""
    fields: tuple[str, ...] = ()
    window_s: float = 86_400.0
    remove_when: dict[str, str] = {}
    description: str = ""

    def feeds_on(self, event_type: str) -> bool:
        """True when events of this type update the feature."""
        return "*" in self.event_types or event_type in self.event_types


DEFAULT_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec(name="counts", kind="count", description="All-time events per type"),
    FeatureSpec(
        name="window_counts",
        kind="window_count",
        windows_s=(3600.0, 86_400.0, 604_800.0),
        description="Events per type over the last 1 h, 24 h and 7 d",
    ),
    FeatureSpec(
        name="recently_viewed",
        kind="recent_items",
        event_types=("view",),
        size=20,
        description="Last 20 distinct items viewed, most recent first",
    ),
    FeatureSpec(name="recently_clicked", kind="recent_items", event_types=("click",), size=20),
    FeatureSpec(
        name="recently_saved",
        kind="recent_items",
        event_types=("save",),
        size=20,
        remove_when={"action": "remove"},
    ),
    FeatureSpec(
        name="last_purchase",
        kind="last_event",
        event_types=("purchase",),
        fields=("order_id", "price", "currency", "quantity"),
    ),
    FeatureSpec(
        name="rating",
        kind="mean",
        event_types=("rating",),
        field="rating",
        description="Mean and count of the user's ratings",
    ),
    FeatureSpec(name="last_event_at", kind="last_time"),
    FeatureSpec(name="active_surfaces_24h", kind="active_surfaces", window_s=86_400.0),
)


def load_features(path: str | Path) -> tuple[FeatureSpec, ...]:
    """Feature definitions from a YAML file: ``features: [{name, kind, ...}, ...]``."""
    try:
        doc: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{path}: {exc}") from None
    items = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ConfigurationError(f"{path}: expected 'features:' with a list of definitions")
    specs = []
    for raw in items:
        if not isinstance(raw, dict):
            raise ConfigurationError(f"{path}: each feature is a mapping")
        data = dict(raw)
        if "windows" in data:
            data["windows_s"] = [parse_duration(w, f"{path}: windows") for w in data.pop("windows")]
        if "window" in data:
            data["window_s"] = parse_duration(data.pop("window"), f"{path}: window")
        try:
            specs.append(msgspec.convert(data, FeatureSpec))
        except msgspec.ValidationError as exc:
            raise ConfigurationError(f"{path}: feature {raw.get('name')!r}: {exc}") from None
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{path}: feature names repeat")
    return tuple(specs)
