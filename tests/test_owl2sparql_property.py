"""Property-based: the fast path (OWL class expressions compiled to SPARQL, run on pyoxigraph) gives exactly the
members HermiT gives, for random class expressions of the supported fragment over random case data.

Hypothesis draws a small ontology: primitive classes (some below others), object and data properties, and a batch
of named classes, each defined (owl:equivalentClass) by a random expression of what :mod:`owl2sparql` supports:
named classes, owl:Thing, intersectionOf, unionOf, oneOf, someValuesFrom (a class or a data range: a named
datatype or a numeric datatype with min/max inclusive/exclusive facets) and hasValue (an individual or a literal).
It draws case data too: individuals with primitive types, property assertions between them, and literals of
xsd:integer, xsd:decimal, xsd:double, xsd:string and xsd:boolean. One HermiT run classifies every individual
against the whole batch (HermiT costs about a second a run); the compiled patterns run on a pyoxigraph store of the
same data. Every class must have the same members both ways.

Deterministic: ``derandomize=True`` and no example database, so CI runs the same examples every time. Failing
examples that were found are kept as explicit tests in tests/test_owl2sparql.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyoxigraph as ox
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.collection import Collection
from rdflib.namespace import OWL, RDF, RDFS, XSD
from rdflib.term import Node

from guideline_kg.compile.owl2sparql import Compiler
from guideline_kg.reasoning.hermit import classify

pytestmark = [pytest.mark.hermit, pytest.mark.slow]

NS = "https://w3id.org/guideline-kg/test/prop#"
#: Every individual is asserted in this primitive class and every defined class is an intersection with it, so no
#: defined class is equivalent to owl:Thing (owlready2 does not list such a class among an individual's types).
CASE = URIRef(f"{NS}Case")
PRIMITIVES = [URIRef(f"{NS}A{i}") for i in range(4)]
OBJECT_PROPS = [URIRef(f"{NS}r{i}") for i in range(2)]
DATA_PROPS = [URIRef(f"{NS}d{i}") for i in range(2)]
INDIVIDUALS = [URIRef(f"{NS}i{i}") for i in range(6)]
#: The literals the data may hold: numbers of the numeric value spaces (OWL 2 keeps xsd:double apart from
#: xsd:decimal, which holds xsd:integer), strings with and without a language, booleans. No integral decimal such
#: as "5.0"^^xsd:decimal: owlready2 hands it to HermiT in a form HermiT also counts as an xsd:double (a quirk of
#: the reference, not of OWL; the compiled path counts it as an integer and a decimal only, as OWL 2 says).
LITERALS = [Literal(n, datatype=XSD.integer) for n in ("-1", "0", "3", "5", "7")] + \
    [Literal(n, datatype=XSD.decimal) for n in ("2.5", "6.5")] + \
    [Literal(n, datatype=XSD.double) for n in ("5.0E0", "7.5E0")] + \
    [Literal("a"), Literal("b"), Literal("a", lang="en"), Literal(True), Literal(False)]
NUMERIC_BASES = [XSD.integer, XSD.decimal, XSD.double]
NAMED_DATATYPES = [XSD.integer, XSD.decimal, XSD.double, XSD.string, XSD.boolean, RDFS.Literal]
FACETS = [XSD.minInclusive, XSD.maxInclusive, XSD.minExclusive, XSD.maxExclusive]


# ---- class expressions as small trees, written to RDF ---------------------------------------------------------
@dataclass(frozen=True)
class Expr:
    kind: str
    args: tuple = ()


def _bound(base: URIRef, n: int) -> Literal:
    return Literal(f"{n}.0E0" if base == XSD.double else (f"{n}.5" if base == XSD.decimal and n % 2 else str(n)),
                   datatype=base)


data_ranges = st.one_of(
    st.builds(lambda d: Expr("datatype", (d,)), st.sampled_from(NAMED_DATATYPES)),
    st.builds(lambda b, fs: Expr("facets", (b, tuple(fs))), st.sampled_from(NUMERIC_BASES),
              st.lists(st.tuples(st.sampled_from(FACETS), st.integers(-1, 8)), min_size=1, max_size=2)),
)
leaves = st.one_of(
    st.builds(lambda c: Expr("named", (c,)), st.sampled_from(PRIMITIVES)),
    st.just(Expr("thing")),
    st.builds(lambda p, i: Expr("hasValue", (p, i)), st.sampled_from(OBJECT_PROPS), st.sampled_from(INDIVIDUALS)),
    st.builds(lambda p, v: Expr("hasValue", (p, v)), st.sampled_from(DATA_PROPS), st.sampled_from(LITERALS)),
    st.builds(lambda p, r: Expr("someData", (p, r)), st.sampled_from(DATA_PROPS), data_ranges),
    st.builds(lambda xs: Expr("oneOf", tuple(xs)), st.lists(st.sampled_from(INDIVIDUALS), min_size=1, max_size=3,
                                                            unique=True)),
)
expressions = st.recursive(leaves, lambda inner: st.one_of(
    st.builds(lambda xs: Expr("and", tuple(xs)), st.lists(inner, min_size=2, max_size=3)),
    st.builds(lambda xs: Expr("or", tuple(xs)), st.lists(inner, min_size=2, max_size=3)),
    st.builds(lambda p, c: Expr("some", (p, c)), st.sampled_from(OBJECT_PROPS), inner),
), max_leaves=6)


def write(g: Graph, e: Expr) -> Node:
    """The class expression ``e`` as RDF in ``g``; its node."""
    if e.kind == "named":
        return e.args[0]
    if e.kind == "thing":
        return OWL.Thing
    node = BNode()
    if e.kind in ("and", "or"):
        g.add((node, RDF.type, OWL.Class))
        items = BNode()
        Collection(g, items, [write(g, x) for x in e.args])
        g.add((node, OWL.intersectionOf if e.kind == "and" else OWL.unionOf, items))
    elif e.kind == "oneOf":
        g.add((node, RDF.type, OWL.Class))
        items = BNode()
        Collection(g, items, list(e.args))
        g.add((node, OWL.oneOf, items))
    elif e.kind in ("hasValue", "some", "someData"):
        g.add((node, RDF.type, OWL.Restriction))
        g.add((node, OWL.onProperty, e.args[0]))
        if e.kind == "hasValue":
            g.add((node, OWL.hasValue, e.args[1]))
        else:
            g.add((node, OWL.someValuesFrom, write(g, e.args[1])))
    elif e.kind == "datatype":
        return e.args[0]
    elif e.kind == "facets":
        base, facets = e.args
        g.add((node, RDF.type, RDFS.Datatype))
        g.add((node, OWL.onDatatype, base))
        restrictions = []
        for facet, n in facets:
            r = BNode()
            g.add((r, facet, _bound(base, n)))
            restrictions.append(r)
        items = BNode()
        Collection(g, items, restrictions)
        g.add((node, OWL.withRestrictions, items))
    return node


def declarations() -> Graph:
    g = Graph()
    for c in [*PRIMITIVES, CASE]:
        g.add((c, RDF.type, OWL.Class))
    g.add((PRIMITIVES[1], RDFS.subClassOf, PRIMITIVES[0]))  # a small hierarchy: A1 and A2 below A0
    g.add((PRIMITIVES[2], RDFS.subClassOf, PRIMITIVES[0]))
    for p in OBJECT_PROPS:
        g.add((p, RDF.type, OWL.ObjectProperty))
    for p in DATA_PROPS:
        g.add((p, RDF.type, OWL.DatatypeProperty))
    return g


#: Dense data (a minimum size for each list): Hypothesis starts from small examples, and an empty case base
#: agrees with anything. Each individual gets a value of each data property, drawn from the whole pool.
case_data = st.tuples(
    st.lists(st.tuples(st.sampled_from(INDIVIDUALS), st.sampled_from(PRIMITIVES)), min_size=4, max_size=10),
    st.lists(st.tuples(st.sampled_from(INDIVIDUALS), st.sampled_from(OBJECT_PROPS), st.sampled_from(INDIVIDUALS)),
             min_size=4, max_size=10),
    st.lists(st.tuples(st.sampled_from(LITERALS), st.sampled_from(LITERALS)), min_size=len(INDIVIDUALS),
             max_size=len(INDIVIDUALS)),
)


def abox(data: tuple) -> Graph:
    types, links, values = data
    g = Graph()
    for i, (v0, v1) in zip(INDIVIDUALS, values, strict=True):
        g.add((i, RDF.type, OWL.NamedIndividual))
        g.add((i, RDF.type, CASE))
        g.add((i, DATA_PROPS[0], v0))
        g.add((i, DATA_PROPS[1], v1))
    for i, c in types:
        g.add((i, RDF.type, c))
    for s, p, o in links:
        g.add((s, p, o))
    return g


def fast_members(tbox: Graph, data: Graph, cls: URIRef) -> set[str]:
    store = ox.Store()
    store.bulk_load(data.serialize(format="nt", encoding="utf-8"), format=ox.RdfFormat.N_TRIPLES)
    individuals = " ".join(f"<{i}>" for i in INDIVIDUALS)
    out: set[str] = set()
    for pattern in Compiler(tbox).compile(cls, "?x"):
        q = f"SELECT DISTINCT ?x WHERE {{ VALUES ?x {{ {individuals} }}\n  {pattern.where()} }}"
        out |= {s["x"].value for s in store.query(q)}
    return out


def agree(exprs: list[Expr], data: tuple) -> None:
    """HermiT and the compiled fast path give the same members for every defined class of the batch."""
    tbox = declarations()
    defined = []
    for k, e in enumerate(exprs):
        q = URIRef(f"{NS}Q{k}")
        tbox.add((q, RDF.type, OWL.Class))
        tbox.add((q, OWL.equivalentClass, write(tbox, Expr("and", (Expr("named", (CASE,)), e)))))
        defined.append(q)
    facts = abox(data)
    hermit = classify(tbox + facts, INDIVIDUALS)
    assert hermit.consistent
    for q, e in zip(defined, exprs, strict=True):
        reference = {i for i, types in hermit.types.items() if str(q) in types}
        assert fast_members(tbox, facts, q) == reference, (e, sorted(facts))


#: Each example is one HermiT run (1 to 3 s) over a batch of 8 class expressions; no shrinking (each shrink step
#: is a HermiT run too): a failing batch is printed whole, and its culprit goes to tests/test_owl2sparql.py.
@settings(max_examples=15, derandomize=True, database=None, deadline=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(expressions, min_size=8, max_size=8), case_data)
def test_fast_path_equals_hermit(exprs: list[Expr], data: tuple) -> None:
    agree(exprs, data)
