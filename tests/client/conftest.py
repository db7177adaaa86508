"""The producer SDK against a real gateway."""

from tests._gateway_fixtures import services

__all__ = ["services"]
