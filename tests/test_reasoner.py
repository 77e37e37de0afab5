"""The reference reasoner (HermiT through owlready2): the merged graph is consistent with no unsatisfiable class,
and a contradiction or an unsatisfiable class is found and named."""

from __future__ import annotations

import pytest
from rdflib import Graph, Literal, Namespace, URIRef

from conftest import REPO
from guideline_kg.core.namespaces import GK, OWL, RDF, XSD
from guideline_kg.core.rdfio import read_graph
from guideline_kg.reasoning.hermit import (
    ReasonerResult,
    check_consistency,
    classify,
    reasoner_input,
    reasoning_module,
    run_hermit,
)

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


# ---- the reasoning module: HermiT is given the schema, the case and what links to it, not the other individuals ----

_MODULE_SCHEMA = f"""
@prefix : <{TEST}> . @prefix owl: <{OWL}> . @prefix xsd: <{XSD}> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
:knows a owl:ObjectProperty . :treatedWith a owl:ObjectProperty . :mentions a owl:ObjectProperty .
:sameHome a owl:ObjectProperty, owl:FunctionalProperty . :age a owl:DatatypeProperty .
:note a owl:AnnotationProperty .
:Marked a owl:Class . :Thing2 a owl:Class .
:Adult a owl:Class ; owl:equivalentClass [ a owl:Restriction ; owl:onProperty :age ;
    owl:someValuesFrom [ a rdfs:Datatype ; owl:onDatatype xsd:integer ;
                         owl:withRestrictions ( [ xsd:minInclusive 18 ] ) ] ] .
:KnowsMarkedTwoAway a owl:Class ; owl:equivalentClass [ a owl:Restriction ; owl:onProperty :knows ;
    owl:someValuesFrom [ a owl:Restriction ; owl:onProperty :knows ; owl:someValuesFrom :Marked ] ] .
:TreatedWithDrug a owl:Class ; owl:equivalentClass [ a owl:Restriction ; owl:onProperty :treatedWith ;
    owl:hasValue :drug ] .
:Marked rdfs:subClassOf [ a owl:Restriction ; owl:onProperty :knows ; owl:allValuesFrom :Thing2 ] .
:Marked :note :annotated .
"""
_MODULE_ABOX = f"""
@prefix : <{TEST}> . @prefix owl: <{OWL}> .
:friend a owl:NamedIndividual ; :knows :friendOfFriend ; :mentions :mentioned .
:friendOfFriend a owl:NamedIndividual, :Marked .
:drug a owl:NamedIndividual, :Thing2 ; :mentions :drugLabelled .
:elsewhere a owl:NamedIndividual, :Marked ; :knows :elsewhere2 .
:elsewhere2 a owl:NamedIndividual .
:mentioned a owl:NamedIndividual .
:drugLabelled a owl:NamedIndividual .
:annotated a owl:NamedIndividual .
:home1 a owl:NamedIndividual . :home2 a owl:NamedIndividual .
:twoHomes a owl:NamedIndividual ; :sameHome :home1, :home2 .
:home1Only a owl:NamedIndividual ; :sameHome :home3 . :home3 a owl:NamedIndividual .
"""
_MODULE_CASE = f"""
@prefix : <{TEST}> .
:p :age 54 ; :knows :friend ; :treatedWith :drug ; :mentions :home1 .
"""


_SCHEMA = Graph().parse(data=_MODULE_SCHEMA, format="turtle")


def _module_graphs() -> tuple[Graph, Graph]:
    knowledge = _SCHEMA + Graph().parse(data=_MODULE_ABOX, format="turtle")
    return knowledge, Graph().parse(data=_MODULE_CASE, format="turtle")


def test_reasoning_module_keeps_the_schema_with_datatype_facets_and_every_case_fact() -> None:
    knowledge, case = _module_graphs()
    module, left_out = reasoning_module(knowledge, case)
    assert set(_SCHEMA) - set(module) == set()  # with the xsd:minInclusive facet (a literal on a blank node)
    assert (None, XSD.minInclusive, Literal(18)) in module
    assert set(case) <= set(module)
    assert left_out > 0


def test_reasoning_module_keeps_what_links_to_the_case_and_nominals_and_leaves_out_the_rest() -> None:
    knowledge, case = _module_graphs()
    module, left_out = reasoning_module(knowledge, case)
    t = Namespace(TEST)
    subjects = set(module.subjects())
    # two steps along :knows (a property a restriction reads): needed to classify :p as KnowsMarkedTwoAway
    assert {t.friend, t.friendOfFriend} <= subjects
    assert t.drug in subjects  # a nominal (owl:hasValue) with its own assertions
    assert {t.twoHomes, t.home2} <= subjects  # two values of a functional property: :home1 (the case's) = :home2
    # not linked by any property a class expression reads: :elsewhere (and what it knows), what the case's
    # individuals merely :mention, a functional value that merges nothing, an annotation's value
    left = {t.elsewhere, t.elsewhere2, t.drugLabelled, t.home1Only, t.home3, t.annotated, t.mentioned}
    assert left & subjects == set() and left_out == len(left)
    # an assertion from a kept individual to a left-out one stays (it may type the kept one by domain)
    assert {(t.friend, t.mentions, t.mentioned), (t.drug, t.mentions, t.drugLabelled)} <= set(module)
    assert (t.elsewhere, t.knows, t.elsewhere2) not in module and (t.home1Only, t.sameHome, t.home3) not in module


def test_reasoning_module_leaves_nothing_out_with_a_key_or_the_top_property() -> None:
    knowledge, case = _module_graphs()
    for extra in (f"<{TEST}Marked> <{OWL.hasKey}> ( <{TEST}knows> ) .",
                  f"<{TEST}All> <{OWL.equivalentClass}> [ <{OWL.onProperty}> <{OWL.topObjectProperty}> ] ."):
        module, left_out = reasoning_module(knowledge + Graph().parse(data=extra, format="turtle"), case)
        assert left_out == 0 and (URIRef(TEST + "elsewhere"), RDF.type, URIRef(TEST + "Marked")) in module


@pytest.mark.hermit
def test_classify_on_the_module_equals_hermit_on_the_whole_graph() -> None:
    knowledge, case = _module_graphs()
    patient = URIRef(TEST + "p")
    whole = run_hermit(knowledge + case, [patient])
    module = classify(knowledge, [patient], extra=case)
    assert module.types == whole.types
    assert module.types[str(patient)] >= {TEST + "Adult", TEST + "KnowsMarkedTwoAway", TEST + "TreatedWithDrug"}
