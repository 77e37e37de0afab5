"""`guideline-kg query`: named queries, files and text on knowledge + cases; formats; --inferred; errors."""

from __future__ import annotations

import json

import pyoxigraph as ox
import pytest

from guideline_kg.checks.competency import cq_files
from guideline_kg.cli.main import main
from guideline_kg.core.project import Project
from guideline_kg.outputs.dataset import load_into, query_data
from guideline_kg.store.results import QueryResult, ResultTooLarge, materialise, serialise, table
from guideline_kg.store.stores import EmbeddedStore

PROJECT = Project.at()
CASES = str(PROJECT.cases_dir)
C06 = str(PROJECT.cases_dir / "c06-opioid-no-relief.ttl")


def run(capsysbinary, *argv: str) -> tuple[int, bytes, str]:
    code = main(list(argv))
    out = capsysbinary.readouterr()
    return code, out.out, out.err.decode()


def rows(data: bytes, fmt: ox.QueryResultsFormat) -> set[tuple[str, ...]]:
    solutions = ox.parse_query_results(data, fmt)
    names = [v.value for v in solutions.variables]
    return {tuple("" if s[n] is None else str(s[n]) for n in names) for s in solutions}


@pytest.mark.slow
def test_all_competency_questions_from_the_command_line(capsysbinary) -> None:
    """Every competency question answers its expected rows through the command line."""
    for path in cq_files(PROJECT):
        code, out, err = run(capsysbinary, "query", path.stem, CASES, "--results", "--format", "tsv")
        assert code == 0, err
        assert rows(out, ox.QueryResultsFormat.TSV) == rows(path.with_suffix(".expected.tsv").read_bytes(),
                                                          ox.QueryResultsFormat.TSV), path.stem


def test_list_shows_named_queries_with_purpose(capsysbinary) -> None:
    code, out, _ = run(capsysbinary, "query", "--list", "--format", "json")
    listed = {q["name"]: q["purpose"] for q in json.loads(out)}
    assert code == 0
    for path in cq_files(PROJECT):
        first = path.read_text(encoding="utf-8").splitlines()[0].lstrip("# ").strip()
        assert listed[path.stem] == first


@pytest.mark.parametrize("fmt,parse", [("json", ox.QueryResultsFormat.JSON), ("xml", ox.QueryResultsFormat.XML),
                                       ("tsv", ox.QueryResultsFormat.TSV)])
def test_select_formats_agree(capsysbinary, fmt, parse) -> None:
    q = "SELECT ?s ?n WHERE { ?s gk:referenceNumber ?n }"
    code, out, _ = run(capsysbinary, "query", "--query", q, "--format", fmt)
    assert code == 0
    got = rows(out, parse)
    assert len(got) >= 6 and all(r[0].startswith("<https://w3id.org/guideline-kg/") for r in got)


def test_query_file_and_table(capsysbinary, tmp_path) -> None:
    path = tmp_path / "mine.rq"
    path.write_text("# how many statements cite each reference\nSELECT ?n (COUNT(?s) AS ?k) WHERE {\n"
                    "  ?s gk:cites ?r . ?r gk:referenceNumber ?n } GROUP BY ?n ORDER BY ?n\n")
    code, out, _ = run(capsysbinary, "query", str(path))
    text = out.decode()
    assert code == 0 and text.splitlines()[0].split() == ["n", "k"] and text.rstrip().endswith("solutions)")


def test_construct_defaults_to_turtle_and_refuses_csv(capsysbinary) -> None:
    q = "CONSTRUCT WHERE { ?g a gk:Guideline }"
    code, out, _ = run(capsysbinary, "query", "--query", q)
    assert code == 0 and len(list(ox.parse(out, ox.RdfFormat.TURTLE))) == 1 and b"@prefix gk:" in out
    code, out, err = run(capsysbinary, "query", "--query", q, "--format", "csv")
    assert code == 2 and out == b"" and "does not fit" in err


