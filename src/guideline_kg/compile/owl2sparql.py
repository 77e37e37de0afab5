"""Compile OWL class expressions into SPARQL patterns, so a store can evaluate class membership.

The fast path's engine: each named class of the knowledge graph becomes one or more conjunctive SPARQL
patterns (its disjunctive normal form), whose solutions are the members and the facts that witness
membership. Supported: named classes (by definition or by asserted type with subclasses), intersectionOf,
unionOf, oneOf, someValuesFrom (object or data), hasValue. A data range may be a datatype, a datatype restriction
(numeric min/max facets), a named datatype (an ``rdfs:Datatype`` IRI defined by ``owl:equivalentClass``, as the
guideline's thresholds are), or an intersection, union or complement (``owl:datatypeComplementOf``) of data
ranges: a data range is closed (a value either is in it or is not), so its complement is decidable from one
value. A class complement, allValuesFrom and cardinality are refused with the class named, because they cannot
be decided from facts alone under the open-world assumption.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from rdflib import BNode, Graph, Literal, URIRef
from rdflib.collection import Collection
from rdflib.namespace import OWL, RDF, RDFS, XSD
from rdflib.term import Node

from guideline_kg.core.errors import GuidelineKGError

__all__ = ["Compiler", "Pattern", "UnsupportedExpression"]

_FACETS: dict[Node, str] = {
    XSD.minInclusive: ">=", XSD.maxInclusive: "<=", XSD.minExclusive: ">", XSD.maxExclusive: "<"}
#: The numeric datatypes whose value spaces OWL 2 distinguishes (xsd:double and xsd:float are disjoint from
#: xsd:decimal, which holds xsd:integer). pyoxigraph stores the derived integer types (xsd:int, xsd:byte, ...) as
#: xsd:integer, so these four are all the datatypes a numeric literal in the store has.
_NUMERIC = {XSD.decimal, XSD.integer, XSD.double, XSD.float}


def _in_value_space(datatype: URIRef, v: str) -> str:
    """A SPARQL test that the literal bound to ``v`` is in the OWL 2 value space of ``datatype`` (tests/
    test_owl2sparql_property.py compares with HermiT): an xsd:integer literal is an xsd:decimal, an integral
    xsd:decimal ("5.0") is an xsd:integer, an xsd:double is neither."""
    if datatype == XSD.decimal:
        return f"(isLiteral({v}) && DATATYPE({v}) IN (<{XSD.decimal}>, <{XSD.integer}>))"
    if datatype == XSD.integer:
        return (f"(isLiteral({v}) && (DATATYPE({v}) = <{XSD.integer}> || "
                f"(DATATYPE({v}) = <{XSD.decimal}> && ROUND({v}) = {v})))")
    if datatype == RDFS.Literal:
        return f"isLiteral({v})"
    return f"(isLiteral({v}) && DATATYPE({v}) = <{datatype}>)"


class UnsupportedExpression(GuidelineKGError):
    """A class expression the fast path cannot evaluate."""


@dataclass
class Pattern:
    """One conjunctive alternative: triple patterns (s, p, o as SPARQL terms) and filters/VALUES lines."""

    triples: list[tuple[str, str, str]] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    def __add__(self, other: Pattern) -> Pattern:
        return Pattern(self.triples + other.triples, self.extra + other.extra)

    def where(self) -> str:
        """The group graph pattern body."""
        lines = [f"{s} {p} {o} ." for s, p, o in self.triples] + self.extra
        return "\n  ".join(lines)

    def variables(self) -> list[str]:
        seen: list[str] = []
        for t in self.triples:
            for x in t:
                if x.startswith("?") and x not in seen:
                    seen.append(x)
        return seen


def sparql_term(node: Node) -> str:
    """A term in SPARQL syntax."""
    if isinstance(node, URIRef):
        return f"<{node}>"
    if isinstance(node, Literal):
        return node.n3()
    raise UnsupportedExpression(f"cannot write {node!r} in SPARQL")


class Compiler:
    """Turns named classes of ``tbox`` into SPARQL patterns over case data (no TBox needed in the store)."""

    def __init__(self, tbox: Graph) -> None:
        self.tbox = tbox
        self._counter = itertools.count()
        self._subclasses: dict[URIRef, list[URIRef]] = {}

    def fresh(self, hint: str = "v") -> str:
        return f"?{hint}{next(self._counter)}"

    def subclasses(self, cls: URIRef) -> list[URIRef]:
        """``cls`` and every class asserted below it (rdfs:subClassOf*), sorted."""
        if cls not in self._subclasses:
            seen = {cls}
            todo = [cls]
            while todo:
                c = todo.pop()
                for s in self.tbox.subjects(RDFS.subClassOf, c):
                    if isinstance(s, URIRef) and s not in seen:
                        seen.add(s)
                        todo.append(s)
            self._subclasses[cls] = sorted(seen)
        return self._subclasses[cls]

    def _list(self, node: Node) -> list[Node]:
        return list(Collection(self.tbox, node))

    def compile(self, cls: URIRef, var: str = "?patient") -> list[Pattern]:
        """The alternatives whose solutions are the members of ``cls`` bound to ``var``."""
        return self._expr(cls, var, frozenset())

    def _expr(self, node: Node, var: str, stack: frozenset[Node]) -> list[Pattern]:
        if node == OWL.Thing:
            return [Pattern()]
        if isinstance(node, URIRef):
            definition = self.tbox.value(node, OWL.equivalentClass)
            if definition is not None and node not in stack:
                return self._expr(definition, var, stack | {node})
            classes = self.subclasses(node)
            if len(classes) == 1:  # a constant lets the engine start from the type index (10x on cohorts)
                return [Pattern([(var, f"<{RDF.type}>", f"<{classes[0]}>")])]
            t = self.fresh("type")
            values = " ".join(f"<{c}>" for c in classes)
            return [Pattern([(var, f"<{RDF.type}>", t)], [f"VALUES {t} {{ {values} }}"])]
        if not isinstance(node, BNode):
            raise UnsupportedExpression(f"unexpected class expression {node!r}")
        if (members := self.tbox.value(node, OWL.intersectionOf)) is not None:
            alternatives = [Pattern()]
            for m in self._list(members):
                alternatives = [a + b for a in alternatives for b in self._expr(m, var, stack)]
            return alternatives
        if (members := self.tbox.value(node, OWL.unionOf)) is not None:
            return [alt for m in self._list(members) for alt in self._expr(m, var, stack)]
        if (members := self.tbox.value(node, OWL.oneOf)) is not None:
            values = " ".join(sparql_term(m) for m in self._list(members))
            return [Pattern([], [f"VALUES {var} {{ {values} }}"])]
        prop = self.tbox.value(node, OWL.onProperty)
        if prop is not None:
            return self._restriction(node, URIRef(str(prop)), var, stack)
        raise UnsupportedExpression(
            f"the fast path cannot evaluate this class expression (only intersection, union, oneOf, "
            f"someValuesFrom and hasValue are supported): {sorted(str(p) for p in self.tbox.predicates(node))}")

    def _restriction(self, node: Node, prop: URIRef, var: str, stack: frozenset[Node]) -> list[Pattern]:
        p = f"<{prop}>"
        value = self.tbox.value(node, OWL.hasValue)
        if value is not None:
            if isinstance(value, Literal):
                v = self.fresh("val")
                test = f"{v} = {sparql_term(value)}"  # the same value: 5 and 5.0 are one xsd:decimal
                if value.datatype in _NUMERIC:  # ... but 5 and 5.0E0 are not (double is another value space)
                    family = XSD.decimal if value.datatype in (XSD.integer, XSD.decimal) else value.datatype
                    test = f"{_in_value_space(family, v)} && {test}"
                else:  # a string, boolean, ...: the same term (SPARQL's = would compare "a" with "a"^^xsd:string)
                    test = f"sameTerm({v}, {sparql_term(value)})"
                return [Pattern([(var, p, v)], [f"FILTER(COALESCE({test}, false))"])]
            return [Pattern([(var, p, sparql_term(value))])]
        filler = self.tbox.value(node, OWL.someValuesFrom)
        if filler is None:
            raise UnsupportedExpression(f"the fast path supports only someValuesFrom and hasValue "
                                        f"restrictions (on {prop})")
        v = self.fresh("o")
        head = Pattern([(var, p, v)])
        if self._is_datarange(filler):
            return [head + Pattern([], self._data_filters(filler, v))]
        return [head + alt for alt in self._expr(filler, v, stack)]

    def _is_datarange(self, node: Node) -> bool:
        if isinstance(node, URIRef):
            return (str(node).startswith(str(XSD)) or node == RDFS.Literal
                    or (node, RDF.type, RDFS.Datatype) in self.tbox)
        return (node, RDF.type, RDFS.Datatype) in self.tbox or any(
            self.tbox.value(node, p) is not None for p in (OWL.onDatatype, OWL.datatypeComplementOf))

    def _data_filters(self, node: Node, v: str) -> list[str]:
        return [f"FILTER(COALESCE({self._data_test(node, v, frozenset())}, false))"]

    def _data_test(self, node: Node, v: str, stack: frozenset[Node]) -> str:
        """A SPARQL boolean expression: the value bound to ``v`` is in the data range ``node``. Every part is
        wrapped in COALESCE(.., false), so that a comparison error (a value of another type) is a plain false
        and the negation of a complement stays exact."""
        if isinstance(node, URIRef):
            definition = self.tbox.value(node, OWL.equivalentClass)
            if definition is not None and not str(node).startswith(str(XSD)):
                if node in stack:
                    raise UnsupportedExpression(f"the named datatype {node} is defined in terms of itself")
                return self._data_test(definition, v, stack | {node})
            if (node, RDF.type, RDFS.Datatype) in self.tbox and not str(node).startswith(str(XSD)):
                raise UnsupportedExpression(f"the named datatype {node} has no definition (owl:equivalentClass)")
            return _in_value_space(node, v)
        if (members := self.tbox.value(node, OWL.intersectionOf)) is not None:
            parts = [self._data_test(m, v, stack) for m in self._list(members)]
            return "(" + " && ".join(parts or ["true"]) + ")"
        if (members := self.tbox.value(node, OWL.unionOf)) is not None:
            parts = [self._data_test(m, v, stack) for m in self._list(members)]
            return "(" + " || ".join(parts or ["false"]) + ")"
        if (inner := self.tbox.value(node, OWL.datatypeComplementOf)) is not None:
            return f"(isLiteral({v}) && !COALESCE({self._data_test(inner, v, stack)}, false))"  # literals only
        if (members := self.tbox.value(node, OWL.oneOf)) is not None:
            values = [m for m in self._list(members) if isinstance(m, Literal)]
            return "(" + " || ".join(f"COALESCE(sameTerm({v}, {sparql_term(m)}), false)" for m in values) + ")" \
                if values else "false"
        base = self.tbox.value(node, OWL.onDatatype)
        if not isinstance(base, URIRef):
            raise UnsupportedExpression(f"the fast path supports only datatype restrictions on a named datatype "
                                        f"(owl:onDatatype), not {sorted(str(p) for p in self.tbox.predicates(node))}")
        tests = [_in_value_space(base, v)]
        facets = self.tbox.value(node, OWL.withRestrictions)
        for facet_node in self._list(facets) if facets is not None else []:
            for facet, bound in self.tbox.predicate_objects(facet_node):
                if facet not in _FACETS or base not in _NUMERIC:
                    raise UnsupportedExpression(f"the fast path supports only min/max inclusive/exclusive facets "
                                                f"on numeric datatypes, not {facet} on {base}")
                tests.append(f"COALESCE({v} {_FACETS[facet]} {sparql_term(bound)}, false)")
        return "(" + " && ".join(tests) + ")"
