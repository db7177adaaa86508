"""Declared features compiled into one Python function: a single pass over a user's events.

Applying nine features as nine functions, each looping over the user's events, paid a
call and a loop set-up per feature per user per batch, and with two or three events per
user per batch under Zipf skew those fixed costs were most of the work. Here each kind
contributes the lines that update its state for one event; they are assembled, in
declaration order, into the body of one loop and compiled once per feature list. Each
feature touches only its own key of the state, so applying them event by event leaves
the state that applying them feature by feature leaves (a property test checks this
against a plain per-event engine).

The generated code only ever names the feature (as a string constant) and the kind's
parameters, all taken from validated ``FeatureSpec`` values and passed to the function
as constants, never spliced into the source.

``compile_native`` builds the same pass compiled to C (``_native.pyx``), and
``compile_pass`` takes it where it is built: this generated function is the fallback
where no C compiler was found at install, and the second implementation the property
tests hold the compiled one to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from headwater.features.kinds import (
    HOUR_MS,
    HOURS_KEPT,
    MINUTE_MS,
    MINUTES_KEPT,
    NATIVE,
    SKIPS_LATE,
    SignalView,
    payload_of,
    prune_buckets,
)
from headwater.features.spec import FeatureSpec

__all__ = [
    "FIRST",
    "IDS",
    "LATE",
    "NATIVE",
    "RECENT_IDS",
    "WATERMARK",
    "Fused",
    "compile_features",
    "compile_native",
    "compile_pass",
]

log = logging.getLogger("headwater.features")

IDS = "_ids"  # recent event ids of the user: a re-delivered event is not applied twice
WATERMARK = "_t"  # latest event time seen for the user (ms): the base of lateness
LATE = "_late"  # events beyond the lateness bound (kept out of bucketed features)
FIRST = "_first"  # earliest event time in the row (ms): proves a row postdates an erasure
RECENT_IDS = 32
_SCAN_IDS = 48  # above this many recent ids, duplicates are looked up in a set

#: ``apply(state, signals, lateness_ms) -> (applied, duplicates, late)``: one user's
#: signals in bus order applied to its state, skipping re-delivered event ids.
Fused = Callable[[dict[str, Any], Iterable[SignalView], int], tuple[int, int, int]]

#: Per event, before any feature: the idempotency check against the user's recent ids
#: (only for an event not after the watermark: a re-sent event carries its original
#: time), the earliest time, and the watermark that bounds lateness.
_PREAMBLE = """\
ids = state.get(IDS)
if ids is None:
    ids = state[IDS] = []
watermark = state.get(WATERMARK, 0)
first = state.get(FIRST, 0)
seen = None
applied = duplicates = lates = 0
"""
_EACH = """\
eid = sig.event_id
ts = int(sig.timestamp.timestamp() * 1000)
if ts <= watermark:
    if seen is None and len(ids) > SCAN_IDS:
        seen = set(ids)
    if eid in (ids if seen is None else seen):
        duplicates += 1
        continue
ids.append(eid)
if seen is not None:
    seen.add(eid)
if ts < first or not first:
    first = ts
late = ts < watermark - bound
if late:
    lates += 1
elif ts > watermark:
    watermark = ts
applied += 1
etype = sig.event_type
"""
_FINISH = """\
if len(ids) > RECENT_IDS:
    del ids[: len(ids) - RECENT_IDS]
state[WATERMARK] = watermark
state[FIRST] = first
if lates:
    state[LATE] = state.get(LATE, 0) + lates