def test_cases_are_queried(capsysbinary) -> None:
    q = "SELECT ?p WHERE { ?p a gk:Patient }"
    assert rows(run(capsysbinary, "query", "--query", q, "--format", "tsv")[1], ox.QueryResultsFormat.TSV) == set()
    _code, out, _ = run(capsysbinary, "query", "--query", q, C06, "--format", "tsv")
    assert rows(out, ox.QueryResultsFormat.TSV) == {("<https://w3id.org/guideline-kg/case/c06>",)}


@pytest.mark.hermit
def test_inferred_adds_the_reasoners_types(capsysbinary) -> None:
    q = "SELECT ?t WHERE { case:c06 a ?t }"
    plain = rows(run(capsysbinary, "query", "--query", q, C06, "--format", "tsv")[1], ox.QueryResultsFormat.TSV)
    code, out, err = run(capsysbinary, "query", "--query", q, C06, "--inferred", "--format", "tsv")
    inferred = rows(out, ox.QueryResultsFormat.TSV)
    assert code == 0 and "inferred rdf:type triples added" in err
    assert plain < inferred
    # the populations the derivation finds c06 in are among HermiT's conclusions
    code, out, _ = run(capsysbinary, "query", "--query", "SELECT ?pop WHERE { ?r gk:forCase case:c06 ; "
                       "gk:status gk:Applicable ; prov:wasDerivedFrom ?pop . ?pop a owl:Class }", C06, "--results",
                       "--format", "tsv")
    populations = rows(out, ox.QueryResultsFormat.TSV)
    assert populations and populations <= inferred


@pytest.mark.parametrize("query,line,column", [("SELECT * WHERE { ?s ?p }", 1, None),
                                               ("SELECT ?s\nWHERE {\n  ?s ?p ?o .\n  FILTER( }", 4, None)])
def test_syntax_errors_give_line_and_column(capsysbinary, query, line, column) -> None:
    code, out, err = run(capsysbinary, "query", "--query", query)
    assert code == 2 and out == b""
    assert f"SPARQL syntax error at line {line}, column " in err and "expected" in err
    assert "Traceback" not in err


def test_unknown_name_and_missing_file(capsysbinary) -> None:
    code, _, err = run(capsysbinary, "query", "no-such-query")
    assert code == 2 and "no query named 'no-such-query'" in err
    code, _, err = run(capsysbinary, "query", "missing.rq")
    assert code == 2 and "missing.rq" in err
    code, _, err = run(capsysbinary, "query")
    assert code == 2 and "give a query" in err


def test_materialise_limit_and_serialise() -> None:
    store = ox.Store()
    store.add(ox.Quad(ox.NamedNode("urn:a"), ox.NamedNode("urn:b"), ox.Literal("x", language="en")))
    res = materialise(store.query("SELECT ?s ?p ?o WHERE { ?s ?p ?o }"))
    assert res == QueryResult("solutions", res.data, 1)
    assert serialise(res, "csv").splitlines() == [b"s,p,o", b"urn:a,urn:b,x"]
    assert "x@en" in table(res)
    with pytest.raises(ResultTooLarge):
        materialise(store.query("SELECT * WHERE { ?s ?p ?o }"), limit=0)
    graph = materialise(store.query("CONSTRUCT WHERE { ?s ?p ?o }"))
    assert graph.kind == "graph" and serialise(graph, "nt") == b'<urn:a> <urn:b> "x"@en .\n'


@pytest.mark.parametrize("fmt", ["json", "xml", "csv", "tsv", "table"])
def test_streamed_output_is_the_bytes_serve_answers_with(capsysbinary, fmt) -> None:
    """`query` streams its results; `serve` materialises them: the same bytes for the same data and query."""
    q = "SELECT ?s ?n WHERE { ?s gk:referenceNumber ?n } ORDER BY ?s"
    code, out, err = run(capsysbinary, "query", "--query", q, "--format", fmt)
    assert code == 0, err
    store = EmbeddedStore()
    load_into(store, query_data(PROJECT, []))
    expected = serialise(store.result(q), fmt)
    assert out == (expected if expected.endswith(b"\n") else expected + b"\n")
    assert out.count(b"w3id.org/guideline-kg/") >= 6 or fmt == "table"
