"""Simulated signals from six teams: skewed users and items, a realistic mix, some invalid.

Users and items follow a Zipf-like skew (a few are very active or popular), each team
emits the event types its product has, and a configurable share of events is broken
in one of the ways real producers break them.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from headwater._time import format_time

__all__ = ["CATEGORIES", "TEAMS", "Traffic", "item_brand", "item_category"]

CATEGORIES = (
    "shoes",
    "jackets",
    "books",
    "kitchen",
    "toys",
    "garden",
    "audio",
    "beauty",
    "sports",
    "games",
    "tools",
    "jewelry",
)
BRANDS = (
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark",
    "wayne",
    "wonka",
    "tyrell",
    "cyberdyne",
    "soylent",
    "gringotts",
)

#: team -> (surface, weighted event types it emits)
TEAMS: dict[str, tuple[str, tuple[tuple[str, int], ...]]] = {
    "web": (
        "web",
        (
            ("view", 60),
            ("click", 25),
            ("save", 5),
            ("add_to_cart", 6),
            ("purchase", 2),
            ("dismiss", 2),
        ),
    ),
    "ios": (
        "ios",
        (
            ("view", 55),
            ("click", 25),
            ("save", 8),
            ("add_to_cart", 7),
            ("purchase", 3),
            ("dismiss", 2),
        ),
    ),
    "android": (
        "android",
        (
            ("view", 55),
            ("click", 25),
            ("save", 8),
            ("add_to_cart", 7),
            ("purchase", 3),
            ("dismiss", 2),
        ),
    ),
    "search": ("search", (("search", 60), ("click", 30), ("view", 10))),
    "checkout": ("checkout", (("add_to_cart", 70), ("purchase", 30))),
    "reviews": ("reviews", (("rating", 100),)),
}


def item_category(item_id: str) -> str:
    """The catalog category of a simulated item (stable for a given id)."""
    return CATEGORIES[hash_text(item_id) % len(CATEGORIES)]


def item_brand(item_id: str) -> str:
    """The brand of a simulated item (stable for a given id)."""
    return BRANDS[(hash_text(item_id) // 7) % len(BRANDS)]


def hash_text(text: str) -> int:
    """A stable, process-independent hash (Python's own is salted per process)."""
    h = 2166136261
    for ch in text.encode():
        h = ((h ^ ch) * 16777619) & 0xFFFFFFFF
    return h


class _Zipf:
    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        weights = [1.0 / (k**s) for k in range(1, n + 1)]
        self._cum = list(itertools.accumulate(weights))
        self._total = self._cum[-1]
        self._rng = rng
        # Shuffle ranks so popular ids are not simply the smallest numbers.
        self._ids = list(range(n))
        rng.shuffle(self._ids)

    def draw(self) -> int:
        return self._ids[bisect.bisect_left(self._cum, self._rng.random() * self._total)]


def _catalog(item: str) -> dict[str, Any]:
    return {"category": item_category(item), "brand": item_brand(item)}


def _view(r: random.Random, item: str) -> dict[str, Any]:
    page = r.choice(["home", "category", "product", "search_results"])
    return {
        "dwell_ms": r.randint(200, 90_000),
        "position": r.randint(0, 40),
        "page": page,
        **_catalog(item),
    }


def _click(r: random.Random, item: str) -> dict[str, Any]:
    slot = r.choice(["home_top", "pdp_similar", "cart_upsell"])
    return {"position": r.randint(0, 40), "slot": slot, **_catalog(item)}


def _cart(r: random.Random, item: str) -> dict[str, Any]:
    return {
        "quantity": r.randint(1, 3),
        "price": round(r.uniform(3, 300), 2),
        "currency": "USD",
        **_catalog(item),
    }


def _purchase(r: random.Random, item: str) -> dict[str, Any]:
    return {"order_id": f"o{r.getrandbits(40):x}", **_cart(r, item)}


def _rating(r: random.Random, _item: str) -> dict[str, Any]:
    stars = r.choices([1, 2, 3, 4, 5], [5, 5, 15, 35, 40])[0]
    return {"rating": stars, "verified_purchase": r.random() < 0.7}


def _search(r: random.Random, _item: str) -> dict[str, Any]:
    query = r.choice(
        ["running shoes", "rain jacket", "cookbook", "lego", "headphones", "garden hose"]
    )
    return {"query": query, "results": r.randint(0, 500)}


_PAYLOADS: dict[str, Callable[[random.Random, str], dict[str, Any]]] = {
    "view": _view,
    "click": _click,
    "save": lambda r, _i: {"action": "add" if r.random() < 0.9 else "remove", "list_id": "default"},
    "dismiss": lambda r, _i: {"reason": r.choice(["not_interested", "already_own", "other"])},
    "add_to_cart": _cart,
    "purchase": _purchase,
    "rating": _rating,
    "search": _search,
}


class Traffic:
    """A reproducible stream of simulated signals."""

    def __init__(
        self,
        *,
        users: int = 10_000,
        items: int = 5_000,
        seed: int = 7,
        invalid_rate: float = 0.0,
        now: Callable[[], datetime] | None = None,
        max_age: timedelta = timedelta(hours=6),
        late_share: float = 0.03,
    ) -> None:
        self.rng = random.Random(seed)
        self.users = _Zipf(users, 1.1, self.rng)
        self.items = _Zipf(items, 1.2, self.rng)
        self.invalid_rate = invalid_rate
        self.now = now or (lambda: datetime.now(UTC))
        self.max_age = max_age
        self.late_share = late_share
        self._seq = itertools.count()
        self._run = f"{self.rng.getrandbits(32):08x}"
        self._team_cycle = itertools.cycle(
            [t for t in TEAMS for _ in range(3 if t in ("web", "ios", "android") else 1)]
        )

    def user(self) -> str:
        """A user id drawn with skew."""
        return f"u{self.users.draw():07d}"

    def item(self) -> str:
        """An item id drawn with skew."""
        return f"i{self.items.draw():06d}"

    def event(
        self,
        team: str | None = None,
        *,
        user_id: str | None = None,
        event_type: str | None = None,
        age: timedelta | None = None,
    ) -> dict[str, Any]:
        """One valid event as a producer would send it (timestamp as RFC 3339)."""
        team = team or next(self._team_cycle)
        surface, mix = TEAMS[team]
        if event_type is None:
            event_type = self.rng.choices([t for t, _ in mix], [w for _, w in mix])[0]
        if age is None:
            # Most signals arrive within seconds of happening; a few (offline mobile
            # clients, retries) arrive late, up to max_age.
            if self.rng.random() < self.late_share:
                age = timedelta(seconds=self.rng.random() * self.max_age.total_seconds())
            else:
                age = timedelta(seconds=self.rng.expovariate(1 / 1.5))
        item = self.item()
        event: dict[str, Any] = {
            "event_id": f"{team}-{self._run}-{next(self._seq)}",
            "event_type": event_type,
            "user_id": user_id or self.user(),
            "item_id": item,
            "surface": surface,
            "timestamp": format_time(self.now() - age),
            "payload": self._payload(event_type, item),
        }
        if event_type == "search":
            del event["item_id"]
        return event

    def _payload(self, event_type: str, item: str) -> dict[str, Any]:
        build = _PAYLOADS.get(event_type)
        return build(self.rng, item) if build else {}

    def breaking(self, event: dict[str, Any]) -> dict[str, Any]:
        """The event broken in one of the ways producers break events."""
        broken = dict(event)
        broken["payload"] = dict(event.get("payload", {}))
        how = self.rng.randrange(10)
        if how == 0:
            broken["event_type"] = "viewed_item"
        elif how == 1:
            broken["surface"] = "smart_tv"
        elif how == 2:
            broken["payload"]["session_color"] = "blue"
        elif how == 3:
            broken["user_id"] = ""
        elif how == 4:
            broken["timestamp"] = "2026-01-01T10:00:00"
        elif how == 5:
            broken["timestamp"] = "2019-06-01T10:00:00Z"
        elif how == 6:
            broken["producer"] = "someone-else"
        elif how == 7:
            broken["event_type"], broken["payload"] = "rating", {"rating": 9}
        elif how == 8:
            broken["event_type"], broken["payload"] = "purchase", {"quantity": "two"}
        else:
            broken.pop("event_id")
        return broken

    def batch(self, n: int, team: str | None = None) -> list[dict[str, Any]]:
        """``n`` events, a share of them broken (``invalid_rate``)."""
        out = []
        for _ in range(n):
            event = self.event(team)
            if self.invalid_rate and self.rng.random() < self.invalid_rate:
                event = self.breaking(event)
            out.append(event)
        return out

    def stream(self, team: str | None = None) -> Iterator[dict[str, Any]]:
        """An endless stream of events."""
        while True:
            yield from self.batch(100, team)
