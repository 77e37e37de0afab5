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
import subprocess
import sys
import threading
import time
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
from guideline_kg.core.files import (
    DEFAULT_MAX_INPUT_SIZE,
    atomic_output,
    load_json,
    max_input_size,
    overlapping_input,
    parse_size,
    write_atomic,
)
from guideline_kg.core.project import Project
from guideline_kg.core.rdfio import CONTEXT_IRI, iri_segment, iri_segment_name, read_graph
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


# ---- limits: input size, endless files, entity expansion (issue 13, item 3; docs/security.md) ----------------------

@pytest.mark.parametrize("name", ["huge.ttl", "huge.fhir.json", "huge.jsonld"])
def test_a_file_over_the_input_size_limit_is_refused_before_reading(capsys: pytest.CaptureFixture[str],
                                                                    tmp_path: Path, name: str) -> None:
    huge = tmp_path / name
    with huge.open("wb") as fh:  # a sparse 1 GB file: reading it whole would take seconds and a gigabyte
        fh.truncate(10**9)
    started = time.monotonic()
    code, out, err = run(capsys, "recommend", huge)
    assert code == 2 and out == "" and "Traceback" not in err
    assert f"{huge}: is 1,000.0 MB, larger than the input size limit of 100.0 MB (--max-input-size" in err
    assert time.monotonic() - started < 30



def test_max_input_size_option(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    padded = tmp_path / "case.ttl"  # the example case, 300 kB with a comment
    padded.write_text(TURTLE_CASE.read_text(encoding="utf-8") + "#" + "x" * 300_000 + "\n", encoding="utf-8")
    code, _, err = run(capsys, "--max-input-size", "200KB", "recommend", padded)  # the option
    size = padded.stat().st_size
    assert code == 2 and f"{padded}: is {size:,} bytes, larger than the input size limit of 200,000 bytes" in err
    code, _, err = run(capsys, "--max-input-size", "0", "recommend", padded)  # 0: no limit
    assert code == 0, err
    assert parse_size("100MB") == DEFAULT_MAX_INPUT_SIZE and max_input_size() == DEFAULT_MAX_INPUT_SIZE  # restored
    assert [parse_size(s) for s in ("100MB", "100M", "2G", "512KiB", "1.5kb", "0", "42")] == [
        10**8, 10**8, 2 * 10**9, 512 * 1024, 1500, 0, 42]
    for bad in ("-1", "ten", "5X", ""):
        with pytest.raises(ValueError):
            parse_size(bad)
    with pytest.raises(SystemExit) as info:
        main(["--max-input-size", "lots", "statements"])
    assert info.value.code == 2


@pytest.mark.parametrize("name", ["zero.ttl", "zero.json", "zero.jsonld", "zero.rdf"])
def test_dev_zero_is_refused_without_reading_it(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                name: str) -> None:
    link = tmp_path / name  # read whole, /dev/zero would fill the memory; refused from its stat
    link.symlink_to("/dev/zero")
    code, _, err = run(capsys, "validate", link)
    assert code == 2 and f"{link}: is a device, not a regular file: refused without reading it" in err


def test_a_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "case.ttl"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes: a hang, so run in a child process
    command = [str(Path(sys.executable).with_name("guideline-kg")), "recommend", str(fifo)]
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("recommend on a FIFO hangs")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{fifo}: is a FIFO, not a regular file: refused without reading it" in done.stderr


LAUGHS = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
          + "".join(f' <!ENTITY lol{i} "{("&lol" + str(i - 1 if i > 1 else "") + ";") * 10}">\n'
                    for i in range(1, 10))
          + ']>\n<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
          '<rdf:Description rdf:about="https://w3id.org/guideline-kg/case/x"><rdf:value>&lol9;</rdf:value>'
          "</rdf:Description></rdf:RDF>\n")


@pytest.mark.parametrize("name", ["laughs.rdf", "laughs.owl", "laughs.xml"])
def test_billion_laughs_fails_fast(capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str) -> None:
    assert len(LAUGHS) < 1100  # about 1 KB that would expand to 10^9 "lol"s
    path = tmp_path / name
    path.write_text(LAUGHS, encoding="utf-8")
    started = time.monotonic()
    for command in ("recommend", "validate"):
        code, _, err = run(capsys, command, path)
        assert code == 2 and "Traceback" not in err
        assert f"{path}:2: RDF/XML with a document type declaration (<!DOCTYPE or <!ENTITY) is refused" in err
    assert time.monotonic() - started < 20
    external = tmp_path / "external.rdf"  # an external entity would read another file: refused the same way
    external.write_text(LAUGHS.replace('<!ENTITY lol "lol">', '<!ENTITY lol SYSTEM "file:///etc/passwd">'))
    with pytest.raises(InputError, match="document type declaration"):
        read_graph(external)
    plain = tmp_path / "plain.rdf"  # a DTD named only in a comment is no DTD
    plain.write_text(LAUGHS.split("]>\n", 1)[1].replace("&lol9;", "v").replace(
        "<rdf:RDF", "<!-- no <!DOCTYPE here -->\n<rdf:RDF"), encoding="utf-8")
    assert len(read_graph(plain)) == 1


