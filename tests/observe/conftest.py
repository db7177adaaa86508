"""Observability tests on a gateway over the embedded backends."""

from tests._gateway_fixtures import admin_key, auth, client, hw, web_key

__all__ = ["admin_key", "auth", "client", "hw", "web_key"]
