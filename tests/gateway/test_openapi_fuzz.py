"""The gateway against its own OpenAPI schema (schemathesis), and a hostile-body fuzzer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance
from schemathesis.specs.openapi.checks import ignored_auth

from headwater.application import Application
from headwater.erasure.ledger import Participant
from headwater.gateway.app import create_app
from tests._gateway_fixtures import auth, problem


@pytest.fixture
def app(hw: Application) -> FastAPI:
    # A running deployment has its consumers registered as erasure participants.
    hw.ledger.register_participant(Participant("online-features", "test", 60.0))
    return create_app(hw)


@pytest.fixture
def api_key(hw: Application) -> str:
    # Every role, so that the fuzzer reaches past authorization on every route.
    secret, _ = hw.keys.create("web", roles=("admin",), event_types=("*",))
    return secret


def _operations(app: FastAPI, api_key: str) -> list[Any]:
    api = schemathesis.openapi.from_asgi("/openapi.json", app, headers=auth(api_key))
    return [result.ok() for result in api.get_all_operations()]


def test_api_conforms_to_its_schema(app: FastAPI, api_key: str) -> None:
    # Driven through Hypothesis directly: schemathesis' pytest plugin lags behind pytest 9.
    operations = _operations(app, api_key)
    assert {op.path for op in operations} >= {"/v1/signals", "/v1/contracts", "/v1/health"}
    for operation in operations:
        _fuzz(operation, api_key)


def _fuzz(operation: Any, api_key: str) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def check(case: Any) -> None:
        case.headers = {**(case.headers or {}), **auth(api_key)}
        # Contract documents are checked beyond what JSON Schema can say (evolution rules,
        # field options), so a schema-valid document may rightly be refused with 422.
        # Authentication is checked route by route and role by role in test_security.py;
        # here every request carries a valid key, which the ignored-auth check would flag.
        case.call_and_validate(excluded_checks=[positive_data_acceptance, ignored_auth])

    check()


# -- hostile bodies ----------------------------------------------------------

_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


def _hostile() -> st.SearchStrategy[bytes]:
    deep = st.integers(min_value=1, max_value=20_000).map(lambda n: b"[" * n + b"]" * n)
    huge_numbers = st.integers(min_value=300, max_value=5000).map(
        lambda n: b'[{"event_id": "a", "payload": {"dwell_ms": 1' + b"0" * n + b"}}]"
    )
    duplicate_keys = st.just(
        b'[{"event_id": "a", "event_id": "b", "event_type": "view", "event_type": 5}]'
    )
    invalid_utf8 = st.binary(min_size=1, max_size=200).map(lambda b: b'["' + b + b'\xff"]')
    return st.one_of(
        st.binary(max_size=400),
        _json.map(lambda v: json.dumps(v).encode()),
        st.lists(_json, max_size=5).map(lambda v: json.dumps(v).encode()),
        deep,
        huge_numbers,
        duplicate_keys,
        invalid_utf8,
    )


@pytest.fixture
def http(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@given(body=_hostile(), ndjson=st.booleans())
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_hostile_bodies_get_a_clear_answer_never_a_crash(
    http: TestClient, api_key: str, body: bytes, ndjson: bool
) -> None:
    content_type = "application/x-ndjson" if ndjson else "application/json"
    r = http.post(
        "/v1/signals", content=body, headers={**auth(api_key), "Content-Type": content_type}
    )
    assert r.status_code in (200, 207, 400, 413), (r.status_code, r.text[:300])
    doc = r.json()
    if r.status_code in (200, 207):
        assert len(doc["results"]) == doc["accepted"] + doc["duplicates"] + doc["rejected"]
        for result in doc["results"]:
            if result["status"] == "rejected":
                assert result["rule"]
                assert result["message"]
    else:
        kind = "malformed-body" if r.status_code == 400 else "too-large"
        problem(r, r.status_code, kind)