# ---- IRIs minted from names, non-UTF-8 file names ----------------------------------------------------------------

def test_names_are_escaped_in_iris_and_reversible() -> None:
    for name, segment in [("a b<>", "a%20b%3C%3E"), ("p-1.x_~", "p-1.x_~"), ("100%", "100%25"),
                          ("é/é#?", "é%2Fé%23%3F"), (os.fsdecode(b"z\xff"), "z%FF"), ("tab\tnl\n", "tab%09nl%0A")]:
        assert iri_segment(name) == segment
        assert iri_segment_name(segment) == name
        ox.NamedNode(f"https://w3id.org/guideline-kg/case/{segment}")  # a valid IRI


@pytest.mark.slow
def test_a_fhir_case_file_named_with_spaces_and_brackets(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    odd = _copy(CASES / "fhir-c01-first-visit.fhir.json", tmp_path / "a b<>.fhir.json")
    code, out, err = run(capsys, "recommend", "--format", "json", odd)
    assert code == 0 and "Traceback" not in err and "valid URI" not in err, err
    case = json.loads(out)["cases"][0]
    assert case["case"] == "a b<>"
    assert case["patient"] == "https://w3id.org/guideline-kg/case/a%20b%3C%3E"
    assert iri_segment_name(case["patient"].rsplit("/", 1)[1]) == "a b<>"


@pytest.mark.slow
def test_a_file_name_that_is_not_utf8(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    fhir = _copy(CASES / "fhir-c01-first-visit.fhir.json", Path(os.fsdecode(bytes(tmp_path) + b"/z\xff.fhir.json")))
    code, out, err = run(capsys, "recommend", fhir)
    assert code == 0 and "UnicodeEncodeError" not in err and "Traceback" not in err, err
    assert "Case z\\xff  <https://w3id.org/guideline-kg/case/z%FF>" in out
    code, out, err = run(capsys, "recommend", "--format", "json", fhir)
    assert code == 0 and "Traceback" not in err, err
    case = json.loads(out)["cases"][0]
    assert case["case"] == "z\\xff" and case["patient"].endswith("/case/z%FF")  # the bytes, escaped (reversible)
    assert os.fsencode(iri_segment_name("z%FF")) == b"z\xff"
    bad = Path(os.fsdecode(bytes(tmp_path) + b"/y\xfe.ttl"))
    bad.write_text("this is not turtle", encoding="utf-8")
    code, out, err = run(capsys, "validate", bad)
    assert code == 2 and "UnicodeEncodeError" not in err and f"{tmp_path}/y\\xfe.ttl:1" in err, err


# ---- ill-typed literals ------------------------------------------------------------------------------------------

ILL_TYPED = """@prefix gk: <https://w3id.org/guideline-kg/ontology#> .
@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .
<https://w3id.org/guideline-kg/case/x> a gk:Patient ;
  gk:ageYears "abc"^^xsd:integer ;
  gk:assessmentDate "yesterday"^^xsd:date .
"""


@pytest.mark.parametrize("command", ["recommend", "validate"])
def test_ill_typed_literals_are_input_errors_naming_the_value(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                              command: str) -> None:
    path = tmp_path / "ill.ttl"
    path.write_text(ILL_TYPED, encoding="utf-8")
    code, out, err = run(capsys, command, path)
    assert code == 2 and out == ""
    assert err.startswith(f"guideline-kg {command}: error: {path}:4: ill-typed literal \"abc\"^^xsd:integer: "
                          "\"abc\" is not a valid xsd:integer (and 1 more: \"yesterday\"^^xsd:date)")
    assert "Traceback" not in err and "Failed to convert" not in err and "future" not in err
    assert err.count("\n") == 1  # one line, no rdflib noise


def test_ill_typed_literal_in_json_ld(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "ill.jsonld"
    path.write_text(json.dumps({"@id": "https://w3id.org/guideline-kg/case/x",
                                "https://w3id.org/guideline-kg/ontology#assessmentDate":
                                    {"@value": "yesterday", "@type": "http://www.w3.org/2001/XMLSchema#date"}}))
    with pytest.raises(InputError, match=r'ill-typed literal "yesterday"\^\^xsd:date'):
        read_graph(path)
    assert "Failed to convert" not in caplog.text


# ---- the cohort reader: a bad record is reported with its line and skipped --------------------------------------

@pytest.mark.slow
def test_bad_ndjson_records_are_reported_with_their_line_and_skipped(capsys: pytest.CaptureFixture[str],
                                                                     tmp_path: Path) -> None:
    good = tmp_path / "good.ndjson"
    code, _, err = run(capsys, "cohort", "generate", "--n", "2", "--seed", "3", "--format", "fhir-ndjson", "--out", good)
    assert code == 0, err
    first, second = good.read_bytes().splitlines()
    spaced = json.loads(second)
    spaced["id"] = "a b<>"
    cohort = tmp_path / "mixed.ndjson"
    cohort.write_bytes(b"\n".join([first, b"[1, 2]", b'"a string"', b"\xff\xfe{}", b"{", b"42",
                                   json.dumps(spaced).encode(), b"x" * 300_000, b""]))
    code, out, err = run(capsys, "--max-input-size", "200KB", "cohort", "evaluate", cohort)
    assert code == 1 and "Traceback" not in err, err  # some records invalid, the run went on
    lines = [json.loads(line) for line in out.splitlines()]
    valid = [d["case"] for d in lines if not d.get("invalid")]
    # a result names its case by the patient IRI's last segment: the Bundle.id escaped, and reversible
    assert sorted(valid) == sorted([json.loads(first)["id"], "a%20b%3C%3E"])
    assert iri_segment_name("a%20b%3C%3E") == "a b<>"
    reasons = {d["case"]: d["violations"][0]["message"] for d in lines if d.get("invalid")}
    assert reasons == {
        "mixed-line2": f"{cohort}:2: bundle cannot be read: a record must be a FHIR Bundle object, not a JSON array",
        "mixed-line3": f"{cohort}:3: bundle cannot be read: a record must be a FHIR Bundle object, not a JSON string",
        "mixed-line4": f"{cohort}:4: bundle cannot be read: not UTF-8 text (invalid start byte at byte 0)",
        "mixed-line5": f"{cohort}:5: bundle cannot be read: malformed JSON at column 2: Expecting property name "
                       "enclosed in double quotes",
        "mixed-line6": f"{cohort}:6: bundle cannot be read: a record must be a FHIR Bundle object, not a JSON number",
        "mixed-line8": f"{cohort}:8: bundle cannot be read: the record is longer than the input size limit of "
                       "200,000 bytes (--max-input-size); skipped without reading it whole"}


@pytest.mark.slow
def test_a_turtle_cohort_error_is_reported_at_the_defect_s_line(capsys: pytest.CaptureFixture[str],
                                                                tmp_path: Path) -> None:
    cohort = tmp_path / "c.ttl"
    code, _, err = run(capsys, "cohort", "generate", "--n", "3", "--seed", "1", "--out", cohort)
    assert code == 0, err
    lines = cohort.read_text(encoding="utf-8").splitlines()
    markers = [i for i, line in enumerate(lines, 1) if line.startswith("# case ")]
    defect = markers[1] + 5  # a line inside the second record, well below its marker
    lines[defect - 1] += " oops oops"
    cohort.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = run(capsys, "cohort", "evaluate", cohort)
    assert code == 1 and "Traceback" not in err
    bad = [json.loads(line) for line in out.splitlines() if '"invalid":true' in line]
    assert len(bad) == 1
    message = bad[0]["violations"][0]["message"]
    assert message.startswith(f"{cohort}:{defect}: record does not parse: Parser error at line {defect} "), message
    assert len(out.splitlines()) == 3  # the other two records were evaluated


@pytest.mark.parametrize("iri,shown", [("a\\u0020b", "a b"), ("Pat\u008fient", "Pat\\u008fient")])
def test_an_invalid_iri_in_a_case_is_an_input_error_naming_it(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                              iri: str, shown: str) -> None:
    path = tmp_path / "iri.ttl"  # rdflib accepts these IRIs; the stores (pyoxigraph) and RDF tools do not
    path.write_text(f"<https://w3id.org/guideline-kg/case/{iri}> a <https://w3id.org/guideline-kg/ontology#Patient>"
                    " .\n", encoding="utf-8")
    code, out, err = run(capsys, "recommend", path)
    assert code == 2 and out == "" and err.count("\n") == 1, err  # one line: no rdflib warning
    assert f"invalid IRI <https://w3id.org/guideline-kg/case/{shown}>: Invalid IRI code point" in err


@pytest.mark.parametrize("argv", [["query", "{fifo}"], ["cohort", "generate", "--profile", "{fifo}", "--n", "1",
                                                        "--out", "{out}"]])
def test_a_fifo_as_a_query_or_a_cohort_profile_is_refused_without_opening_it(tmp_path: Path, argv: list[str]) -> None:
    fifo = tmp_path / "input"
    os.mkfifo(fifo)  # opening it for reading would block: run in a child process with a time bound
    command = [str(Path(sys.executable).with_name("guideline-kg"))]
    command += [a.format(fifo=fifo, out=tmp_path / "out.ttl") for a in argv]
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{argv[0]} on a FIFO hangs")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert str(fifo) in done.stderr and ("FIFO" in done.stderr or "pipe" in done.stderr)


@pytest.mark.parametrize("name", ["/tmp", "a/b", "..", "/etc/passwd.rq.nope"])
def test_query_by_a_path_that_is_no_query_is_a_clear_error(capsys, name: str) -> None:
    assert main(["query", name]) == 2
    err = capsys.readouterr().err
    assert "internal error" not in err and "Traceback" not in err
    assert "no query named" in err or "not a regular file" in err or "no such file" in err
