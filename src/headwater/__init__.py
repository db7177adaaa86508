"""headwater: one contract, one bus, fresh features and provable erasure for interaction signals.

The public surface is what ``__all__`` lists; modules whose names start with an
underscore, and names not listed here, may change without notice.
"""

from __future__ import annotations

from headwater import errors
from headwater.config import Settings
from headwater.contract.compat import Violation as CompatibilityViolation
from headwater.contract.definition import EventTypeDefinition, FieldSpec, RegisteredEventType
from headwater.contract.loader import default_definitions, load_definitions
from headwater.contract.registry import ChangePlan, ContractRegistry
from headwater.contract.signal import Signal, decode_signal, encode_signal, make_signal
from headwater.contract.validator import BatchResult, Limits, Rejection, SignalValidator
from headwater.control import open_control_database

__version__ = "0.1.0"

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
    "load_definitions",
    "make_signal",
    "open_control_database",
]