return applied, duplicates, lates
"""


def _count(k: int) -> tuple[list[str], list[str], list[str]]:
    return (
        [f"v{k} = state.get(N{k})"],
        [
            f"if v{k} is None:",
            f"    v{k} = state[N{k}] = {{}}",
            f"v{k}[etype] = v{k}.get(etype, 0) + 1",
        ],
        [],
    )


def _window_count(k: int) -> tuple[list[str], list[str], list[str]]:
    return (
        [f"v{k} = state.get(N{k})"],
        [
            f"if v{k} is None:",
            f"    v{k} = state[N{k}] = {{}}",
            f"b{k} = v{k}.get(etype)",
            f"if b{k} is None:",
            f"    b{k} = v{k}[etype] = [{{}}, {{}}]",
            f"mins{k}, hrs{k} = b{k}",
            "m_ = ts // MINUTE_MS",
            "h_ = ts // HOUR_MS",
            f"mins{k}[m_] = mins{k}.get(m_, 0) + 1",
            f"hrs{k}[h_] = hrs{k}.get(h_, 0) + 1",
            f"if len(mins{k}) > MOST_MINUTES:",
            f"    prune(mins{k}, MINUTES_KEPT)",
            f"if len(hrs{k}) > MOST_HOURS:",
            f"    prune(hrs{k}, HOURS_KEPT)",
        ],
        [],
    )


def _recent_items(k: int, spec: FeatureSpec) -> tuple[list[str], list[str], list[str]]:
    removes = " and ".join(
        f"payload_of(sig).get(RK{k}[{i}]) == RV{k}[{i}]" for i in range(len(spec.remove_when))
    )
    return (
        [f"v{k} = state.get(N{k})"],
        [
            "item_ = sig.item_id",
            "if item_ is not None:",
            f"    if v{k} is None:",
            f"        v{k} = state[N{k}] = [[], []]",
            f"    items_, times_ = v{k}",
            "    go_ = True",
            "    if item_ in items_:",
            "        j_ = items_.index(item_)",
            "        if times_[j_] > ts:",
            "            go_ = False",
            "        else:",
            "            del items_[j_]",
            "            del times_[j_]",
            *([f"    if go_ and {removes}:", "        go_ = False"] if removes else []),
            "    if go_:",
            "        if not times_ or ts >= times_[0]:",
            "            items_.insert(0, item_)",
            "            times_.insert(0, ts)",
            f"            if len(items_) > S{k}:",
            "                items_.pop()",
            "                times_.pop()",
            "        else:",
            "            pos_ = 1",
            "            while pos_ < len(times_) and times_[pos_] > ts:",
            "                pos_ += 1",
            f"            if pos_ < S{k}:",
            "                items_.insert(pos_, item_)",
            "                times_.insert(pos_, ts)",
            f"                if len(items_) > S{k}:",
            "                    items_.pop()",
            "                    times_.pop()",
        ],
        [],
    )


def _last_event(k: int) -> tuple[list[str], list[str], list[str]]:
    return (
        [f"v{k} = state.get(N{k})"],
        [
            f"if v{k} is None or v{k}[0] <= ts:",
            "    p_ = payload_of(sig)",
            f"    v{k} = state[N{k}] = [ts, sig.item_id, {{f: p_[f] for f in F{k} if f in p_}}]",
        ],
        [],
    )


def _mean(k: int) -> tuple[list[str], list[str], list[str]]:
    return (
        [f"v{k} = state.get(N{k})"],
        [
            f"x_ = payload_of(sig).get(F{k})",
            "if not isinstance(x_, bool) and isinstance(x_, (int, float)):",
            f"    if v{k} is None:",
            f"        v{k} = state[N{k}] = [x_, 1]",
            "    else:",
            f"        v{k}[0] += x_",
            f"        v{k}[1] += 1",
        ],
        [],
    )


def _last_time(k: int) -> tuple[list[str], list[str], list[str]]:
    return (
        [f"v{k} = was{k} = state.get(N{k}, 0)"],
        [f"if ts > v{k}:", f"    v{k} = ts"],
        [f"if v{k} > was{k}:", f"    state[N{k}] = v{k}"],
    )


def _active_surfaces(k: int) -> tuple[list[str], list[str], list[str]]:
    return (
        [f"v{k} = state.get(N{k})"],
        [
            f"if v{k} is None:",
            f"    v{k} = state[N{k}] = {{}}",
            "s_ = sig.surface",
            f"if ts > v{k}.get(s_, 0):",
            f"    v{k}[s_] = ts",
        ],
        [],
    )


def _parts(k: int, spec: FeatureSpec) -> tuple[list[str], list[str], list[str]]:
    if spec.kind == "recent_items":
        return _recent_items(k, spec)
    return _SIMPLE[spec.kind](k)


_SIMPLE: dict[str, Callable[[int], tuple[list[str], list[str], list[str]]]] = {
    "count": _count,
    "window_count": _window_count,
    "last_event": _last_event,
    "mean": _mean,
    "last_time": _last_time,
    "active_surfaces": _active_surfaces,
}


def compile_features(specs: Sequence[FeatureSpec]) -> Fused:
    """One function applying every feature of ``specs`` in a single pass over events."""
    constants: dict[str, Any] = {
        "IDS": IDS,
        "WATERMARK": WATERMARK,
        "FIRST": FIRST,
        "LATE": LATE,
        "RECENT_IDS": RECENT_IDS,
        "SCAN_IDS": _SCAN_IDS,
        "payload_of": payload_of,
        "prune": prune_buckets,
        "MINUTE_MS": MINUTE_MS,
        "HOUR_MS": HOUR_MS,
        "MINUTES_KEPT": MINUTES_KEPT,
        "HOURS_KEPT": HOURS_KEPT,
        "MOST_MINUTES": 2 * MINUTES_KEPT,
        "MOST_HOURS": 2 * HOURS_KEPT,
    }
    setup: list[str] = []
    body: list[str] = []
    after: list[str] = []
    for k, spec in enumerate(specs):
        constants[f"N{k}"] = spec.name
        constants[f"S{k}"] = spec.size
        constants[f"F{k}"] = spec.fields if spec.kind == "last_event" else spec.field
        constants[f"RK{k}"] = tuple(spec.remove_when)
        constants[f"RV{k}"] = tuple(spec.remove_when.values())
        first, lines, last = _parts(k, spec)
        setup += first
        after += last
        conditions = []
        if "*" not in spec.event_types:
            constants[f"T{k}"] = frozenset(spec.event_types)
            conditions.append(f"etype in T{k}")
        if spec.kind in SKIPS_LATE:
            conditions.append("not late")
        if conditions:
            body.append(f"if {' and '.join(conditions)}:")
            body += [f"    {line}" for line in lines]
        else:
            body += lines
    source = "\n".join(
        [
            "def apply(state, signals, bound):",
            *[f"    {line}" for line in _PREAMBLE.splitlines() + setup],
            "    for sig in signals:",
            *[f"        {line}" for line in _EACH.splitlines() + body],
            *[f"    {line}" for line in after + _FINISH.splitlines()],
        ]
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, "<headwater features>", "exec"), constants, namespace)  # noqa: S102 - built from the templates above only
    fused: Fused = namespace["apply"]
    return fused


def compile_native(specs: Sequence[FeatureSpec]) -> Fused:
    """The same pass as ``compile_features``, compiled to C (``_native.pyx``)."""
    if not NATIVE:
        raise RuntimeError("headwater.features._native is not built (reinstall headwater)")
    from headwater.features import _native

    return _native.CompiledFeatures(
        [
            (
                _native.KIND_CODES[s.kind],
                s.name,
                None if "*" in s.event_types else frozenset(s.event_types),
                s.kind in SKIPS_LATE,
                s.size,
                s.field,
                s.fields,
                tuple(s.remove_when),
                tuple(s.remove_when.values()),
            )
            for s in specs
        ],
        payload_of=payload_of,
        prune=prune_buckets,
        ids_key=IDS,
        watermark_key=WATERMARK,
        first_key=FIRST,
        late_key=LATE,
        recent_ids=RECENT_IDS,
        scan_ids=_SCAN_IDS,
        minute_ms=MINUTE_MS,
        hour_ms=HOUR_MS,
        minutes_kept=MINUTES_KEPT,
        hours_kept=HOURS_KEPT,
    )


_warned = False


def compile_pass(specs: Sequence[FeatureSpec], *, native: bool | None = None) -> Fused:
    """The features' pass: compiled to C when built (``native=None``), else generated
    Python; ``native=True`` or ``False`` asks for one of them."""
    global _warned  # noqa: PLW0603 - one warning per process
    if native is None:
        native = NATIVE
        if not native and not _warned:
            _warned = True
            log.warning("the compiled feature pass is not built; using the Python pass")
    return compile_native(specs) if native else compile_features(specs)
