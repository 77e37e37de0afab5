"""The external store: an `oxigraph` server on 127.0.0.1 answers every competency question and derives every
example case exactly as the embedded store does."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time

import pyoxigraph as ox
import pytest

from conftest import free_port
from guideline_kg.cases.reader import load_cases
from guideline_kg.checks.competency import answer, competency_graph, cq_files, read_expected, tsv_rows
from guideline_kg.cli.main import main
from guideline_kg.core.errors import InputError
from guideline_kg.core.project import Project
from guideline_kg.reasoning.derive import Evaluator
from guideline_kg.store.results import QueryTimeout, ResultTooLarge, write_streamed
from guideline_kg.store.stores import EmbeddedStore, RemoteStore, SparqlSyntaxError, remote_endpoints

PROJECT = Project.at()


@pytest.fixture(scope="module")
def graph():
    return competency_graph(PROJECT)


@pytest.fixture(scope="module")
def remote(oxigraph_url, graph) -> RemoteStore:
    store = RemoteStore(oxigraph_url)
    store.replace_graph(graph)
    return store


@pytest.fixture(scope="module")
def embedded(graph) -> EmbeddedStore:
    return EmbeddedStore.from_graph(graph)


@pytest.mark.parametrize("path", cq_files(PROJECT), ids=lambda p: p.stem)
@pytest.mark.slow
def test_competency_question_same_on_oxigraph_server(remote, embedded, path) -> None:
    header, expected = read_expected(path.with_suffix(".expected.tsv"))
    got_remote, got_embedded = answer(remote, path), answer(embedded, path)
    assert got_remote.variables == got_embedded.variables == header
    assert tsv_rows(got_remote) == tsv_rows(got_embedded) == expected


@pytest.mark.slow
def test_every_example_case_derives_the_same_on_the_server(oxigraph_url, knowledge) -> None:
    evaluator = Evaluator(knowledge, PROJECT)
    cases = load_cases([PROJECT.cases_dir])
    store = RemoteStore(oxigraph_url)
    store.replace_graph(knowledge)
    for case in cases:
        store.add_graph(case.graph)
    remote = {r.case: r.to_json() for r in
              evaluator.evaluate_store(store, [c.patient for c in cases], {c.patient: c.name for c in cases})}
    assert len(remote) == len(cases) >= 17
    for case in cases:
        assert remote[case.name] == evaluator.evaluate(case).to_json(), case.name


@pytest.mark.slow
def test_ask_and_construct_same_on_both(remote, embedded) -> None:
    q_ask = "ASK { ?g a gk:Guideline }"
    q_con = "CONSTRUCT { ?s gk:sourceLine ?l } WHERE { ?s gk:sourceLine ?l }"
    assert remote.ask(q_ask) is embedded.ask(q_ask) is True
    assert set(remote.construct(q_con)) == set(embedded.construct(q_con))
    assert len(embedded.construct(q_con)) > 20


@pytest.mark.slow
def test_syntax_error_from_the_server_gives_the_users_line_and_column(remote, embedded) -> None:
    query = "SELECT ?s\nWHERE { ?s ?p }"
    with pytest.raises(SparqlSyntaxError) as err:
        remote.select(query)
    with pytest.raises(SparqlSyntaxError) as local:
        embedded.select(query)
    assert err.value.line == 2 and err.value.column in (15, 16)  # at or just after the closing brace
    assert str(err.value) == str(local.value)
    assert f"line 2, column {err.value.column}" in str(err.value)


@pytest.mark.slow
def test_result_limit_on_the_server(remote) -> None:
    with pytest.raises(ResultTooLarge):
        remote.result("SELECT * WHERE { ?s ?p ?o }", limit=10)
    assert remote.result("SELECT * WHERE { ?s ?p ?o } LIMIT 10", limit=10).count == 10


def test_unreachable_server_is_an_input_error() -> None:
    with pytest.raises(InputError, match="cannot reach"):
        RemoteStore(f"http://127.0.0.1:{free_port()}").ask("ASK {}")


@pytest.mark.parametrize("url,data,expected", [
    ("http://h:7878", None, ("http://h:7878/query", "http://h:7878/store")),
    ("http://h:7878/", None, ("http://h:7878/query", "http://h:7878/store")),
    ("http://h:7878/query", None, ("http://h:7878/query", "http://h:7878/store")),
    ("http://h:3030/ds/sparql", "http://h:3030/ds/data", ("http://h:3030/ds/sparql", "http://h:3030/ds/data")),
])
def test_endpoints(url, data, expected) -> None:
    assert remote_endpoints(url, data) == expected


@pytest.mark.parametrize("url", ["ftp://h/x", "h:7878", "http://h:3030/ds/sparql"])
def test_endpoints_refused(url) -> None:
    with pytest.raises(InputError):
        remote_endpoints(url)


@pytest.fixture
def silent_server():
    """A loopback server that accepts connections and never answers (a stuck SPARQL server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not done.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    done.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


def test_a_server_that_never_answers_times_out(silent_server) -> None:
    """The HTTP timeout bounds every wait for a remote store: QueryTimeout (exit 2), not a hang."""
    store = RemoteStore(silent_server, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(QueryTimeout, match=r"no answer within the time limit \(0.5 s\)"):
        write_streamed(lambda: store.streaming("ASK {}"), "tsv", io.BytesIO(), timeout=30)
    assert time.monotonic() - started < 20
    store.close()


def test_query_store_timeout_from_the_command_line(silent_server, capsys) -> None:
    started = time.monotonic()
    code = main(["query", "--query", "ASK {}", "--store", silent_server, "--timeout", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "no answer within the time limit (1 s)" in err and "Traceback" not in err
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_streamed_results_same_on_the_server(remote, embedded) -> None:
    """The server's answer is parsed as it arrives and written by the same writers: the same bytes as the
    embedded store's, and the result limit stops both after the same rows."""
    query = "SELECT ?s ?line WHERE { ?s gk:sourceLine ?line } ORDER BY ?s ?line"
    for fmt in ("tsv", "csv", "json", "xml"):
        outs = [io.BytesIO(), io.BytesIO()]
        for store, out in zip((remote, embedded), outs, strict=True):
            write_streamed(lambda s=store: s.streaming(query), fmt, out, timeout=60)
        assert outs[0].getvalue() == outs[1].getvalue(), fmt
    out = io.BytesIO()
    with pytest.raises(ResultTooLarge) as err:
        write_streamed(lambda: remote.streaming(query), "tsv", out, timeout=60, limit=5)
    assert err.value.written == 5 and len(out.getvalue().splitlines()) == 6
    graph = io.BytesIO()
    write_streamed(lambda: remote.streaming("CONSTRUCT WHERE { ?s gk:sourceLine ?l }"), "nt", graph, timeout=60)
    assert len(list(ox.parse(graph.getvalue(), ox.RdfFormat.N_TRIPLES))) > 20
