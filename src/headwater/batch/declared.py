"""Batch features declared in the features file: ``batch:`` beside ``features:``.

Three kinds, each turned into SQL by one generator in ``batch/kinds.py``:

- ``affinity``: per user, the shares of an item attribute (``category`` or ``brand``)
  in the user's weighted interactions over a window; a field of the ``user_batch`` row.
- ``co_visitation``: per item, the items the same users interacted with the same day;
  its own online-store namespace, named after the feature.
- ``popularity``: the top items per surface (and over every surface) over a window,
  optionally per day; its own namespace, named after the feature.

With no ``batch:`` section the batch computes ``default_batch_features(cfg)``: exactly
the outputs it computed before features could be declared. The file is checked when it
is read; an error names the feature, the key and the rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import yaml

from headwater._duration import parse_duration
from headwater.batch.namespaces import ITEM_COVIS, ITEM_POP, USER_BATCH
from headwater.errors import ConfigurationError

if TYPE_CHECKING:
    from headwater.batch.settings import BatchSettings

__all__ = [
    "ATTRIBUTES",
    "BATCH_KINDS",
    "EVENT_WEIGHTS",
    "TYPE_COLUMNS",
    "BatchFeature",
    "check_windows",
    "default_batch_features",
    "load_batch_features",
    "parse_batch_features",
    "user_row_fields",
    "user_row_names",
]

#: How much one event of a type says about a user's interest in an item. Types not
#: listed (search, dismiss, rating) are not aggregated by the batch at all.
EVENT_WEIGHTS: dict[str, int] = {"view": 1, "click": 2, "save": 3, "add_to_cart": 3, "purchase": 5}
#: The per-type count column of the day aggregates, for each event type the batch reads.
TYPE_COLUMNS: dict[str, str] = {
    "view": "views",
    "click": "clicks",
    "save": "saves",
    "add_to_cart": "add_to_carts",
    "purchase": "purchases",
}
#: The item attributes an affinity can be computed over (columns of the day aggregates).
ATTRIBUTES = ("category", "brand")
BatchKind = Literal["affinity", "co_visitation", "popularity"]
BATCH_KINDS: tuple[str, ...] = ("affinity", "co_visitation", "popularity")
#: The co-visitation basket of the precomputed pair table (``item_pair_day``).
COVIS_TYPES = ("view", "click", "purchase")

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
#: Namespaces an item feature cannot take: the batch's user rows and the stream's.
_RESERVED = {USER_BATCH, "user", "slo", "as_of"}
_KEYS = {
    "affinity": {"attribute", "window", "window_days", "event_types", "weights", "top_k"},
    "co_visitation": {"window", "window_days", "event_types", "top_k", "min_support"}
    | {"items_per_user_day"},
    "popularity": {"window", "window_days", "event_types", "weights", "top_k", "daily"},
}
_COMMON = {"name", "kind", "description"}


def user_row_fields(cfg: BatchSettings) -> tuple[str, ...]:
    """The fields of the user row that are not declared (computed for every user)."""
    long_n, short_n = cfg.lookback_days, cfg.affinity_short_days
    return (
        "as_of",
        f"distinct_items_viewed_{long_n}d",
        f"purchases_{long_n}d",
        f"spend_{long_n}d",
        f"active_days_{long_n}d",
        "last_active_day",
        f"purchased_items_{long_n}d",
        f"top_items_{short_n}d",
    )


def user_row_names(cfg: BatchSettings) -> tuple[str, ...]:
    """Every field of the user row but ``as_of``: the declared affinities, then the rest."""
    declared = tuple(f.name for f in cfg.features() if f.kind == "affinity")
    return declared + user_row_fields(cfg)[1:]


class BatchFeature(msgspec.Struct, frozen=True, kw_only=True):
    """One declared batch feature (see the module docstring for the kinds)."""

    name: str
    kind: BatchKind
    window_days: int
    top_k: int
    #: Event type -> weight; the types that feed the feature (co_visitation: weights unused).
    weights: dict[str, float]
    attribute: str = ""
    min_support: int = 1
    items_per_user_day: int = 30
    daily: bool = False
    description: str = ""

    @property
    def default_weights(self) -> bool:
        """True when the weights are the batch's own (the day aggregates' ``weight``)."""
        return self.weights == EVENT_WEIGHTS


def default_batch_features(cfg: BatchSettings) -> tuple[BatchFeature, ...]:
    """What the batch computes when the features file declares no ``batch:`` section."""
    short_n, long_n = cfg.affinity_short_days, cfg.lookback_days
    weights = {t: float(w) for t, w in EVENT_WEIGHTS.items()}
    affinities = [
        BatchFeature(
            name=f"{attr}_affinity_{days}d",
            kind="affinity",
            attribute=attr,
            window_days=days,
            top_k=cfg.affinity_top_n,
            weights=weights,
        )
        for attr in ATTRIBUTES
        for days in (short_n, long_n)
    ]
    return (
        *affinities,
        BatchFeature(
            name=ITEM_COVIS,
            kind="co_visitation",
            window_days=cfg.covis_days,
            top_k=cfg.covis_top_n,
            weights=dict.fromkeys(COVIS_TYPES, 1.0),
            min_support=cfg.covis_min_support,
            items_per_user_day=cfg.covis_items_per_user_day,
        ),
        BatchFeature(
            name=ITEM_POP,
            kind="popularity",
            window_days=cfg.popularity_days,
            top_k=cfg.popularity_top_n,
            weights=weights,
            daily=True,
        ),
    )


def _positive_int(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{where}: must be a whole number of at least 1, not {value!r}")
    return value


def _window_days(where: str, raw: Mapping[str, Any]) -> int:
    if "window" in raw and "window_days" in raw:
        raise ConfigurationError(f"{where}: give 'window' or 'window_days', not both")
    if "window_days" in raw:
        return _positive_int(f"{where} 'window_days'", raw["window_days"])
    if "window" not in raw:
        raise ConfigurationError(f"{where}: 'window' is required (whole days, e.g. 30d)")
    seconds = parse_duration(raw["window"], f"{where} 'window'")
    if seconds % 86_400:
        raise ConfigurationError(
            f"{where} 'window': {raw['window']!r} is not a whole number of days "
            "(the batch aggregates by day)"
        )
    return int(seconds // 86_400)


def _types(where: str, value: object) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise ConfigurationError(f"{where}: must be a non-empty list of event types")
    for t in value:
        if t not in EVENT_WEIGHTS:
            raise ConfigurationError(
                f"{where}: {t!r} is not aggregated by the batch (one of {', '.join(EVENT_WEIGHTS)})"
            )
    if len(set(value)) != len(value):
        raise ConfigurationError(f"{where}: an event type repeats")
    return list(value)


def _weights(where: str, raw: Mapping[str, Any], kind: str) -> dict[str, float]:
    types = _types(f"{where} 'event_types'", raw["event_types"]) if "event_types" in raw else None
    if "weights" not in raw:
        if kind == "co_visitation":
            return dict.fromkeys(types or COVIS_TYPES, 1.0)
        return {t: float(EVENT_WEIGHTS[t]) for t in types or EVENT_WEIGHTS}
    given = raw["weights"]
    if not isinstance(given, dict) or not given:
        raise ConfigurationError(f"{where} 'weights': must be a mapping of event type to weight")
    _types(f"{where} 'weights'", list(given))
    out: dict[str, float] = {}
    for t, w in given.items():
        if isinstance(w, bool) or not isinstance(w, int | float) or not w > 0:
            raise ConfigurationError(f"{where} 'weights': {t}: must be a number above 0, not {w!r}")
        out[t] = float(w)
    if types is not None and set(types) != set(out):
        raise ConfigurationError(
            f"{where}: 'event_types' and 'weights' name different event types "
            "(give one of them, or the same types in both)"
        )
    return out


def _one(path: str, index: int, raw: object) -> BatchFeature:
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{path}: batch feature #{index + 1}: must be a mapping")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigurationError(
            f"{path}: batch feature #{index + 1} 'name': {name!r} must be lower-case letters, "
            "digits and '_', starting with a letter, at most 63 characters"
        )
    where = f"{path}: batch feature {name!r}"
    kind = raw.get("kind")
    if kind not in BATCH_KINDS:
        raise ConfigurationError(f"{where} 'kind': {kind!r} is not one of {', '.join(BATCH_KINDS)}")
    if kind == "co_visitation" and "weights" in raw:
        raise ConfigurationError(f"{where}: co_visitation counts users, it takes no 'weights'")
    unknown = sorted(set(raw) - _COMMON - _KEYS[kind])
    if unknown:
        raise ConfigurationError(
            f"{where}: {', '.join(repr(k) for k in unknown)} not a key of kind {kind} "
            f"(its keys: {', '.join(sorted(_KEYS[kind] | _COMMON))})"
        )
    fields: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "window_days": _window_days(where, raw),
        "weights": _weights(where, raw, kind),
        "description": str(raw.get("description") or ""),
    }
    if "top_k" not in raw:
        raise ConfigurationError(f"{where}: 'top_k' is required")
    fields["top_k"] = _positive_int(f"{where} 'top_k'", raw["top_k"])
    if kind == "affinity":
        attribute = raw.get("attribute")
        if attribute not in ATTRIBUTES:
            raise ConfigurationError(
                f"{where} 'attribute': {attribute!r} is not one of {', '.join(ATTRIBUTES)}"
            )
        fields["attribute"] = attribute
    elif kind == "co_visitation":
        for key, default in (("min_support", 1), ("items_per_user_day", 30)):
            fields[key] = _positive_int(f"{where} '{key}'", raw.get(key, default))
    elif "daily" in raw:
        if not isinstance(raw["daily"], bool):
            raise ConfigurationError(f"{where} 'daily': must be true or false")
        fields["daily"] = raw["daily"]
    return BatchFeature(**fields)


def parse_batch_features(items: object, path: str = "batch") -> tuple[BatchFeature, ...]:
    """Batch features from the ``batch:`` list of a features file, checked."""
    if not isinstance(items, list):
        raise ConfigurationError(f"{path}: 'batch:' must be a list of batch features")
    features = tuple(_one(path, i, raw) for i, raw in enumerate(items))
    seen: set[str] = set()
    for f in features:
        if f.name in seen:
            raise ConfigurationError(f"{path}: batch feature {f.name!r}: the name repeats")
        seen.add(f.name)
        if f.kind != "affinity" and f.name in _RESERVED:
            raise ConfigurationError(
                f"{path}: batch feature {f.name!r} 'name': {f.name!r} is a namespace of the "
                "online store that an item feature cannot take"
            )
    return features


def load_batch_features(path: str | Path) -> tuple[BatchFeature, ...] | None:
    """The ``batch:`` section of a features file; None when it has none (defaults apply)."""
    try:
        doc: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{path}: {exc}") from None
    if not isinstance(doc, dict) or "batch" not in doc:
        return None
    return parse_batch_features(doc["batch"], str(path))


def check_windows(features: Sequence[BatchFeature], cfg: BatchSettings, where: str) -> None:
    """Rules that depend on the deployment's batch settings: windows within the lookback
    (the day aggregates kept), and no affinity named like a fixed field of the user row."""
    fixed = set(user_row_fields(cfg))
    for f in features:
        if f.window_days > cfg.lookback_days:
            raise ConfigurationError(
                f"{where}: batch feature {f.name!r} 'window': {f.window_days} days is longer "
                f"than the batch keeps (HEADWATER_BATCH_LOOKBACK_DAYS={cfg.lookback_days})"
            )
        if f.kind == "affinity" and f.name in fixed:
            raise ConfigurationError(
                f"{where}: batch feature {f.name!r} 'name': the user row already has a field "
                "of that name"
            )
