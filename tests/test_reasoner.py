"""The reference reasoner (HermiT through owlready2): the merged graph is consistent with no unsatisfiable class,
and a contradiction or an unsatisfiable class is found and named."""

from __future__ import annotations

import pytest
from rdflib import Graph, Literal, URIRef

from conftest import REPO
from guideline_kg.core.namespaces import GK, OWL, RDF, XSD
from guideline_kg.core.rdfio import read_graph
from guideline_kg.reasoning.hermit import ReasonerResult, check_consistency, reasoner_input

ONTOLOGY = read_graph(REPO / "ontology" / "guideline-kg.ttl")
TEST = "https://w3id.org/guideline-kg/test/reasoner/"


@pytest.mark.hermit
def test_merged_graph_is_consistent(hermit_result: ReasonerResult) -> None:
    assert hermit_result.consistent


@pytest.mark.hermit
def test_no_named_class_is_unsatisfiable(hermit_result: ReasonerResult) -> None:
    assert hermit_result.unsatisfiable == []


@pytest.mark.hermit
def test_a_contradiction_is_found_inconsistent() -> None:
    graph = ONTOLOGY + read_graph(REPO / "tests" / "fixtures" / "inconsistent" / "kg" / "guideline.ttl")
    assert check_consistency(graph).consistent is False


@pytest.mark.hermit
def test_an_unsatisfiable_class_is_named() -> None:
    snippet = f"""
    @prefix gk: <{GK}> . @prefix owl: <{OWL}> . @prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
    <{TEST}ForAndAgainst> a owl:Class ; rdfs:subClassOf gk:RecommendationFor, gk:RecommendationAgainst .
    """
    result = check_consistency(ONTOLOGY + Graph().parse(data=snippet, format="turtle"))
    assert result.consistent and result.unsatisfiable == [f"{TEST}ForAndAgainst"]


def test_reasoner_input_drops_imports_and_literals_outside_the_datatype_map() -> None:
    s = URIRef(TEST + "x")
    graph = Graph()
    graph.add((s, OWL.imports, URIRef("https://w3id.org/guideline-kg/ontology")))
    graph.add((s, GK.assessmentDate, Literal("2026-03-02", datatype=XSD.date)))
    graph.add((s, GK.ageYears, Literal(54)))
    graph.add((s, RDF.type, GK.Patient))
    kept, dropped = reasoner_input(graph)
    assert dropped == 1
    assert set(kept) == {(s, GK.ageYears, Literal(54)), (s, RDF.type, GK.Patient)}
