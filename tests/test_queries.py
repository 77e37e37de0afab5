"""Named SPARQL files: found by name or path, purpose from the first comment, role from the name; all parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO
from guideline_kg.core.errors import InputError
from guideline_kg.core.project import Project
from guideline_kg.core.queries import list_queries, load_query
from guideline_kg.store.stores import EmbeddedStore

QUERIES = REPO / "queries"


def test_load_by_name_gives_purpose_and_text() -> None:
    query = load_query(QUERIES, "statements")
    assert query.name == "statements" and query.path == QUERIES / "statements.rq"
    assert query.purpose.startswith("Every statement of the guideline")
    assert "gk:sourceLine" in query.text


def test_load_by_name_finds_subfolders_and_by_path() -> None:
    assert load_query(QUERIES, "dangling-reference-violation").path == QUERIES / "checks" / "dangling-reference-violation.rq"
    assert load_query(QUERIES, str(QUERIES / "statements.rq")).name == "statements"


def test_the_package_competency_questions_are_named_queries_too() -> None:
    folders = Project.at(REPO).query_folders()
    cq = REPO / "guidelines" / "plbp" / "queries" / "cq"
    assert folders == [QUERIES, cq]
    assert load_query(folders, "interpretations").path == cq / "interpretations.rq"
    assert load_query(folders, "statements").path == QUERIES / "statements.rq"
    assert [q.path for q in list_queries(folders)] == sorted(QUERIES.rglob("*.rq")) + sorted(cq.rglob("*.rq"))


def test_unknown_query_is_an_input_error() -> None:
    with pytest.raises(InputError, match="no query named 'nope'"):
        load_query(QUERIES, "nope")


@pytest.mark.parametrize("name, role", [("x-violation", "violation"), ("x-warning", "warning"), ("x", "report")])
def test_role_from_file_name(tmp_path: Path, name: str, role: str) -> None:
    (tmp_path / f"{name}.rq").write_text("# purpose\nASK {}\n")
    assert load_query(tmp_path, name).role == role


def test_list_is_sorted_and_complete() -> None:
    queries = list_queries(QUERIES)
    assert [q.path for q in queries] == sorted(QUERIES.rglob("*.rq"))


@pytest.mark.parametrize("query", list_queries(Project.at(REPO).query_folders()), ids=lambda q: q.name)
def test_every_shipped_query_parses_and_states_its_purpose(query) -> None:
    assert query.purpose, f"{query.path}: first line should be a comment saying what the query is for"
    EmbeddedStore().raw(query.text)  # raises SparqlSyntaxError on a bad query
