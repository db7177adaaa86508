"""``headwater._gc.collector_paused``: no collection inside, the collector as it was after."""

from __future__ import annotations

import gc

import pytest

from headwater._gc import collector_paused


def test_the_collector_is_off_inside_and_as_it_was_after_even_on_an_error() -> None:
    assert gc.isenabled()
    runs: list[str] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        runs.append(phase)

    gc.callbacks.append(seen)
    try:
        with collector_paused():
            assert not gc.isenabled()
            _ = [[i] for i in range(10_000)]  # tracked containers: would trigger collections
            inside = len(runs)
        assert inside == 0
        assert gc.isenabled()
        with pytest.raises(RuntimeError), collector_paused():
            raise RuntimeError
        assert gc.isenabled()
        gc.disable()
        with collector_paused():
            pass
        assert not gc.isenabled()  # left off by its owner
    finally:
        gc.enable()
        gc.callbacks.remove(seen)
