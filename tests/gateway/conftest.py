"""A gateway on the embedded backends in a temporary directory."""

from tests._gateway_fixtures import auth, client, hw, web_key

__all__ = ["auth", "client", "hw", "web_key"]
