"""The embedded store: strict SPARQL on pyoxigraph, rdflib terms out, syntax errors at the user's own line."""

from __future__ import annotations

import pytest
from rdflib import Graph, Literal, URIRef

from guideline_kg.errors import InputError
from guideline_kg.namespaces import GK
from guideline_kg.store import EmbeddedStore, SparqlSyntaxError

S = URIRef("https://w3id.org/guideline-kg/test/store/s")


@pytest.fixture()
def small() -> EmbeddedStore:
    graph = Graph()
    graph.add((S, GK.sourceLine, Literal(4)))
    graph.add((S, GK.verbatimText, Literal("Obtain MRI or CT imaging")))
    return EmbeddedStore.from_graph(graph)


def test_select_returns_rdflib_terms_with_project_prefixes(small: EmbeddedStore) -> None:
    rows = small.select("SELECT ?s ?line WHERE { ?s gk:sourceLine ?line }")
    assert rows.variables == ["s", "line"] and rows.rows == [(S, Literal(4))]


def test_ask_and_construct(small: EmbeddedStore) -> None:
    assert small.ask("ASK { ?s gk:verbatimText ?t }")
    built = small.construct("CONSTRUCT { ?s gk:order ?l } WHERE { ?s gk:sourceLine ?l }")
    assert set(built) == {(S, GK.order, Literal(4))}


def test_select_refuses_an_ask_query(small: EmbeddedStore) -> None:
    with pytest.raises(InputError, match="expected a SELECT query"):
        small.select("ASK { ?s ?p ?o }")


# Columns are pyoxigraph's own (the furthest point its parser reached); lines are shifted past the prologue.
@pytest.mark.parametrize("query, line, column", [
    ("SELECT * WHERE { ?s ?p }", 1, 25),
    ("SELECT * WHERE {\n  ?s ?p ?o .\n  FILTER(\n}", 4, 2),
    ("SELECT * WHERE {\n  ?s <https://w3id.org/a/12:30> ?o\n  FILTER(1 = }", 3, 15),
], ids=["first-line", "fourth-line", "colon-digits-in-iri"])
def test_syntax_errors_count_lines_from_the_users_query(small: EmbeddedStore, query: str, line: int,
                                                        column: int) -> None:
    with pytest.raises(SparqlSyntaxError) as info:
        small.select(query)
    assert (info.value.line, info.value.column) == (line, column)
    assert str(info.value).startswith(f"SPARQL syntax error at line {line}, column {column}: expected")
