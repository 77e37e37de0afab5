"""Security: nothing leaves the machine unless asked (JSON-LD contexts, SPARQL SERVICE), inputs are never written,
no traceback ever, deeply nested input refused by name (issue 13, items 1, 6 and part of 3; docs/security.md).

A loopback canary (an HTTP server on 127.0.0.1 that records every request) stands for any outside server: every
refusal is checked with the message AND with zero requests recorded. The control tests show the canary does see
a request when the same probe bypasses the guard, so "zero" is meaningful.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyoxigraph as ox
import pytest
from fastapi.testclient import TestClient
from rdflib import Graph
from rdflib.compare import isomorphic
from rdflib.plugins.shared.jsonld import util as jsonld_util

from conftest import REPO
from guideline_kg.cli.commands import statements as statements_command
from guideline_kg.cli.main import main
from guideline_kg.core.errors import InputError
from guideline_kg.core.files import atomic_output, load_json, overlapping_input, write_atomic
from guideline_kg.core.project import Project
from guideline_kg.core.rdfio import CONTEXT_IRI, read_graph
from guideline_kg.service.app import ServerConfig, create_app
from guideline_kg.store.stores import EmbeddedStore, ServiceRefused, check_service, graph_to_ntriples
from guideline_kg.store.worker import QueryWorker

CASES = REPO / "guidelines" / "plbp" / "cases"
JSONLD_CASE = CASES / "c17-routine-repeat-imaging.jsonld"
TURTLE_CASE = CASES / "c01-first-visit.ttl"
NO_RESULTS = b'{"head": {"vars": ["s"]}, "results": {"bindings": []}}'
CONTEXT = b'{"@context": {"gk": "https://w3id.org/guideline-kg/ontology#"}}'


class Canary:
    """A loopback HTTP server that answers anything (a JSON-LD context, empty SPARQL results) and records it."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        canary = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                canary.requests.append(f"{self.command} {self.path}")
                sparql = "sparql" in self.path
                body = NO_RESULTS if sparql else CONTEXT
                self.send_response(200)
                self.send_header("Content-Type", "application/sparql-results+json" if sparql
                                 else "application/ld+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer()

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def canary() -> Iterator[Canary]:
    c = Canary()
    yield c
    c.close()


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """Run the command line in-process: exit code, stdout, stderr."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def hostile_case(tmp_path: Path, context: object, name: str = "hostile.jsonld") -> Path:
    """The JSON-LD example case c17 with its @context replaced by ``context``."""
    doc = json.loads(JSONLD_CASE.read_text(encoding="utf-8"))
    doc["@context"] = context
    path = tmp_path / name
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return path


# ---- the canary works: without the guards, the same probes reach it ----------------------------------------------

def test_control_the_canary_sees_an_unguarded_service_call_and_context_fetch(canary: Canary) -> None:
    ox.Store().query(f"SELECT * WHERE {{ SERVICE <{canary.url}/sparql> {{ ?s ?p ?o }} }}")
    assert any("/sparql" in r for r in canary.requests)  # pyoxigraph does call SERVICE endpoints over HTTP
    jsonld_util.source_to_json(f"{canary.url}/ctx.jsonld")  # rdflib's loader, left in its own module
    assert any("/ctx.jsonld" in r for r in canary.requests)


# ---- JSON-LD contexts ----------------------------------------------------------------------------------------------

def _contexts(canary: Canary, tmp_path: Path) -> list[tuple[object, str]]:
    (tmp_path / "ctx.jsonld").write_text(CONTEXT.decode(), encoding="utf-8")
    return [
        (f"{canary.url}/ctx.jsonld", f"{canary.url}/ctx.jsonld"),
        (["file:///etc/passwd", {"gk": "https://w3id.org/guideline-kg/ontology#"}], "file:///etc/passwd"),
        ("ctx.jsonld", "ctx.jsonld"),  # relative: a file beside the case
        ({"@version": 1.1, "@import": f"{canary.url}/imported.jsonld"}, f"{canary.url}/imported.jsonld"),
    ]


@pytest.mark.parametrize("command", ["recommend", "validate"])
@pytest.mark.slow
def test_jsonld_contexts_are_never_fetched_by_commands(capsys: pytest.CaptureFixture[str], canary: Canary,
                                                       tmp_path: Path, command: str) -> None:
    for i, (context, iri) in enumerate(_contexts(canary, tmp_path)):
        case = hostile_case(tmp_path, context, f"hostile{i}.jsonld")
        code, out, err = run(capsys, command, case)
        assert code == 2, (context, err)
        assert str(case) in err and repr(iri) in err and "is not allowed" in err, err
        assert "Traceback" not in err and "root:" not in err + out
    assert canary.requests == []


def test_a_scoped_context_naming_a_url_is_refused_too(canary: Canary, tmp_path: Path) -> None:
    doc = {"@context": {"t": {"@id": "http://example.org/t", "@context": f"{canary.url}/scoped.jsonld"}},
           "@id": "http://example.org/p", "t": {"http://example.org/q": 1}}
    path = tmp_path / "scoped.jsonld"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(InputError, match=r"scoped\.jsonld") as info:
        read_graph(path)
    assert info.value.path == str(path) and info.value.line == 1
    assert canary.requests == []


def test_rdflib_itself_cannot_fetch_a_context_in_this_process(canary: Canary) -> None:
    """Defence in depth: a JSON-LD parse that bypasses core.rdfio still cannot reach the network."""
    data = json.dumps({"@context": f"{canary.url}/ctx.jsonld", "@id": "http://example.org/p",
                       "http://example.org/q": 1})
    with pytest.raises(Exception, match=r"ctx\.jsonld"):
        Graph().parse(data=data, format="json-ld")
    assert canary.requests == []


def test_the_shipped_context_by_its_published_iri_is_read_locally(tmp_path: Path, canary: Canary) -> None:
    # c17's own context declares case:, gk:, rdfs:, xsd:, which the shipped context declares alike
    shipped = read_graph(hostile_case(tmp_path, CONTEXT_IRI))
    assert isomorphic(shipped, read_graph(JSONLD_CASE)) and len(shipped) > 10
    assert canary.requests == []


# ---- SPARQL SERVICE -----------------------------------------------------------------------------------------------

def service_queries(url: str) -> list[str]:
    return [f"SELECT * WHERE {{ SERVICE <{url}/sparql> {{ ?s ?p ?o }} }}",
            f"select * where {{ service silent <{url}/sparql> {{ ?s ?p ?o }} }}",
            f"PREFIX remote: <{url}/> SELECT * WHERE {{ SERVICE remote:sparql {{ ?s ?p ?o }} }}",
            f"SELECT * WHERE {{ \\u0053ERVICE <{url}/sparql> {{ ?s ?p ?o }} }}",
            f"BASE <{url}/> SELECT * WHERE {{ SERVICE <sparql> {{ ?s ?p ?o }} }}"]


@pytest.mark.slow
def test_service_is_refused_by_the_query_command(capsys: pytest.CaptureFixture[str], canary: Canary) -> None:
    for query in service_queries(canary.url):
        code, _, err = run(capsys, "query", "--query", query)
        assert code == 2, err
        assert f"SERVICE <{canary.url}/sparql> is not allowed (" in err and "Traceback" not in err
    code, _, err = run(capsys, "query", "--query", "SELECT * WHERE { SERVICE ?endpoint { ?s ?p ?o } }")
    assert code == 2 and "SERVICE ?endpoint is not allowed (" in err
    assert canary.requests == []


def test_allow_service_lets_exactly_the_named_endpoint_through(capsys: pytest.CaptureFixture[str],
                                                                canary: Canary) -> None:
    query = f"SELECT * WHERE {{ SERVICE <{canary.url}/sparql> {{ ?s ?p ?o }} }}"
    code, _, err = run(capsys, "query", "--query", query, "--allow-service", f"{canary.url}/other")
    assert code == 2 and "is not allowed" in err and canary.requests == []
    code, out, err = run(capsys, "query", "--query", query, "--allow-service", f"{canary.url}/other",
                         "--allow-service", f"{canary.url}/sparql", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["results"]["bindings"] == []
    assert len(canary.requests) == 1 and "/sparql" in canary.requests[0]


def test_service_is_refused_by_the_server(canary: Canary, knowledge: Graph, project: Project) -> None:
    worker = QueryWorker(graph_to_ntriples(knowledge))
    try:
        client = TestClient(create_app(ServerConfig(project, knowledge, worker.run)))
        for query in service_queries(canary.url):
            for resp in (client.get("/sparql", params={"query": query}),
                         client.post("/sparql", content=query.encode(),
                                     headers={"Content-Type": "application/sparql-query"})):
                assert resp.status_code == 400, resp.text
                assert f"SERVICE <{canary.url}/sparql> is not allowed" in resp.text
        assert client.get("/sparql", params={"query": "ASK { ?s ?p ?o }"}).status_code == 200
    finally:
        worker.close()
    assert canary.requests == []


@pytest.mark.parametrize("query", [
    "SELECT * WHERE { ?s ?p 'SERVICE <http://127.0.0.1:1/x>' }",
    "SELECT * WHERE { ?s ?p \"\"\"a \"SERVICE\" <http://127.0.0.1:1/x> b\"\"\" }",
    "SELECT ?service WHERE { ?service <http://example.org/SERVICE> ?o } # SERVICE <http://127.0.0.1:1/x>",
    "PREFIX ex: <http://example.org/> SELECT * WHERE { ?s ex:SERVICE ?o }",
])
def test_service_in_strings_comments_iris_and_names_is_no_clause(query: str) -> None:
    check_service(query)
    assert EmbeddedStore().select(query).rows == []


def test_every_store_query_is_checked() -> None:
    with pytest.raises(ServiceRefused, match=r"^SERVICE <http://127.0.0.1:1/x> is not allowed"):
        EmbeddedStore().ask("ASK { SERVICE <http://127.0.0.1:1/x> { ?s ?p ?o } }")


# ---- no traceback, nothing nested too deeply -----------------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("name", ["deep.jsonld", "deep.json"])
def test_deeply_nested_json_case_is_an_input_error(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                   name: str) -> None:
    path = tmp_path / name
    path.write_text(DEEP, encoding="utf-8")
    for command in ("recommend", "validate"):
        code, _, err = run(capsys, command, path)
        assert code == 2 and str(path) in err and "nested too deeply" in err and "Traceback" not in err, err


def test_deeply_nested_cohort_profile_and_ndjson_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text(DEEP, encoding="utf-8")
    code, _, err = run(capsys, "cohort", "generate", "--n", "1", "--profile", profile, "--out", tmp_path / "c.ttl")
    assert code == 2 and str(profile) in err and "nested too deeply" in err
    assert not (tmp_path / "c.ttl").exists()
    cohort = tmp_path / "mixed.ndjson"
    code, _, err = run(capsys, "cohort", "generate", "--n", "1", "--format", "fhir-ndjson", "--out", cohort)
    assert code == 0, err
    with cohort.open("a", encoding="utf-8") as handle:
        handle.write(DEEP + "\n")
    code, _, err = run(capsys, "cohort", "evaluate", cohort, "--out", tmp_path / "results.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert code == 1 and len(lines) == 2 and "invalid" not in lines[0]  # the good record still evaluated
    assert lines[1]["invalid"] is True
    assert lines[1]["violations"][0]["message"].startswith(f"{cohort}:2: bundle cannot be read: nested too deeply")

    assert load_json("[[1]]") == [[1]]
    with pytest.raises(InputError, match="nested too deeply"):
        load_json(DEEP, "x.json")


def test_deeply_nested_cds_request_is_400(knowledge: Graph, project: Project) -> None:
    store = EmbeddedStore.from_graph(knowledge)
    client = TestClient(create_app(ServerConfig(project, knowledge, lambda q, t, n: store.result(q, n))))
    resp = client.post("/cds-services/" + client.get("/cds-services").json()["services"][0]["id"], content=DEEP)
    assert resp.status_code == 400 and "nested too deeply" in resp.text


def test_an_unexpected_exception_is_one_line_exit_2(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(args: object) -> int:
        raise ValueError("boom\nsecond line")

    monkeypatch.setattr(statements_command, "run", boom)
    monkeypatch.delenv("GUIDELINE_KG_DEBUG", raising=False)
    code, out, err = run(capsys, "statements")
    assert code == 2 and out == ""
    assert err == "guideline-kg statements: internal error: ValueError: boom second line (please report)\n"
    monkeypatch.setenv("GUIDELINE_KG_DEBUG", "1")
    code, _, err = run(capsys, "statements")
    assert code == 2 and "Traceback" in err and err.endswith("(please report)\n")


@pytest.mark.parametrize("port", ["99999", "0", "-1", "http"])
def test_serve_port_out_of_range_is_a_usage_error(capsys: pytest.CaptureFixture[str], port: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--port", port])
    assert info.value.code == 2
    assert "--port" in capsys.readouterr().err


# ---- inputs are never written ---------------------------------------------------------------------------------------

def _copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    return dst


def test_out_onto_an_input_is_refused_before_writing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    case = _copy(TURTLE_CASE, tmp_path / "case.ttl")
    folder = tmp_path / "cases"
    folder.mkdir()
    inside = _copy(TURTLE_CASE, folder / "c.ttl")
    cohort = tmp_path / "cohort.ttl"
    cohort.write_bytes(TURTLE_CASE.read_bytes())
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (case, inside, cohort)}
    probes = [
        (["render", "--case", case, "--out", case], case),
        (["render", "--case", case, "--out", tmp_path / "." / "case.ttl"], case),
        (["export", "--format", "careplan", "--case", case, "--out", case], case),
        (["export", "--format", "careplan", "--case", folder, "--out", folder / "new.json"], folder),
        (["export", "--format", "careplan", "--case", folder, "--out", folder], folder),
        (["cohort", "evaluate", cohort, "--out", cohort], cohort),
        (["export", "--format", "turtle", "--out", REPO / "guidelines" / "plbp" / "never.ttl"], None),
        (["build", "--out", REPO / "ontology"], None),
        (["reference", "--out", REPO / "ontology" / "never.md"], None),
    ]
    for argv, named in probes:
        code, _, err = run(capsys, *argv)
        assert code == 2, (argv, err)
        assert "inputs are never written" in err and (named is None or str(named) in err), err
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before} == before
    assert sorted(p.name for p in folder.iterdir()) == ["c.ttl"]
    assert not (REPO / "guidelines" / "plbp" / "never.ttl").exists()
    assert not (REPO / "ontology" / "never.md").exists()


def test_a_symlink_to_an_input_is_the_input(tmp_path: Path) -> None:
    case = _copy(TURTLE_CASE, tmp_path / "case.ttl")
    (tmp_path / "link.ttl").symlink_to(case)
    assert overlapping_input(tmp_path / "link.ttl", [case]) == case
    assert overlapping_input(tmp_path / "other.ttl", [case]) is None


def test_outputs_are_atomic_with_mode_0644(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        path = write_atomic(tmp_path / "sub" / "out.txt", "first\n")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644 and path.read_text() == "first\n"
        with pytest.raises(RuntimeError), atomic_output(path) as handle:
            handle.write("half")
            raise RuntimeError("interrupted")
        assert path.read_text() == "first\n"  # untouched by the failed write
        with atomic_output(path) as handle:
            handle.write("second\n")
        assert path.read_text() == "second\n" and stat.S_IMODE(path.stat().st_mode) == 0o644
    finally:
        os.umask(old)
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]  # no temporary file left
