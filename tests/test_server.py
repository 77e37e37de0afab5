"""The HTTP service with real clients: a started `guideline-kg serve` (uvicorn) on 127.0.0.1, queried with
httpx and SPARQLWrapper, and its query page driven by headless Chromium."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pyoxigraph as ox
import pytest
from SPARQLWrapper import JSON, POST, TURTLE, SPARQLWrapper

from conftest import serve_running
from guideline_kg.cases.fhir_in import bundle_to_case
from guideline_kg.checks.competency import cq_files, read_expected
from guideline_kg.core.namespaces import qname
from guideline_kg.core.project import Project
from guideline_kg.outputs.cds_cards import cards_for
from guideline_kg.reasoning.derive import Evaluator
from guideline_kg.service.app import CDS_SERVICE_ID, is_update, negotiate
from guideline_kg.service.cds import ORDER_SERVICE_ID

PROJECT = Project.at()
CHROMIUM = Path("/usr/bin/chromium")
SLOW = ("SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """`guideline-kg serve guidelines/plbp/cases` on a free port with a 2 s time limit and 2000 results at most."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    for url in serve_running(["serve", str(PROJECT.cases_dir), "--timeout", "2", "--max-results", "2000"], log):
        yield url, log


def sparql(url: str, query: str, accept: str = "application/sparql-results+json", method: str = "GET",
           **kw) -> httpx.Response:
    headers = {"Accept": accept}
    if method == "GET":
        return httpx.get(url + "/sparql", params={"query": query}, headers=headers, timeout=30)
    if kw.get("direct"):
        return httpx.post(url + "/sparql", content=query.encode(), timeout=30,
                          headers={**headers, "Content-Type": "application/sparql-query"})
    return httpx.post(url + "/sparql", data={"query": query}, headers=headers, timeout=30)


def term_rows(data: bytes, fmt: ox.QueryResultsFormat) -> set[tuple[str, ...]]:
    solutions = ox.parse_query_results(data, fmt)
    names = [v.value for v in solutions.variables]
    return {tuple("" if s[n] is None else str(s[n]) for n in names) for s in solutions}


@pytest.mark.parametrize("path", cq_files(PROJECT), ids=lambda p: p.stem)
@pytest.mark.slow
def test_competency_question_through_the_endpoint(server, path) -> None:
    url, _ = server
    expected = path.with_suffix(".expected.tsv").read_bytes()
    resp = sparql(url, path.read_text(encoding="utf-8"), method="POST", direct=True)
    assert resp.status_code == 200, resp.text
    assert term_rows(resp.content, ox.QueryResultsFormat.JSON) == term_rows(expected, ox.QueryResultsFormat.TSV)


@pytest.mark.parametrize("accept,media,fmt", [
    ("application/sparql-results+json", "application/sparql-results+json", ox.QueryResultsFormat.JSON),
    ("application/sparql-results+xml", "application/sparql-results+xml", ox.QueryResultsFormat.XML),
    ("text/tab-separated-values", "text/tab-separated-values", ox.QueryResultsFormat.TSV),
    ("text/html;q=0.9, application/sparql-results+xml;q=0.5", "application/sparql-results+xml",
     ox.QueryResultsFormat.XML),
    ("*/*", "application/sparql-results+json", ox.QueryResultsFormat.JSON),
])
@pytest.mark.parametrize("method,direct", [("GET", False), ("POST", False), ("POST", True)])
@pytest.mark.slow
def test_select_content_negotiation(server, accept, media, fmt, method, direct) -> None:
    url, _ = server
    resp = sparql(url, "SELECT ?s ?line WHERE { ?s gk:sourceLine ?line } ORDER BY ?line", accept, method,
                  direct=direct)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].split(";")[0] == media
    rows = term_rows(resp.content, fmt)
    assert len(rows) > 30 and (
        "<https://w3id.org/guideline-kg/plbp/L02>", '"2"^^<http://www.w3.org/2001/XMLSchema#integer>') in rows


@pytest.mark.slow
def test_csv_results(server) -> None:
    url, _ = server
    resp = sparql(url, "SELECT ?s WHERE { ?s a gk:Guideline }", "text/csv")
    assert resp.status_code == 200
    assert resp.text.splitlines() == ["s", "https://w3id.org/guideline-kg/plbp/guideline"]


@pytest.mark.parametrize("accept,fmt", [("text/turtle", ox.RdfFormat.TURTLE), ("application/n-triples",
                         ox.RdfFormat.N_TRIPLES), ("application/ld+json", ox.RdfFormat.JSON_LD),
                         ("application/rdf+xml", ox.RdfFormat.RDF_XML)])
