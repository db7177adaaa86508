"""A gateway on the embedded backends in a temporary directory."""

from tests._gateway_fixtures import admin_key, auth, client, hw, web_key

__all__ = ["admin_key", "auth", "client", "hw", "web_key"]
