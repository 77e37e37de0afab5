"""The OWL 2 DL profile check (OWL API inside HermiT.jar)."""

from __future__ import annotations

import pytest
from rdflib import Graph

from guideline_kg.outputs.build import close_imports
from guideline_kg.reasoning.owl_profile import owl2_dl_violations

BAD = """
@prefix : <https://w3id.org/guideline-kg/test/p#> .
@prefix owl: <http://www.w3.org/2002/07/owl#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
<https://w3id.org/guideline-kg/test/p> a owl:Ontology .
:q a owl:ObjectProperty, owl:DatatypeProperty .
:C a owl:Class ; rdfs:subClassOf [ a owl:Restriction ; owl:onProperty :q ; owl:someValuesFrom :D ] .
"""


@pytest.mark.hermit
@pytest.mark.slow
def test_merged_guideline_graph_is_in_owl2_dl(knowledge: Graph) -> None:
    """The merge as `build` writes it: one ontology, its imports closed in it; checked with nothing stripped."""
    assert owl2_dl_violations(close_imports(knowledge)) == []


def test_imports_and_several_headers_are_reported_not_fetched(knowledge: Graph) -> None:
    """The raw merge of the package's files has three headers and imports the check would have to fetch: it
    reports them (the OWL API is not run, so nothing is fetched)."""
    violations = owl2_dl_violations(knowledge)
    assert any(v.startswith("owl:imports <https://w3id.org/guideline-kg/ontology> of ") for v in violations)
    assert "3 ontology headers (" in violations[-1]


@pytest.mark.hermit
def test_violations_are_reported_with_the_offending_terms() -> None:
    violations = owl2_dl_violations(Graph().parse(data=BAD, format="turtle"))
    text = "\n".join(violations)
    assert "Cannot pun between properties" in text and "p#q" in text
    assert "Use of undeclared class" in text and "p#D" in text
