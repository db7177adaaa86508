"""Small, reproducible signal histories for archive, batch and recommendation tests."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from headwater.bus.base import KIND_SIGNAL, Record, partition_for
from headwater.contract.signal import Signal, encode_signal
from headwater.demo.traffic import item_brand, item_category
from headwater.erasure.subject import SubjectHasher

START = date(2026, 3, 1)
TYPES = (
    "view",
    "view",
    "view",
    "click",
    "click",
    "save",
    "add_to_cart",
    "purchase",
    "search",
    "rating",
    "dismiss",
)

#: The keyed hash the tests' archive consumers write and erase by.
SUBJECT = SubjectHasher(b"k" * 32)


def signal(
    n: int,
    etype: str,
    user: str,
    item: str | None,
    day: date,
    *,
    minute: int = 0,
    surface: str = "web",
    **payload: Any,
) -> Signal:
    """One signal at ``day`` + ``minute`` (UTC), with the catalog fields of its item."""
    at = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(minutes=minute)
    body: dict[str, Any] = dict(payload)
    if item is not None and etype in ("view", "click", "add_to_cart", "purchase"):
        body.setdefault("category", item_category(item))
        body.setdefault("brand", item_brand(item))
    if etype in ("add_to_cart", "purchase"):
        body.setdefault("price", 10.0)
        body.setdefault("quantity", 1)
    return Signal(
        event_id=f"e{n}",
        event_type=etype,
        user_id=user,
        surface=surface,
        timestamp=at,
        payload=body,
        item_id=item,
        producer="test",
        received_at=at,
        schema_version=1,
    )


def history(
    n: int, *, days: int = 10, users: int = 40, items: int = 60, seed: int = 3, start: date = START
) -> list[Signal]:
    """``n`` skewed signals over ``days`` days from ``start``."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        etype = rng.choice(TYPES)
        user = f"u{int(rng.paretovariate(1.1)) % users:03d}"
        item = None if etype == "search" else f"i{int(rng.paretovariate(0.9)) % items:03d}"
        surface = rng.choice(("web", "web", "ios", "android"))
        payload = {"rating": rng.randint(1, 5)} if etype == "rating" else {}
        out.append(
            signal(
                i,
                etype,
                user,
                item,
                start + timedelta(days=rng.randrange(days)),
                minute=rng.randrange(1440),
                surface=surface,
                **payload,
            )
        )
    return out


def records(
    signals: Iterable[Signal], partitions: int = 4, offsets: dict[int, int] | None = None
) -> list[Record]:
    """Bus records of signals, keyed by user, offsets counting on from ``offsets``."""
    next_offset = offsets if offsets is not None else {}
    out = []
    for s in signals:
        p = partition_for(s.user_id, partitions)
        off = next_offset.get(p, 0)
        next_offset[p] = off + 1
        out.append(Record(p, off, s.user_id, KIND_SIGNAL, encode_signal(s), 0))
    return out


def without_user(signals: Sequence[Signal], user: str) -> list[Signal]:
    """The history as if ``user`` had never been there."""
    return [s for s in signals if s.user_id != user]
