"""The external store: an `oxigraph` server on 127.0.0.1 answers every competency question and derives every
example case exactly as the embedded store does."""

from __future__ import annotations

import pytest

from conftest import free_port
from guideline_kg.cases.reader import load_cases
from guideline_kg.checks.competency import answer, competency_graph, cq_files, read_expected, tsv_rows
from guideline_kg.core.errors import InputError
from guideline_kg.core.project import Project
from guideline_kg.reasoning.derive import Evaluator
from guideline_kg.store.results import ResultTooLarge
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
