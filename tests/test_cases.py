"""Loading patient cases: files and folders, formats, and clear errors."""

from __future__ import annotations

import pytest

from guideline_kg.cases.reader import load_cases
from guideline_kg.core.errors import InputError
from guideline_kg.core.namespaces import CASE
from guideline_kg.core.project import Project

PROJECT = Project.at()


def test_folder_loads_every_case_and_skips_expected_sidecars() -> None:
    cases = load_cases([PROJECT.cases_dir])
    names = [c.name for c in cases]
    assert "c01-first-visit" in names and not any(n.endswith(".expected") for n in names)
    assert len(names) == len(set(names))


def test_turtle_and_jsonld_twins_have_the_same_facts_up_to_the_patient_iri() -> None:
    ttl = load_cases([PROJECT.cases_dir / "c13-routine-repeat-imaging.ttl"])[0]
    jsonld = load_cases([PROJECT.cases_dir / "c17-routine-repeat-imaging.jsonld"])[0]
    assert ttl.patient == CASE.c13 and jsonld.patient == CASE.c17
    norm = lambda g, k: {tuple(str(t).replace(k, "X") for t in tr) for tr in g if "label" not in str(tr[1])}  # noqa: E731
    assert norm(ttl.graph, "c13") == norm(jsonld.graph, "c17")


def test_file_without_patient_is_rejected(tmp_path) -> None:
    f = tmp_path / "empty.ttl"
    f.write_text("@prefix gk: <https://w3id.org/guideline-kg/ontology#> .\ngk:x gk:y gk:z .\n")
    with pytest.raises(InputError, match="no gk:Patient"):
        load_cases([f])


def test_missing_file_is_named(tmp_path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_cases([tmp_path / "nope.ttl"])


def test_malformed_json_gives_line_and_column(tmp_path) -> None:
    f = tmp_path / "bad.json"
    f.write_text('{"resourceType": "Bundle",\n  "entry": [}')
    with pytest.raises(InputError) as err:
        load_cases([f])
    assert "bad.json:2:" in str(err.value) and "malformed JSON" in str(err.value)
