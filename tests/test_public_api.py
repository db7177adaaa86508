"""The public surface changes only on purpose: update this list when it should."""

from __future__ import annotations

import headwater
from headwater import errors

EXPECTED = [
    "BatchResult",
    "ChangePlan",
    "CompatibilityViolation",
    "ContractRegistry",
    "EventTypeDefinition",
    "FieldSpec",
    "Limits",
    "RegisteredEventType",
    "Rejection",
    "Settings",
    "Signal",
    "SignalValidator",
    "__version__",
    "decode_signal",
    "default_definitions",
    "encode_signal",
    "errors",
    "historical_features",
    "load_definitions",
    "make_signal",
    "open_control_database",
]


def test_public_names_are_pinned() -> None:
    assert sorted(headwater.__all__) == sorted(EXPECTED)
    for name in headwater.__all__:
        assert hasattr(headwater, name), name


def test_every_error_descends_from_the_root() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.HeadwaterError), name
        assert name in (errors.__doc__ or ""), f"{name} missing from the tree in errors.py"
