"""The checks of a decoded batch's fast path: the compiled module (``contract/_accept.py``
compiled by Cython) answers as its source run as Python does, and leaves the events as
it does."""

from __future__ import annotations

import copy
import importlib.machinery
import importlib.util
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import msgspec
from hypothesis import given, settings

from headwater.contract import _accept as compiled
from headwater.contract import validator
from headwater.contract._compiled import TypedSignal
from headwater.contract.validator import Limits


def _as_python() -> Any:
    """``contract/_accept.py`` loaded from its source, not from the compiled module."""
    path = str(Path(compiled.__file__).with_name("_accept.py"))
    loader = importlib.machinery.SourceFileLoader("_accept_as_python", path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


_accepts_py = _as_python().accepts

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
WINDOW = Limits().window(NOW)


class View(TypedSignal, tag="view", kw_only=True):
    surface: str = "web"


# Each side of the window's edges, in UTC and with offsets.
instants = st.one_of(
    st.sampled_from([WINDOW.oldest, WINDOW.newest]).flatmap(
        lambda edge: st.integers(-2, 2).map(lambda us: edge + timedelta(microseconds=us))
    ),
    st.integers(-(10**13), 10**13).map(lambda us: NOW + timedelta(microseconds=us)),
)
offsets = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=9))])
unset = msgspec.UNSET
envelope = st.sampled_from(["producer", "received_at", "schema_version", "request_id"])


@st.composite
def events(draw: st.DrawFn) -> View:
    event = View(
        event_id=draw(st.text(min_size=1, max_size=3)),
        user_id="u",
        timestamp=draw(instants).astimezone(draw(offsets)),
    )
    if draw(st.integers(0, 9)) == 0:  # now and then a producer sets an envelope field
        setattr(event, draw(envelope), 1)
    return event


def _fields(batch: list[View]) -> list[tuple[Any, ...]]:
    return [
        (e.timestamp, e.timestamp.tzinfo, e.producer, e.received_at, e.schema_version)
        for e in batch
    ]


@settings(max_examples=500, deadline=None)
@given(st.lists(events(), max_size=8))
def test_the_compiled_checks_answer_and_leave_the_events_as_the_python_loop(
    batch: list[View],
) -> None:
    twin = copy.deepcopy(batch)
    fast = compiled.accepts(batch, WINDOW.oldest, WINDOW.newest, unset)  # type: ignore[arg-type]
    slow = _accepts_py(twin, WINDOW.oldest, WINDOW.newest, unset)  # type: ignore[arg-type]
    assert fast == slow
    assert _fields(batch) == _fields(twin)
    expected = all(
        WINDOW.oldest <= e.timestamp <= WINDOW.newest
        and e.producer is unset
        and e.received_at is unset
        and e.schema_version is unset
        and e.request_id is unset
        for e in copy.deepcopy(batch)
    )
    assert fast == expected
    if fast:
        assert all(e.timestamp.tzinfo is UTC for e in batch)


def test_the_validator_checks_through_the_compiled_loop() -> None:
    assert compiled.__file__.endswith(importlib.machinery.EXTENSION_SUFFIXES[0])
    assert validator.accepts is compiled.accepts
    assert _accepts_py is not compiled.accepts
