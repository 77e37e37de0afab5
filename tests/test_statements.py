"""The statement records behind `statements --format json`: exact keys, every content line, exact text."""

from __future__ import annotations

from guideline_kg.core.project import Project
from guideline_kg.knowledge.graph import load_knowledge
from guideline_kg.knowledge.statements import list_statements
from guideline_kg.store.stores import EmbeddedStore

KEYS = ["id", "source_lines", "text", "citations", "kind", "section", "action", "direction", "strength",
        "line_of_therapy"]
ACTION_KEYS = ("direction", "strength", "line_of_therapy")


def test_records_have_exactly_the_contract_keys(store, project) -> None:
    records = list_statements(store, project)
    assert records and all(list(r) == KEYS for r in records)


def test_every_content_line_with_exact_text_and_citations(store, project, expected_lines) -> None:
    records = list_statements(store, project)
    by_line = {}
    for r in records:
        for line in r["source_lines"]:
            by_line.setdefault(line, []).append(r)
    assert sorted(by_line) == sorted(expected_lines)
    for line, (text, refs) in expected_lines.items():
        for r in by_line[line]:
            assert (r["text"], r["citations"]) == (text, refs), f"line {line}"


def test_actions_carry_direction_strength_and_line_others_null(store, project) -> None:
    for r in list_statements(store, project):
        if r["action"]:
            assert all(isinstance(r[k], str) for k in ACTION_KEYS), r["id"]
        else:
            assert r["action"] is None and r["line_of_therapy"] is None, r["id"]


def test_kinds_and_wordings_are_notations(store, project) -> None:
    records = {r["id"].rsplit("/", 1)[-1]: r for r in list_statements(store, project)}
    assert records["L02"]["kind"] == "recommendation-for" and records["L02"]["strength"] == "strongly recommended"
    assert records["L37"]["direction"] == "against" and records["L37"]["strength"] == "avoid"
    assert records["L26"]["kind"] == "unspecified-heading"
    assert records["L05-urgent"]["source_lines"] == [5] and records["L05-urgent"]["line_of_therapy"] == "initial-evaluation"


def test_records_are_ordered_by_source_line(store, project) -> None:
    lines = [r["source_lines"] for r in list_statements(store, project)]
    assert lines == sorted(lines)


def test_the_second_guideline_lists_through_the_same_code(mini_project: Project, mini_expected_lines) -> None:
    records = list_statements(EmbeddedStore.from_graph(load_knowledge(mini_project)), mini_project)
    assert [(r["source_lines"], r["text"], r["citations"]) for r in records] == \
        [([n], text, refs) for n, (text, refs) in sorted(mini_expected_lines.items())]
    assert all(r["id"].startswith("https://w3id.org/guideline-kg/test/mini/") for r in records)
    assert records[2]["direction"] == "against" and records[2]["action"] == \
        ["https://w3id.org/guideline-kg/test/mini/AnkleRadiography"]
