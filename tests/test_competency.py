"""Every competency question of queries/cq/ answers exactly its expected rows."""

from __future__ import annotations

import pytest

from guideline_kg.checks.competency import answer, competency_store, cq_files, read_expected, tsv_rows
from guideline_kg.core.project import Project

PROJECT = Project.at()


@pytest.fixture(scope="module")
def store():
    return competency_store(PROJECT)


def test_there_are_competency_questions() -> None:
    assert len(cq_files(PROJECT)) >= 5


@pytest.mark.parametrize("path", cq_files(PROJECT), ids=lambda p: p.stem)
def test_competency_question(store, path) -> None:
    expected_header, expected_rows = read_expected(path.with_suffix(".expected.tsv"))
    rows = answer(store, path)
    assert rows.variables == expected_header
    got = tsv_rows(rows)
    assert got == expected_rows, (f"missing: {sorted(expected_rows - got)}\nunexpected: {sorted(got - expected_rows)}")