@pytest.mark.slow
def test_construct_in_rdf_syntaxes(server, accept, fmt) -> None:
    url, _ = server
    resp = sparql(url, "CONSTRUCT WHERE { ?s gk:sourceLine ?l }", accept)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith(accept)
    triples = list(ox.parse(resp.content, fmt))
    assert len(triples) > 30


@pytest.mark.slow
def test_describe_and_ask(server) -> None:
    url, _ = server
    resp = sparql(url, "DESCRIBE plbp:guideline", "text/turtle")
    assert resp.status_code == 200 and "plbp:guideline" in resp.text
    resp = sparql(url, "ASK { case:c06 a gk:Patient }")
    assert resp.json() == {"head": {}, "boolean": True}


@pytest.mark.slow
def test_unacceptable_media_type_is_406(server) -> None:
    url, _ = server
    resp = sparql(url, "SELECT * WHERE { ?s ?p ?o } LIMIT 1", "text/turtle")
    assert resp.status_code == 406 and "application/sparql-results+json" in resp.text


@pytest.mark.parametrize("request_kw", [
    {"data": {"update": "INSERT DATA { <urn:a> <urn:b> <urn:c> }"}},
    {"content": b"INSERT DATA { <urn:a> <urn:b> <urn:c> }", "headers": {"Content-Type": "application/sparql-update"}},
    {"data": {"query": "PREFIX x: <urn:x#>\n# a comment\nDELETE WHERE { ?s ?p ?o }"}},
])
@pytest.mark.slow
def test_updates_are_refused(server, request_kw) -> None:
    url, _ = server
    resp = httpx.post(url + "/sparql", timeout=30, **request_kw)
    assert resp.status_code == 403 and "read-only" in resp.text
    assert sparql(url, "ASK { ?s ?p ?o }").json()["boolean"] is True  # still serving, data intact
    assert sparql(url, "ASK { <urn:a> ?p ?o }").json()["boolean"] is False


@pytest.mark.slow
def test_malformed_query_is_400_with_the_parsers_message(server) -> None:
    url, _ = server
    resp = sparql(url, "SELECT ?s\nWHERE { ?s ?p }")
    assert resp.status_code == 400
    assert resp.text.startswith("SPARQL syntax error at line 2, column") and "expected" in resp.text


@pytest.mark.slow
def test_missing_query_is_400(server) -> None:
    url, _ = server
    assert httpx.get(url + "/sparql").status_code == 400


@pytest.mark.slow
def test_time_limit(server) -> None:
    url, _ = server
    start = time.perf_counter()
    resp = sparql(url, SLOW)
    assert resp.status_code == 503 and "time limit (2 s)" in resp.text
    assert time.perf_counter() - start < 15
    assert sparql(url, "ASK { ?s ?p ?o }").status_code == 200  # a fresh worker answers


@pytest.mark.slow
def test_result_limit(server) -> None:
    url, _ = server
    resp = sparql(url, "SELECT * WHERE { ?s ?p ?o }")
    assert resp.status_code == 413 and "more than 2000 solutions" in resp.text
    assert sparql(url, "SELECT * WHERE { ?s ?p ?o } LIMIT 2000").status_code == 200


@pytest.mark.slow
def test_sparqlwrapper_client(server) -> None:
    url, _ = server
    client = SPARQLWrapper(url + "/sparql")
    client.setQuery("SELECT ?n WHERE { ?r gk:referenceNumber ?n } ORDER BY ?n")
    client.setReturnFormat(JSON)
    numbers = [int(b["n"]["value"]) for b in client.queryAndConvert()["results"]["bindings"]]
    assert numbers == sorted(numbers) and numbers[:3] == [1, 2, 3]
    client.setMethod(POST)
    client.setQuery("CONSTRUCT WHERE { ?g a gk:Guideline }")
    client.setReturnFormat(TURTLE)
    assert b"gk:Guideline" in client.queryAndConvert()


def _hook_request(bundle, patient="p1"):
    return {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {"patientId": patient, "userId": "Practitioner/1"}, "prefetch": {"bundle": bundle}}


@pytest.mark.slow
def test_cds_discovery(server) -> None:
    url, _ = server
    services = httpx.get(url + "/cds-services").json()["services"]
    assert [s["id"] for s in services] == [CDS_SERVICE_ID, ORDER_SERVICE_ID]
    assert services[0]["hook"] == "patient-view" and services[0]["prefetch"]["patient"] == "Patient/{{context.patientId}}"


