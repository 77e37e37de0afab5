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


# ---- regressions found by tests/test_owl2sparql_property.py (HermiT's answers; OWL 2 value spaces) -----------
NUMBERS_TBOX = """
@prefix : <https://w3id.org/guideline-kg/test/o#> .
@prefix owl: <http://www.w3.org/2002/07/owl#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .
:SomeDecimal owl:equivalentClass [ a owl:Restriction ; owl:onProperty :d ; owl:someValuesFrom xsd:decimal ] .
:SomeInteger owl:equivalentClass [ a owl:Restriction ; owl:onProperty :d ; owl:someValuesFrom xsd:integer ] .
:SomeDouble owl:equivalentClass [ a owl:Restriction ; owl:onProperty :d ; owl:someValuesFrom xsd:double ] .
:IntegerAtLeast5 owl:equivalentClass [ a owl:Restriction ; owl:onProperty :d ; owl:someValuesFrom
    [ a rdfs:Datatype ; owl:onDatatype xsd:integer ; owl:withRestrictions ( [ xsd:minInclusive 5 ] ) ] ] .
:DecimalAtLeast5 owl:equivalentClass [ a owl:Restriction ; owl:onProperty :d ; owl:someValuesFrom
    [ a rdfs:Datatype ; owl:onDatatype xsd:decimal ; owl:withRestrictions ( [ xsd:minInclusive 5 ] ) ] ] .
:DoubleAtLeast5 owl:equivalentClass [ a owl:Restriction ; owl:onProperty :d ; owl:someValuesFrom
    [ a rdfs:Datatype ; owl:onDatatype xsd:double ; owl:withRestrictions ( [ xsd:minInclusive "5.0E0"^^xsd:double ] ) ] ] .
:Is5 owl:equivalentClass [ a owl:Restriction ; owl:onProperty :d ; owl:hasValue 5 ] .
:IsA owl:equivalentClass [ a owl:Restriction ; owl:onProperty :d ; owl:hasValue "a" ] .
:SomeString owl:equivalentClass [ a owl:Restriction ; owl:onProperty :d ; owl:someValuesFrom xsd:string ] .
:Pattern owl:equivalentClass [ a owl:Restriction ; owl:onProperty :d ; owl:someValuesFrom
    [ a rdfs:Datatype ; owl:onDatatype xsd:string ; owl:withRestrictions ( [ xsd:pattern "a.*" ] ) ] ] .
"""
NUMBERS_ABOX = """
@prefix : <https://w3id.org/guideline-kg/test/o#> .
@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .
:int3 :d 3 . :dec5 :d 5.0 . :dec6 :d 6.5 . :dbl7 :d "7.5E0"^^xsd:double . :dbl5 :d "5.0E0"^^xsd:double .
:en :d "a"@en . :plain :d "a" .
"""


@pytest.fixture(scope="module")
def numbers():
    tbox = Graph().parse(data=NUMBERS_TBOX, format="turtle")
    store = EmbeddedStore.from_graph(Graph().parse(data=NUMBERS_ABOX, format="turtle"))
    return Compiler(tbox), store


@pytest.mark.parametrize("cls, expected", [
    ("SomeDecimal", {"int3", "dec5", "dec6"}),       # an xsd:integer is an xsd:decimal; was: decimals only
    ("SomeInteger", {"int3", "dec5"}),               # 5.0 is the integer 5; was: xsd:integer literals only
    ("SomeDouble", {"dbl7", "dbl5"}),                # xsd:double is its own value space
    ("IntegerAtLeast5", {"dec5"}),                   # was: every number >= 5 (6.5 and the doubles too)
    ("DecimalAtLeast5", {"dec5", "dec6"}),           # was: the doubles too
    ("DoubleAtLeast5", {"dbl7", "dbl5"}),            # was: the decimals too
    ("Is5", {"dec5"}),                               # 5 = 5.0 but not 5.0E0; was: dbl5 too
    ("IsA", {"plain"}),                              # "a"@en is another value
    ("SomeString", {"plain"}),                       # "a"@en is not an xsd:string
])
def test_numeric_value_spaces_follow_owl2(numbers, cls, expected) -> None:
    assert members(numbers, cls) == expected


def test_a_facet_the_fast_path_cannot_evaluate_is_refused(numbers) -> None:
    compiler, _ = numbers
    with pytest.raises(UnsupportedExpression, match="pattern"):
        compiler.compile(__import__("rdflib").URIRef(NS + "Pattern"))


