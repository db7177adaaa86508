"""The producer SDK against a real gateway."""

from tests._gateway_fixtures import hw

__all__ = ["hw"]
