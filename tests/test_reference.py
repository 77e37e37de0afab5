"""The generated ontology reference: complete, and the committed docs/ontology-reference.md is up to date."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rdflib import Graph

from conftest import REPO
from guideline_kg.cli.main import main
from guideline_kg.core.namespaces import GK, OWL, RDF
from guideline_kg.outputs.reference import load_ontology, ontology_reference

COMMITTED = REPO / "docs" / "ontology-reference.md"


@pytest.fixture(scope="module")
def ontology(project) -> Graph:
    return load_ontology(project)


@pytest.fixture(scope="module")
def reference(ontology: Graph) -> str:
    return ontology_reference(ontology)


def test_committed_reference_is_up_to_date(reference: str) -> None:
    assert COMMITTED.read_text(encoding="utf-8") == reference, \
        "docs/ontology-reference.md is stale: run guideline-kg reference --out docs/ontology-reference.md"


def test_every_gk_term_has_one_entry(ontology: Graph, reference: str) -> None:
    terms = {s for k in (OWL.Class, OWL.ObjectProperty, OWL.DatatypeProperty, OWL.AnnotationProperty,
                         OWL.NamedIndividual) for s in ontology.subjects(RDF.type, k) if str(s).startswith(str(GK))}
    anchors = re.findall(r'<a id="gk-([^"]+)"></a>', reference)
    assert sorted(anchors) == sorted(str(t)[len(str(GK)):] for t in terms)


def test_links_point_at_anchors(reference: str) -> None:
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', reference))
    headings = {h.lower().replace(" ", "-") for h in re.findall(r"^## (.+)$", reference, flags=re.M)}
    targets = set(re.findall(r"\]\(#([^)]+)\)", reference))
    assert targets - anchors - headings == set()


def test_entries_show_hierarchy_domain_range_notation_and_cpg(reference: str) -> None:
    assert "  - [`gk:RecommendationFor`](#gk-RecommendationFor)" in reference  # nested under ActionRecommendation
    entry = reference.split('<a id="gk-recommendsAction"></a>')[1].split("<a id=", maxsplit=1)[0]
    assert "**Domain:** [`gk:Statement`]" in entry and "**Range:** [`gk:CareActionType`]" in entry
    assert "**CPG-on-FHIR:** PlanDefinition.action.definitionCanonical" in entry
    avoid = reference.split('<a id="gk-Avoid"></a>')[1].split("<a id=", maxsplit=1)[0]
    assert "**Notation:** `avoid`" in avoid
    assert "### Instances of strength wording (`gk:StrengthWording`)" in reference


def test_reference_command_writes_and_checks(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ref.md"
    assert main(["reference", "--out", str(out)]) == 0
    assert main(["reference", "--out", str(out), "--check"]) == 0
    out.write_text(out.read_text() + "hand edit\n")
    assert main(["reference", "--out", str(out), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
