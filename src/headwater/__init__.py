"""headwater: one contract, one bus, fresh features and provable erasure for interaction signals.

The public surface is what ``__all__`` lists; modules whose names start with an
underscore, and names not listed here, may change without notice.

Names load on first use: ``import headwater.client`` (the producer SDK) pulls in none
of the server's modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from headwater import errors
    from headwater.application.training import historical_features
    from headwater.config import Settings
    from headwater.contract.compat import Violation as CompatibilityViolation
    from headwater.contract.definition import (
        EventTypeDefinition,
        FieldSpec,
        RegisteredEventType,
    )
    from headwater.contract.loader import default_definitions, load_definitions
    from headwater.contract.signal import Signal, decode_signal, encode_signal, make_signal
    from headwater.contract.validator import BatchResult, Limits, Rejection, SignalValidator
    from headwater.control import open_control_database
    from headwater.registry.contracts import ChangePlan, ContractRegistry

__version__ = "0.1.0"

#: Public name -> (module, attribute in it).
_LAZY: dict[str, tuple[str, str]] = {
    "BatchResult": ("headwater.contract.validator", "BatchResult"),
    "ChangePlan": ("headwater.registry.contracts", "ChangePlan"),
    "CompatibilityViolation": ("headwater.contract.compat", "Violation"),
    "ContractRegistry": ("headwater.registry.contracts", "ContractRegistry"),
    "EventTypeDefinition": ("headwater.contract.definition", "EventTypeDefinition"),
    "FieldSpec": ("headwater.contract.definition", "FieldSpec"),
    "Limits": ("headwater.contract.validator", "Limits"),
    "RegisteredEventType": ("headwater.contract.definition", "RegisteredEventType"),
    "Rejection": ("headwater.contract.validator", "Rejection"),
    "Settings": ("headwater.config", "Settings"),
    "Signal": ("headwater.contract.signal", "Signal"),
    "SignalValidator": ("headwater.contract.validator", "SignalValidator"),
    "decode_signal": ("headwater.contract.signal", "decode_signal"),
    "default_definitions": ("headwater.contract.loader", "default_definitions"),
    "encode_signal": ("headwater.contract.signal", "encode_signal"),
    "historical_features": ("headwater.application.training", "historical_features"),
    "load_definitions": ("headwater.contract.loader", "load_definitions"),
    "make_signal": ("headwater.contract.signal", "make_signal"),
    "open_control_database": ("headwater.control", "open_control_database"),
}

__all__ = [
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


def __getattr__(name: str) -> Any:
    if name == "errors":
        return importlib.import_module("headwater.errors")
    found = _LAZY.get(name)
    if found is None:
        raise AttributeError(f"module 'headwater' has no attribute {name!r}")
    value = getattr(importlib.import_module(found[0]), found[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
