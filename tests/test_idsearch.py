"""Ids searched as whole tokens: every way ``Needles`` searches counts as a plain scan does."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from headwater._idsearch import Needles

_ID = st.text(alphabet="abcu01-_", min_size=1, max_size=6)
_TOKEN_BYTES = re.compile(rb"[A-Za-z0-9_.@-]+")


def _reference(view: bytes, ids: set[str]) -> dict[str, int]:
    """Each id's whole-token occurrences, one maximal run of id bytes at a time."""
    counts = dict.fromkeys(ids, 0)
    for token in _TOKEN_BYTES.findall(view):
        text = token.decode()
        if text in counts:
            counts[text] += 1
    return counts


@settings(max_examples=200, deadline=None)
@given(
    ids=st.sets(_ID, min_size=1, max_size=6),
    parts=st.lists(st.one_of(_ID, st.sampled_from([" ", '"', ",", "\x00", "é"])), max_size=40),
    automaton=st.booleans(),
)
def test_every_search_counts_whole_tokens_as_a_plain_scan_does(
    ids: set[str], parts: list[str], automaton: bool
) -> None:
    view = "".join(parts).encode()
    needles = Needles(ids, automaton=automaton)
    expected = _reference(view, ids)
    assert needles.count(view) == expected
    assert needles.any_in(view) == any(expected.values())
    seen = [(value, at) for value, at, _ in needles.occurrences(view)]
    assert len(seen) == len(set(seen))
    for value, at in seen:
        assert view[at : at + len(value.encode())] == value.encode()
