"""Observability tests on a gateway over the embedded backends."""

from tests._gateway_fixtures import auth, client, hw, web_key

__all__ = ["auth", "client", "hw", "web_key"]
