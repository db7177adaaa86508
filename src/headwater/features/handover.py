"""The hand-over of a staged backfill to the stream, done by the feature consumer itself.

Why it is exact. On partition ``p`` the staged values hold the archived records with
offsets below ``A`` (the archive's recorded position in the snapshot); the consumer's
stored position ``C`` says its rows hold the records below ``C``. The consumer does the
hand-over between two batches, in its own thread, when ``A <= C``: it replays the bus
records ``[A, C)`` of ``p`` into the staged states through the same pass, writes each
user's backfilled features into its row, and from its next batch (the records from
``C`` on) computes those features in the stream. Each record below ``A`` is counted by
the archive's fold, each in ``[A, C)`` by the replay, each from ``C`` on by the stream:
none twice, none missed. A crash before the hand-over is recorded repeats it whole
from the staged values (which it does not change), so it is idempotent.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from headwater.bus.base import KIND_SIGNAL, Bus, Record
from headwater.features.backfills import BackfillRun
from headwater.features.engine import DEFINITIONS, FeatureEngine
from headwater.features.kinds import FIRST, IDS, WATERMARK
from headwater.online.base import OnlineStore

__all__ = ["SUPERSEDED", "Superseded", "TailReader", "bus_tail", "take_over"]

#: ``tail(starts, ends)``: the bus records of each partition from ``starts[p]`` up to
#: (not including) ``ends[p]``, in offset order per partition, in batches.
TailReader = Callable[[Mapping[int, int], Mapping[int, int]], Iterator[list[Record]]]
_USERS_PER_WRITE = 5_000


class Superseded:
    """``take_over``'s answer when other members completed the run meanwhile."""


#: The run was completed by other members while this one read it: its staged values may
#: already be cleared, so nothing was written; the stream computes its features as ready.
SUPERSEDED = Superseded()


def bus_tail(
    bus: Bus, starts: Mapping[int, int], ends: Mapping[int, int]
) -> Iterator[list[Record]]:
    """The records of ``[starts[p], ends[p])``, read through a consumer group of its own
    whose position is first set to ``starts`` (and to the end on other partitions)."""
    group = f"features-handover-{uuid.uuid4().hex[:12]}"
    # The other partitions start at their end: nothing of them is read.
    positions = {lag.partition: lag.end for lag in bus.lag(group)}
    positions.update(starts)
    setter = bus.consumer(group)
    try:
        setter.commit(positions)
    finally:
        setter.close()
    reader = bus.consumer(group)
    try:
        left = {p: e for p, e in ends.items() if e > starts.get(p, 0)}
        while left:
            records = reader.poll(max_records=20_000, timeout=0.5)
            if not records:
                return  # read to the bus's end, which lies beyond every ``ends[p]``
            wanted = [r for r in records if r.partition in left and r.offset < left[r.partition]]
            for r in records:
                if r.partition in left and r.offset >= left[r.partition] - 1:
                    del left[r.partition]
            if wanted:
                yield wanted
    finally:
        reader.close()


def take_over(
    run: BackfillRun,
    engine: FeatureEngine,
    *,
    store: OnlineStore,
    namespace: str,
    group: str,
    tail: TailReader,
    partitions: set[int],
    positions: Mapping[int, int],
    partition_of: Callable[[str], int],
    fence: Mapping[int, int],
    decode: Callable[[bytes], Any],
    dropped: Callable[[Record], bool] = lambda _r: False,
    completed: Callable[[], bool] = lambda: False,
) -> dict[int, tuple[int, int]] | Superseded | None:
    """Hand the run's features over on ``partitions`` (at the stored ``positions`` of
    ``group``, writes fenced by ``fence``): replay the bus tail into the staged states,
    write the features into the rows of ``namespace``. ``engine`` computes exactly the
    run's features. Returns ``partition -> (archive position, stream position)``, or
    None while the stream is behind the archive on one of them (a later batch retries).

    ``completed`` says whether the ledger holds a hand-over of every partition (by other
    members: a partition of this one's came to it after its old owner wrote the
    hand-over but before that owner recorded it). The member that completes a run clears
    its staged values after recording, so ``completed`` is asked after each read of
    staged values and before writing what was computed from them: once it says yes,
    nothing more is written and :data:`SUPERSEDED` is returned. What was written before
    came from intact staged values and equals what the other member wrote."""
    starts = {p: run.positions.get(p, 0) for p in partitions}
    ends = {p: positions.get(p, 0) for p in partitions}
    if any(ends[p] < starts[p] for p in partitions):
        return None
    # The bus tail, per user in bus order; an erasure on the way empties the user's state.
    replay: dict[str, list[Any]] = {}
    erased: set[str] = set()
    for records in tail(starts, ends):
        for r in records:
            if r.kind != KIND_SIGNAL:
                replay[r.key] = []
                erased.add(r.key)
            elif not dropped(r):
                replay.setdefault(r.key, []).append(decode(r.value))
    staged = [u for u in store.keys(run.staging) if partition_of(u) in partitions]
    users = list(dict.fromkeys([*staged, *replay]))
    for start in range(0, len(users), _USERS_PER_WRITE):
        chunk = users[start : start + _USERS_PER_WRITE]
        stage = store.get(run.staging, chunk)
        if completed():
            return SUPERSEDED
        rows = store.get(namespace, chunk)
        out: dict[str, bytes] = {}
        for user in chunk:
            state = {} if user in erased else engine.decode(stage.get(user))
            signals = replay.get(user)
            if signals:
                engine.apply(state, signals)
            row = engine.decode(rows.get(user))
            if not row and not state:
                continue
            out[user] = engine.encode(_merged(row, state, run))
        if out:
            store.put(namespace, out, group=group, fence=fence)
    return {p: (starts[p], ends[p]) for p in partitions}


def _merged(row: dict[str, Any], state: dict[str, Any], run: BackfillRun) -> dict[str, Any]:
    """The row with the run's features taken from ``state``, each marked as computed
    under its definition; a row the stream never wrote takes the state's bookkeeping."""
    if run.kind == "rebuild" or not row:
        merged = dict(state)
    else:
        merged = row
        for name in run.features:
            if name in state:
                merged[name] = state[name]
            else:
                merged.pop(name, None)
    marks = {k: v for k, v in (row.get(DEFINITIONS) or {}).items() if k not in run.features}
    marks.update({n: v for n, v in run.features.items() if v != 1})
    if marks:
        merged[DEFINITIONS] = marks
    else:
        merged.pop(DEFINITIONS, None)
    for key in (IDS, WATERMARK, FIRST):
        if key not in merged and key in state:
            merged[key] = state[key]
    return merged
