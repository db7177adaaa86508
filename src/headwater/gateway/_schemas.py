"""The OpenAPI document's schemas, generated from the msgspec structures the routes
decode and encode (``msgspec.json.schema_components``): a field added to a structure
is documented by the same change, so the two cannot drift.

A route names its answer once, as an ``Answer`` of a structure: the same object gives
the route's ``responses`` entry and encodes what the route returns (``reply`` takes
only that structure, checked by mypy and at run time). Request bodies the routes read
raw are named with ``json_body``; every error is a ``Problem`` (``errors``).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Generic, TypeVar

import msgspec
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response

from headwater.gateway._errors import json_response
from headwater.wire import PROBLEM_JSON, Problem

__all__ = [
    "Answer",
    "errors",
    "install_openapi",
    "json_body",
    "models",
    "ref",
]

S = TypeVar("S", bound=msgspec.Struct)

_REF = "#/components/schemas/{name}"
_MODELS: dict[str, type[msgspec.Struct]] = {}


def ref(model: type[msgspec.Struct]) -> dict[str, Any]:
    """A reference to ``model``'s component schema (registering the model)."""
    name = model.__name__
    known = _MODELS.setdefault(name, model)
    if known is not model:
        raise TypeError(f"two structures named {name} in the OpenAPI document")
    return {"$ref": _REF.format(name=name)}


def models() -> dict[str, type[msgspec.Struct]]:
    """Every structure the document refers to, by component name."""
    return dict(_MODELS)


class Answer(Generic[S]):
    """A route's JSON answer: the structure it encodes and its OpenAPI entry."""

    def __init__(self, model: type[S], description: str, *statuses: int) -> None:
        self.model = model
        self.description = description
        self.statuses = statuses or (200,)
        self._schema = ref(model)

    def responses(self, *error_codes: int) -> dict[int | str, dict[str, Any]]:
        """The route's ``responses``: this answer, and the problem of each error code."""
        content = {"application/json": {"schema": self._schema}}
        out: dict[int | str, dict[str, Any]] = {
            status: {"description": self.description, "content": content}
            for status in self.statuses
        }
        return {**out, **errors(*error_codes)}

    def reply(self, value: S, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        """``value`` encoded as the answer (a value of another type is a bug: refused)."""
        if type(value) is not self.model:
            raise TypeError(f"answer of type {type(value).__name__}, documented {self.model}")
        return json_response(value, status, headers)


def json_body(model: type[msgspec.Struct]) -> dict[str, Any]:
    """``openapi_extra`` of a route that reads a JSON body as ``model`` (routes read bodies
    raw, within bounds, so the body is not a FastAPI parameter)."""
    content = {"application/json": {"schema": ref(model)}}
    return {"requestBody": {"required": True, "content": content}}


def _status_text(code: int) -> str:
    return f"{HTTPStatus(code).phrase}: a problem document (docs/problems.md: its types)"


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give: each a problem document."""
    schema = ref(Problem)
    return {
        code: {"description": _status_text(code), "content": {PROBLEM_JSON: {"schema": schema}}}
        for code in codes
    }


def _any(type_: Any) -> dict[str, Any]:
    # ``object`` (a value of any JSON type, e.g. a backfill's progress) has no constraint.
    if type_ is object:
        return {"description": "Any JSON value"}
    raise NotImplementedError(type_)


def components() -> dict[str, Any]:
    """The component schemas of every registered structure."""
    _, schemas = msgspec.json.schema_components(
        _MODELS.values(), ref_template=_REF, schema_hook=_any
    )
    return schemas


#: FastAPI's own description of its validation errors (``{"detail": [...]}``), which
#: headwater answers as a problem document instead.
_PYDANTIC_ERRORS = ("HTTPValidationError", "ValidationError")


def _problems_for_validation(doc: dict[str, Any]) -> None:
    problem = errors(422)[422]
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            answer = operation.get("responses", {}).get("422")
            if answer is None:
                continue
            schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
            if schema.get("$ref", "").endswith("/HTTPValidationError"):
                operation["responses"]["422"] = problem


def install_openapi(app: FastAPI) -> None:
    """Build ``app``'s OpenAPI document with the structures' schemas as its components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _problems_for_validation(doc)
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            for name in _PYDANTIC_ERRORS:
                schemas.pop(name, None)
            schemas.update(components())
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
