"""The feature kinds as the engine uses them: compiled where built, else pure Python.

Every kind's update and read is written once, in ``_kinds.py``, and the pass applying
them to a user's events in ``_pass.py``. Installed with a C compiler, setup.py compiles
both with Cython (pure-Python mode, C types from their ``.pxd`` files); without one the
same modules run as Python, more slowly, and a warning says so once. ``native=False``
asks for the Python form even where the compiled one is built: a property test holds
both forms to a reference engine in tests.

Bucketed, time-relative kinds (window_count, active_surfaces) leave out events beyond
the lateness bound (they are counted instead); all-time kinds take every event.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import cache
from importlib.machinery import ExtensionFileLoader
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from headwater.features import _kinds, _pass
from headwater.features._pass import FIRST, IDS, LATE, WATERMARK
from headwater.features.spec import FeatureSpec

if TYPE_CHECKING:
    from headwater.features import _rows

__all__ = [
    "FIRST",
    "IDS",
    "LATE",
    "NATIVE",
    "WATERMARK",
    "Form",
    "Reader",
    "SignalView",
    "compile_pass",
    "compile_row_pass",
    "compiled",
    "implementation",
    "reader_for",
]

log = logging.getLogger("headwater.features")


def compiled(module: ModuleType) -> bool:
    """True for a module Cython compiled (an extension module), False for Python."""
    return isinstance(getattr(module, "__loader__", None), ExtensionFileLoader)


#: True when the compiled form (``_kinds`` and ``_pass``) is built and importable.
NATIVE: bool = compiled(_kinds) and compiled(_pass)


class SignalView(Protocol):
    """What features read of a signal: a ``Signal``, or the consumer's form of it whose
    payload stays encoded until a feature needs it (most events never need it)."""

    @property
    def event_id(self) -> str: ...
    @property
    def event_type(self) -> str: ...
    @property
    def surface(self) -> str: ...
    @property
    def timestamp(self) -> datetime: ...
    @property
    def item_id(self) -> str | None: ...
    @property
    def payload(self) -> dict[str, Any] | msgspec.Raw: ...


#: ``read(value, now_ms)``: a feature's stored value as the API answers it.
Reader = Callable[[Any, int], Any]


#: One form of the engine: its ``_kinds`` module and its ``_pass`` module.
Form = tuple[ModuleType, ModuleType]


@cache
def _python_form() -> Form:
    if not (compiled(_kinds) or compiled(_pass)):
        return _kinds, _pass
    # Compiled modules shadow their sources: the sources are loaded again, as a package
    # of their own, so that _pass's relative import finds the Python _kinds.
    package = ModuleType("headwater.features._python")
    package.__path__ = []
    sys.modules[package.__name__] = package
    loaded = []
    for name in ("_kinds", "_pass"):
        source = Path(__file__).with_name(f"{name}.py")
        spec = importlib.util.spec_from_file_location(f"{package.__name__}.{name}", source)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load the Python form of the features from {source}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        setattr(package, name, module)
        spec.loader.exec_module(module)
        loaded.append(module)
    return loaded[0], loaded[1]


_warned = False


def implementation(native: bool | None = None) -> Form:
    """The engine's ``(_kinds, _pass)``: compiled (``native=True``, or ``None`` where
    they are built) or as Python."""
    global _warned  # noqa: PLW0603 - one warning per process
    if native is None:
        native = NATIVE
        if not native and not _warned:
            _warned = True
            log.warning("the compiled feature kinds are not built; using their Python form")
    if not native:
        return _python_form()
    if not NATIVE:
        raise RuntimeError("headwater.features._kinds is not compiled (reinstall headwater)")
    return _kinds, _pass


def compile_pass(specs: Sequence[FeatureSpec], *, native: bool | None = None) -> _pass.FeaturePass:
    """One pass applying every feature of ``specs`` to a user's events: ``apply`` over
    signals, ``apply_batch`` over a slice of a ``signals.SignalBatch``."""
    kinds, passes = implementation(native)
    features: _pass.FeaturePass = passes.FeaturePass([kinds.kind_for(s) for s in specs])
    return features


def compile_row_pass(
    features: _pass.FeaturePass, *, native: bool | None = None
) -> _rows.RowPass | None:
    """The pass over a batch's stored rows in C (``_rows.RowPass``) for ``features``, or
    None: where ``_rows`` is not built, for the Python form (``native=False``), or for
    kinds ``_rows`` does not apply. None leaves the rows to ``features.apply_rows``."""
    if native is False or not NATIVE:
        return None
    try:
        from headwater.features import _rows as rows
    except ImportError:
        return None
    return rows.row_pass(features)


def reader_for(spec: FeatureSpec, *, native: bool | None = None) -> Reader:
    """The read function of a feature (turns stored state into the API value)."""
    kind: _kinds.Kind = implementation(native)[0].kind_for(spec)
    return kind.read
