"""Path parameters that carry a user id, which is any text."""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor

__all__ = ["USER"]


class _AnyText(Convertor[str]):
    """Any non-empty text, ``/`` and line breaks included: a user id is any text of 1 to
    128 characters, sent percent-encoded, and routes are matched on the decoded path."""

    regex = "(?s:.+)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("any_text", _AnyText())

#: The path of one user's resources: ``f"{USER}/features"``.
USER = "/v1/users/{user_id:any_text}"
