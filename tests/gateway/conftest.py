"""A gateway on the embedded backends in a temporary directory."""

from tests._gateway_fixtures import auth, client, services, web_key

__all__ = ["auth", "client", "services", "web_key"]
