"""The OWL-to-SPARQL compiler: each construct gives the members it should, and refuses what it cannot decide."""

from __future__ import annotations

import pytest
from rdflib import Graph

from guideline_kg.compile.owl2sparql import Compiler, UnsupportedExpression
from guideline_kg.store.stores import EmbeddedStore

TBOX = """
@prefix : <https://w3id.org/guideline-kg/test/o#> .
@prefix owl: <http://www.w3.org/2002/07/owl#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .
:Sub rdfs:subClassOf :Super .
:Old owl:equivalentClass [ owl:intersectionOf ( :Person [ a owl:Restriction ; owl:onProperty :age ;
    owl:someValuesFrom [ a rdfs:Datatype ; owl:onDatatype xsd:decimal ; owl:withRestrictions ( [ xsd:minInclusive 65 ] ) ] ] ) ] .
:Flagged owl:equivalentClass [ a owl:Restriction ; owl:onProperty :flag ; owl:hasValue true ] .
:RedOrBlue owl:equivalentClass [ a owl:Restriction ; owl:onProperty :colour ; owl:someValuesFrom [ owl:oneOf ( :red :blue ) ] ] .
:HasSuper owl:equivalentClass [ a owl:Restriction ; owl:onProperty :has ; owl:someValuesFrom :Super ] .
:Either owl:equivalentClass [ owl:unionOf ( :Old :Flagged ) ] .
:NotOld owl:equivalentClass [ owl:complementOf :Old ] .
"""
ABOX = """
@prefix : <https://w3id.org/guideline-kg/test/o#> .
:a a :Person ; :age 70 ; :flag false ; :colour :red ; :has :x . :x a :Sub .
:b a :Person ; :age 64.5 ; :flag true ; :colour :green .
:c a :Person ; :age "seventy" .
"""
NS = "https://w3id.org/guideline-kg/test/o#"


@pytest.fixture(scope="module")
def setup():
    tbox = Graph().parse(data=TBOX, format="turtle")
    store = EmbeddedStore.from_graph(Graph().parse(data=ABOX, format="turtle"))
    return Compiler(tbox), store


def members(setup, cls: str) -> set[str]:
    compiler, store = setup
    out = set()
    for pattern in compiler.compile(__import__("rdflib").URIRef(NS + cls), "?p"):
        out |= {str(r[0]).rsplit("#", 1)[-1] for r in store.select(f"SELECT ?p WHERE {{ {pattern.where()} }}").rows}
    return out


@pytest.mark.parametrize("cls, expected", [
    ("Old", {"a"}),            # numeric facet; the string "seventy" is not a number and does not qualify
    ("Flagged", {"b"}),        # hasValue on a boolean
    ("RedOrBlue", {"a"}),      # someValuesFrom oneOf
    ("HasSuper", {"a"}),       # named filler matched through rdfs:subClassOf
    ("Either", {"a", "b"}),    # union becomes two alternatives
])
def test_members(setup, cls, expected) -> None:
    assert members(setup, cls) == expected


def test_union_compiles_to_one_alternative_per_branch(setup) -> None:
    compiler, _ = setup
    assert len(compiler.compile(__import__("rdflib").URIRef(NS + "Either"))) == 2


def test_complement_is_refused_because_open_world(setup) -> None:
    compiler, _ = setup
    with pytest.raises(UnsupportedExpression):
        compiler.compile(__import__("rdflib").URIRef(NS + "NotOld"))
