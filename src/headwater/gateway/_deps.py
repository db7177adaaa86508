"""What a route needs from the running application."""

from __future__ import annotations

from fastapi import Request

from headwater.application import Application

__all__ = ["application"]


def application(request: Request) -> Application:
    """The application the gateway serves (set on the app by ``create_app``)."""
    app: Application = request.app.state.application
    return app