# ---- named datatypes (the guideline's thresholds) and their complements ------------------------------------------
NAMED_TBOX = """
@prefix : <https://w3id.org/guideline-kg/test/o#> .
@prefix owl: <http://www.w3.org/2002/07/owl#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .
:AtLeast3 a rdfs:Datatype ; owl:equivalentClass
    [ a rdfs:Datatype ; owl:onDatatype xsd:decimal ; owl:withRestrictions ( [ xsd:minInclusive 3.0 ] ) ] .
:Below3 a rdfs:Datatype ; owl:equivalentClass
    [ a rdfs:Datatype ; owl:intersectionOf ( xsd:decimal [ a rdfs:Datatype ; owl:datatypeComplementOf :AtLeast3 ] ) ] .
:AnythingBut3Up a rdfs:Datatype ; owl:equivalentClass [ a rdfs:Datatype ; owl:datatypeComplementOf :AtLeast3 ] .
:Outside a rdfs:Datatype ; owl:equivalentClass [ a rdfs:Datatype ; owl:unionOf (
    [ a rdfs:Datatype ; owl:onDatatype xsd:decimal ; owl:withRestrictions ( [ xsd:maxExclusive 1 ] ) ] :AtLeast3 ) ] .
:Loop a rdfs:Datatype ; owl:equivalentClass [ a rdfs:Datatype ; owl:datatypeComplementOf :Loop ] .
:Undefined a rdfs:Datatype .
:Chronic owl:equivalentClass [ a owl:Restriction ; owl:onProperty :d ; owl:someValuesFrom :AtLeast3 ] .
:NotChronic owl:equivalentClass [ a owl:Restriction ; owl:onProperty :d ; owl:someValuesFrom :Below3 ] .
:InlineComplement owl:equivalentClass [ a owl:Restriction ; owl:onProperty :d ; owl:someValuesFrom
    [ a rdfs:Datatype ; owl:intersectionOf ( xsd:decimal [ a rdfs:Datatype ; owl:datatypeComplementOf :AtLeast3 ] ) ] ] .
:NotAtLeast3 owl:equivalentClass [ a owl:Restriction ; owl:onProperty :d ; owl:someValuesFrom :AnythingBut3Up ] .
:OutsideRange owl:equivalentClass [ a owl:Restriction ; owl:onProperty :d ; owl:someValuesFrom :Outside ] .
:Looping owl:equivalentClass [ a owl:Restriction ; owl:onProperty :d ; owl:someValuesFrom :Loop ] .
:UsesUndefined owl:equivalentClass [ a owl:Restriction ; owl:onProperty :d ; owl:someValuesFrom :Undefined ] .
"""
NAMED_ABOX = """
@prefix : <https://w3id.org/guideline-kg/test/o#> .
@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .
:m0 :d 0.5 . :m2 :d 2 . :m3 :d 3 . :m12 :d 12.0 . :dbl :d "2.0E0"^^xsd:double . :txt :d "two" . :iri :d :x .
"""


@pytest.fixture(scope="module")
def named():
    tbox = Graph().parse(data=NAMED_TBOX, format="turtle")
    store = EmbeddedStore.from_graph(Graph().parse(data=NAMED_ABOX, format="turtle"))
    return Compiler(tbox), store


@pytest.mark.parametrize("cls, expected", [
    ("Chronic", {"m3", "m12"}),                      # the named datatype is read through its definition
    ("NotChronic", {"m0", "m2"}),                    # decimal and not >= 3: the double and the text are neither
    ("InlineComplement", {"m0", "m2"}),              # the same range written in place
    ("NotAtLeast3", {"m0", "m2", "dbl", "txt"}),     # a bare complement holds every other literal (OWL 2)
    ("OutsideRange", {"m0", "m3", "m12"}),           # a union of a facet restriction and a named datatype
])
def test_named_datatypes_and_complements(named, cls, expected) -> None:
    assert members(named, cls) == expected


def test_a_datatype_and_its_complement_partition_the_decimals(named) -> None:
    assert members(named, "Chronic") & members(named, "NotChronic") == set()
    assert members(named, "Chronic") | members(named, "NotChronic") == {"m0", "m2", "m3", "m12"}


@pytest.mark.parametrize("cls, match", [("Looping", "itself"), ("UsesUndefined", "no definition")])
def test_a_named_datatype_without_a_usable_definition_is_refused(named, cls, match) -> None:
    compiler, _ = named
    with pytest.raises(UnsupportedExpression, match=match):
        compiler.compile(__import__("rdflib").URIRef(NS + cls))
