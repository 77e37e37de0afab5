"""CDS Hooks 2.0 ``fhirServer`` + ``fhirAuthorization`` (issue 14, point 2): without prefetch the service reads the
patient's data from the EHR's FHIR server with the bearer token it was given; 412 when it cannot. The FHIR
server here is a tiny REST server on loopback (port 0) that serves the example bundles as reads and searches."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from rdflib import Graph

from guideline_kg.core.project import Project
from guideline_kg.service.app import ServerConfig, create_app
from guideline_kg.service.cds import CDS_SERVICE_ID
from guideline_kg.store.results import QueryResult
from test_cds_hooks_conformance import EXAMPLES, call, hook_request, server_form

TOKEN = "some-opaque-fhir-access-token"
PAGE = 4  #: searches with more results than this are paged (CDS Hooks 2.0 lets a server paginate)


class FhirServer:
    """Serves one patient's resources: ``GET /fhir/<Type>/<id>`` and ``GET /fhir/<Type>?patient=<id>``
    (searchset Bundles, paged, timestamped as the example bundle); 401 without the token; records each request."""

    def __init__(self) -> None:
        self.resources: list[dict[str, Any]] = []
        self.timestamp = ""
        self.requests: list[tuple[str, str, str | None]] = []  # method, path with query, Authorization
        self.next_origin: str | None = None  # a next link to another origin, to test that it is not followed
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(("GET", self.path, self.headers.get("Authorization")))
                status, body = server.answer(self.path, self.headers.get("Authorization"))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                server.requests.append(("POST", self.path, self.headers.get("Authorization")))
                self.send_response(405)
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/fhir"

    def load(self, path: Path) -> None:
        full = server_form(json.loads(path.read_text(encoding="utf-8")))
        self.resources = [e["resource"] for e in full["entry"]]
        self.timestamp = full["timestamp"]
        self.requests.clear()
        self.next_origin = None

    def answer(self, path: str, auth: str | None) -> tuple[int, dict[str, Any]]:
        if auth != f"Bearer {TOKEN}":
            return 401, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login"}]}
        parts = urlsplit(path)
        segments = parts.path.strip("/").split("/")[1:]
        if len(segments) == 2:  # read
            found = [r for r in self.resources if r["resourceType"] == segments[0] and r["id"] == segments[1]]
            return (200, found[0]) if found else (404, {"resourceType": "OperationOutcome"})
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        patient = next(r["id"] for r in self.resources if r["resourceType"] == "Patient")
        matches = [r for r in self.resources if r["resourceType"] == segments[0] and query.get("patient") == patient]
        page = int(query.get("page", "0"))
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "timestamp": self.timestamp,
                                  "total": len(matches),
                                  "entry": [{"fullUrl": f"{self.base}/{r['resourceType']}/{r['id']}", "resource": r,
                                             "search": {"mode": "match"}}
                                            for r in matches[page * PAGE:(page + 1) * PAGE]]}
        if (page + 1) * PAGE < len(matches):
            origin = self.next_origin or self.base
            bundle["link"] = [{"relation": "next", "url": f"{origin}/{segments[0]}?patient={patient}&page={page + 1}"}]
        return 200, bundle


@pytest.fixture(scope="module")
def fhir() -> Iterator[FhirServer]:
    server = FhirServer()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture(scope="module")
def client(knowledge: Graph, project: Project) -> TestClient:
    def unused(query: str, timeout: float, limit: int | None) -> QueryResult:
        raise AssertionError("no SPARQL here")
    return TestClient(create_app(ServerConfig(project, knowledge, unused)), base_url="http://127.0.0.1:8000")


def authorised(body: dict[str, Any], server: str, token: str = TOKEN) -> dict[str, Any]:
    return {**body, "fhirServer": server,
            "fhirAuthorization": {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                  "scope": "user/Patient.read user/Observation.read", "subject": "cds-service4"}}


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_without_prefetch_the_data_comes_from_the_fhir_server(client: TestClient, fhir: FhirServer,
                                                              path: Path) -> None:
    fhir.load(path)
    expected = call(client, hook_request({"bundle": json.loads(path.read_text(encoding="utf-8"))}))
    resp = call(client, authorised(hook_request(None), fhir.base))
    assert resp.status_code == 200, resp.text
    assert resp.json() == expected.json()  # the same patient, the same cards, however the data came
    templates = client.get("/cds-services").json()["services"][0]["prefetch"]
    first_pages = {p.removeprefix("/fhir/") for m, p, _ in fhir.requests if "page=" not in p}
    assert first_pages == {t.replace("{{context.patientId}}", "p") for t in templates.values()}
    assert {(m, a) for m, _, a in fhir.requests} == {("GET", f"Bearer {TOKEN}")}  # only GET, always the token


def test_a_paged_search_is_followed(client: TestClient, fhir: FhirServer) -> None:
    path = next(p for p in EXAMPLES if "c06" in p.name)  # 10 Observations: three pages of 4
    fhir.load(path)
    resp = call(client, authorised(hook_request(None), fhir.base))
    assert resp.status_code == 200, resp.text
    assert any("Observation?patient=p&page=2" in p for _, p, _ in fhir.requests)
    assert any(c["summary"].startswith("Conflict") for c in resp.json()["cards"])


def test_a_next_link_to_another_origin_is_not_followed(client: TestClient, fhir: FhirServer) -> None:
    fhir.load(next(p for p in EXAMPLES if "c06" in p.name))
    fhir.next_origin = "http://localhost:9/fhir"
    resp = call(client, authorised(hook_request(None), fhir.base))
    assert resp.status_code == 412 and "leaves its origin" in resp.text
    assert all(p.startswith("/fhir/") for _, p, _ in fhir.requests)


def test_prefetch_first_then_the_server_for_what_lacks(client: TestClient, fhir: FhirServer) -> None:
    path = next(p for p in EXAMPLES if "c04" in p.name)
    fhir.load(path)
    patient = next(r for r in fhir.resources if r["resourceType"] == "Patient")
    resp = call(client, authorised(hook_request({"patient": patient}), fhir.base))
    assert resp.status_code == 200 and resp.json()["cards"][0]["indicator"] == "critical"
    assert not any(p.startswith("/fhir/Patient/") for _, p, _ in fhir.requests)  # given, so not fetched


def test_a_refused_token_is_412(client: TestClient, fhir: FhirServer) -> None:
    fhir.load(EXAMPLES[0])
    resp = call(client, authorised(hook_request(None), fhir.base, token="wrong-token"))
    assert resp.status_code == 412 and "HTTP 401" in resp.text


def test_an_unreachable_server_is_412(client: TestClient) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    resp = call(client, authorised(hook_request(None), f"http://127.0.0.1:{port}/fhir"))
    assert resp.status_code == 412 and "cannot reach the FHIR server" in resp.text


@pytest.mark.parametrize("server,reason", [
    ("ftp://127.0.0.1/fhir", "http(s) base URL"),
    ("http://user:pw@127.0.0.1/fhir", "http(s) base URL"),
    ("http://127.0.0.1/fhir?x=1", "http(s) base URL"),
])
def test_a_fhir_server_that_is_not_an_http_base_url_is_400(client: TestClient, server: str, reason: str) -> None:
    resp = client.post(f"/cds-services/{CDS_SERVICE_ID}", json=authorised(hook_request(None), server))
    assert resp.status_code == 400 and reason in resp.text


def test_authorization_without_a_server_and_a_bad_token_are_400(client: TestClient) -> None:
    body = authorised(hook_request(None), "http://127.0.0.1/fhir")
    del body["fhirServer"]
    resp = client.post(f"/cds-services/{CDS_SERVICE_ID}", json=body)
    assert resp.status_code == 400 and "fhirAuthorization needs fhirServer" in resp.text
    resp = client.post(f"/cds-services/{CDS_SERVICE_ID}",
                       json=authorised(hook_request(None), "http://127.0.0.1/fhir", token="a\r\nX-Evil: 1"))
    assert resp.status_code == 400 and "access_token" in resp.text