@pytest.mark.slow
def test_cds_patient_view_gives_the_cards_of_the_derivation(server, knowledge) -> None:
    url, _ = server
    path = PROJECT.cases_dir / "fhir-c04-urgent-deficit.fhir.json"
    bundle = json.loads(path.read_text())
    resp = httpx.post(f"{url}/cds-services/{CDS_SERVICE_ID}", json=_hook_request(bundle, "c04"), timeout=60)
    assert resp.status_code == 200, resp.text
    cards = resp.json()["cards"]
    expected = cards_for(Evaluator(knowledge, PROJECT).evaluate(bundle_to_case(bundle, "c04")), knowledge, PROJECT)
    assert [c["summary"] for c in cards] == [c["summary"] for c in expected["cards"]]
    assert cards and cards[0]["indicator"] == "critical"


@pytest.mark.parametrize("body,message", [
    (b"{not json", "not JSON"),
    (json.dumps({"hook": "patient-view", "context": {}}).encode(), "missing hookInstance"),
    (json.dumps(_hook_request({"resourceType": "Patient", "id": "x"})).encode(), "must be a FHIR Bundle"),
    (json.dumps(_hook_request({"resourceType": "Bundle", "type": "collection", "entry": "x"})).encode(),
     "entry must be a list"),
])
@pytest.mark.slow
def test_cds_malformed_prefetch_is_400(server, body, message) -> None:
    url, _ = server
    resp = httpx.post(f"{url}/cds-services/{CDS_SERVICE_ID}", content=body, timeout=30,
                      headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and message in resp.text


@pytest.mark.slow
def test_unknown_cds_service_is_404(server) -> None:
    url, _ = server
    assert httpx.post(f"{url}/cds-services/nope", json={}).status_code == 404


@pytest.mark.slow
def test_health_page_algorithm_and_request_log(server) -> None:
    url, log = server
    health = httpx.get(url + "/health").json()
    assert health["status"] == "ok" and "c06-opioid-no-relief" in health["cases"] and health["timeout_s"] == 2
    page = httpx.get(url + "/query").text
    assert "cites-reference" in page and 'href="/algorithm"' in page
    # nothing loaded from outside: no absolute URL in src/href attributes or fetch calls (IRIs in queries are data)
    assert not re.search(r"""(src|href)=["']?(https?:)?//|fetch\(\s*["'`](https?:)?//""", page)
    svg = httpx.get(url + "/algorithm.svg")
    assert (svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml") or svg.status_code == 404
    httpx.get(url + "/health?probe=log")
    time.sleep(0.2)
    assert "GET /health 200" in log.read_text()


@pytest.mark.parametrize("text,update", [("INSERT DATA {}", True), ("  # c\nPREFIX a: <urn:a>\nclear all", True),
                                         ("SELECT * WHERE { ?s ?p ?o }", False), ("# INSERT\nASK {}", False)])
def test_is_update(text, update) -> None:
    assert is_update(text) is update


@pytest.mark.parametrize("accept,kind,fmt", [(None, "solutions", "json"), ("text/csv", "solutions", "csv"),
                                             ("application/json", "boolean", "json"), ("*/*", "graph", "turtle"),
                                             ("text/*", "graph", "turtle"), ("text/csv;q=0, text/tsv", "solutions", None),
                                             ("text/plain", "graph", "nt")])
def test_negotiate(accept, kind, fmt) -> None:
    assert negotiate(accept, kind) == fmt


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium test needs Debian's chromium "
                    "(apt-get install -y chromium); /usr/bin/chromium is absent")
@pytest.mark.browser
@pytest.mark.slow
def test_query_page_in_headless_chromium(server) -> None:
    url, _ = server
    name = "cites-reference"
    expected = read_expected(PROJECT.require("competency_questions", "this test") / f"{name}.expected.tsv")[1]
    with tempfile.TemporaryDirectory(prefix="gkg-chromium-") as profile:
        proc = subprocess.run(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom",
             f"{url}/?example={name}&run=1"], capture_output=True, timeout=120,
            env={**os.environ, "HOME": profile}, check=False)
    dom = proc.stdout.decode("utf-8", "replace")
    assert '<table id="results">' in dom, proc.stderr.decode()[-2000:]
    assert f'<span id="status" role="status">{len(expected)} results</span>' in dom
    for row in expected:  # IRIs shortened to prefixed names, each linked to its resource page
        iri = row[0].strip("<>")
        assert f'<a href="/resource?iri={quote(iri, safe="")}" title="{iri}" class="iri">{qname(iri)}</a>' in dom
