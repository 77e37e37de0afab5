"""Property-based fuzzing of the CDS Hooks endpoints (issue 13, point 7; issue 14, point 2: order-select and
feedback too): any body, JSON or not, any shape, gets HTTP 2xx, or 4xx with a reason, never a 500 or a traceback,
within a time bound."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rdflib import Graph

from guideline_kg.core.project import Project
from guideline_kg.service.app import CDS_SERVICE_ID, ServerConfig, create_app
from guideline_kg.service.cds import ORDER_SERVICE_ID
from guideline_kg.store.results import QueryResult

CDS = f"/cds-services/{CDS_SERVICE_ID}"
ORDER = f"/cds-services/{ORDER_SERVICE_ID}"

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                           max_size=4), max_leaves=20)
#: envelopes near the real one: the known keys with values of any type, so the checks beyond the first are reached
_envelope = st.fixed_dictionaries({}, optional={
    "hook": st.sampled_from(["patient-view", "order-select", ""]) | _scalars,
    "hookInstance": st.uuids().map(str) | _scalars,
    "context": st.fixed_dictionaries({}, optional={"patientId": st.text(max_size=30) | _scalars,
                                                   "userId": _scalars}) | _json,
    "prefetch": st.dictionaries(st.text(max_size=8), _json, max_size=2) | _scalars,
    "fhirServer": _scalars,
})


#: order-select envelopes: selections and draftOrders of any type, or near the real ones
_orders = st.fixed_dictionaries({}, optional={
    "hook": st.just("order-select") | _scalars,
    "hookInstance": st.uuids().map(str) | _scalars,
    "context": st.fixed_dictionaries({"patientId": st.just("p") | _scalars}, optional={
        "selections": st.lists(st.sampled_from(["MedicationRequest/rx1", "ServiceRequest/x"]) | _scalars, max_size=3)
        | _json,
        "draftOrders": st.fixed_dictionaries({"resourceType": st.just("Bundle") | _scalars},
                                             optional={"entry": _json}) | _json}),
    "prefetch": st.dictionaries(st.text(max_size=8), _json, max_size=2) | _scalars,
})
#: feedback near the 2.0 shape: each field of any JSON type
_feedback = st.fixed_dictionaries({}, optional={"feedback": st.lists(st.fixed_dictionaries({}, optional={
    "card": st.uuids().map(str) | _scalars,
    "outcome": st.sampled_from(["accepted", "overridden"]) | _scalars,
    "acceptedSuggestions": st.lists(st.fixed_dictionaries({}, optional={"id": st.text(max_size=8) | _scalars}),
                                    max_size=2) | _json,
    "overrideReason": _json,
    "outcomeTimestamp": st.just("2026-03-10T00:00:00Z") | _scalars}), max_size=3) | _json})


def _unused(query: str, timeout: float, limit: int | None) -> QueryResult:
    raise AssertionError("the CDS endpoint runs no SPARQL")


@pytest.fixture(scope="module")
def client(knowledge: Graph, project: Project) -> TestClient:
    return TestClient(create_app(ServerConfig(project, knowledge, _unused)), base_url="http://127.0.0.1:8000",
                      raise_server_exceptions=False)


def _check(client: TestClient, body: bytes, path: str = CDS) -> None:
    start = time.monotonic()
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code < 500, response.text
    assert 200 <= response.status_code < 500
    if response.status_code >= 400:
        assert response.text.strip(), "a refusal says why"
        assert "Traceback" not in response.text
    assert time.monotonic() - start < 20


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(body=_envelope)
def test_any_envelope_gets_2xx_or_4xx(client: TestClient, body: dict) -> None:
    _check(client, json.dumps(body).encode())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(body=_json.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=200))
def test_any_json_value_or_bytes_gets_2xx_or_4xx(client: TestClient, body: bytes) -> None:
    _check(client, body)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(body=_orders)
def test_any_order_select_envelope_gets_2xx_or_4xx(client: TestClient, body: dict) -> None:
    _check(client, json.dumps(body).encode(), ORDER)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(body=_feedback | _json)
def test_any_feedback_gets_2xx_or_4xx(client: TestClient, body: dict) -> None:
    _check(client, json.dumps(body).encode(), CDS + "/feedback")
