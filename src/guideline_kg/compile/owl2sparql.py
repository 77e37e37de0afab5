"""Compile OWL class expressions into SPARQL patterns, so a store can evaluate class membership.

The fast path's engine: each named class of the knowledge graph becomes one or more conjunctive SPARQL
patterns (its disjunctive normal form), whose solutions are the members and the facts that witness
membership. Supported: named classes (by definition or by asserted type with subclasses), intersectionOf,
unionOf, oneOf, someValuesFrom (object or data, with datatype facets), hasValue. Anything else (complement,
allValuesFrom, cardinality) is refused with the class named, because it cannot be decided from facts alone
under the open-world assumption.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from rdflib import BNode, Graph, Literal, URIRef
from rdflib.collection import Collection
from rdflib.namespace import OWL, RDF, RDFS, XSD
from rdflib.term import Node

from guideline_kg.core.errors import GuidelineKGError

__all__ = ["Pattern", "Compiler", "UnsupportedExpression"]

_FACETS = {XSD.minInclusive: ">=", XSD.maxInclusive: "<=", XSD.minExclusive: ">", XSD.maxExclusive: "<"}


class UnsupportedExpression(GuidelineKGError):
    """A class expression the fast path cannot evaluate."""


@dataclass
class Pattern:
    """One conjunctive alternative: triple patterns (s, p, o as SPARQL terms) and filters/VALUES lines."""

    triples: list[tuple[str, str, str]] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    def __add__(self, other: "Pattern") -> "Pattern":
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
            return self._restriction(node, URIRef(prop), var, stack)
        raise UnsupportedExpression(
            f"the fast path cannot evaluate this class expression (only intersection, union, oneOf, "
            f"someValuesFrom and hasValue are supported): {sorted(str(p) for p in self.tbox.predicates(node))}")

    def _restriction(self, node: Node, prop: URIRef, var: str, stack: frozenset[Node]) -> list[Pattern]:
        p = f"<{prop}>"
        value = self.tbox.value(node, OWL.hasValue)
        if value is not None:
            if isinstance(value, Literal):
                v = self.fresh("val")
                return [Pattern([(var, p, v)], [f"FILTER({v} = {sparql_term(value)})"])]
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
            return str(node).startswith(str(XSD)) or node == RDFS.Literal
        return (node, RDF.type, RDFS.Datatype) in self.tbox or self.tbox.value(node, OWL.onDatatype) is not None

    def _data_filters(self, node: Node, v: str) -> list[str]:
        if isinstance(node, URIRef):
            return [] if node == RDFS.Literal else [f"FILTER(DATATYPE({v}) = <{node}>)"]
        base = self.tbox.value(node, OWL.onDatatype)
        filters = [f"FILTER(isNumeric({v}))"] if base in (XSD.decimal, XSD.integer, XSD.double, XSD.float) else []
        facets = self.tbox.value(node, OWL.withRestrictions)
        for facet_node in self._list(facets) if facets is not None else []:
            for facet, op in _FACETS.items():
                bound = self.tbox.value(facet_node, facet)
                if bound is not None:
                    filters.append(f"FILTER({v} {op} {sparql_term(bound)})")
        return filters
