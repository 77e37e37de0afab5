"""Explanations computed from the structure of a condition and the facts of one case.

A condition is an OWL class expression (:mod:`owl2sparql` compiles the same expressions for the fast path). Its
status for a case is decided elsewhere (SPARQL or HermiT); this module says *why*, in labels and values:

- :meth:`Explainer.trace`: the facts of the case that satisfy an expression (with the threshold that decided a
  value), or ``None``;
- :meth:`Explainer.gaps`: what is absent for the expression to hold, as alternatives (disjunctive normal form),
  each a list of :class:`Gap` a clinician can answer: a fact to record, a recorded value to make more specific
  (physical therapy: was it active?), or a recorded value that would have to be different.

Nothing here names a clinical term: labels, thresholds and questions come from the graph (``rdfs:label``,
``skos:definition``, ``gk:question`` on a property).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from rdflib import BNode, Graph, Literal, URIRef
from rdflib.collection import Collection
from rdflib.namespace import OWL, RDF, RDFS, SKOS, XSD
from rdflib.term import Node

from guideline_kg.core.namespaces import GK, local_name

__all__ = ["Explainer", "Fact", "Facts", "Gap", "GraphFacts", "Threshold", "Trace", "questions"]

_FACET_SIGN = {XSD.minInclusive: "≥", XSD.maxInclusive: "≤", XSD.minExclusive: ">", XSD.maxExclusive: "<"}
_MAX_ALTERNATIVES = 8  # alternatives kept per expression (the smallest first); enough to answer, bounded to read


class Facts:
    """What the explainer reads of one case: each node's properties and values, loaded once per node and sorted
    (one explanation whatever order a store gives); subclasses say where they come from (:meth:`_load`). It also
    keeps what the explainer works out per case (node names, traces), so nothing is computed twice."""

    def __init__(self) -> None:
        self._edges: dict[Node, dict[Node, list[Node]]] = {}
        self._types: dict[Node, set[URIRef]] = {}
        self.names: dict[tuple[Node, Node | None], str] = {}
        self.traces: dict[tuple[int, Node, str], Trace | None] = {}

    def _load(self, node: Node) -> list[tuple[Node, Node]]:
        raise NotImplementedError

    def edges(self, node: Node) -> dict[Node, list[Node]]:
        found = self._edges.get(node)
        if found is None:
            found = {}
            for p, o in sorted(self._load(node), key=lambda e: (str(e[0]), str(e[1]))):
                found.setdefault(p, []).append(o)
            self._edges[node] = found
        return found

    def objects(self, node: Node, prop: Node) -> list[Node]:
        return self.edges(node).get(prop, [])

    def types(self, node: Node) -> set[URIRef]:
        found = self._types.get(node)
        if found is None:
            found = self._types[node] = {t for t in self.edges(node).get(RDF.type, []) if isinstance(t, URIRef)}
        return found


class GraphFacts(Facts):
    """:class:`Facts` over an rdflib graph (one case)."""

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        self.graph = graph

    def _load(self, node: Node) -> list[tuple[Node, Node]]:
        return list(self.graph.predicate_objects(node))


@dataclass(frozen=True)
class Threshold:
    """An interpretation threshold that decided a value: the named data range, its label and bound."""

    name: str
    label: str
    value: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "label": self.label, "value": self.value, "defined_in": self.name}


@dataclass(frozen=True)
class Fact:
    """One readable fact of a trace: ``subject: property value``, with the threshold it met, if any."""

    subject: str
    prop: str
    value: str
    threshold: Threshold | None = None

    def text(self) -> str:
        where = f"{self.subject}: " if self.subject else ""
        bound = f" ({self.threshold.value}: {self.threshold.label})" if self.threshold else ""
        verb = f"{self.prop} " if self.prop == "is a" else f"{self.prop}: "
        return f"{where}{verb}{self.value}{bound}"


@dataclass
class Trace:
    """The facts that satisfy an expression for one node, and the case nodes they are about."""

    facts: list[Fact] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)

    def __add__(self, other: Trace) -> Trace:
        return Trace(self.facts + [f for f in other.facts if f not in self.facts],
                     self.nodes + [n for n in other.nodes if n not in self.nodes])

    @property
    def thresholds(self) -> list[Threshold]:
        return list(dict.fromkeys(f.threshold for f in self.facts if f.threshold is not None))

    def texts(self) -> list[str]:
        """The facts in words, one text per case node: ``treatment episode (active physical therapy, no adequate
        response)``, ``pain duration in months: 9 (≥ 3: chronic pain duration)``; what a node's name already
        says is not repeated."""
        groups: dict[str, list[Fact]] = {}
        for f in self.facts:
            groups.setdefault(f.subject, []).append(f)
        out = []
        for subject, group in groups.items():
            kept = [f for f in group if f.prop != "is a" and not (subject and f.value in subject)]
            if not subject:
                out += [f.text() for f in kept]
            elif not kept:
                out.append(subject)
            else:
                out.append(f"{subject}: " + ", ".join(Fact("", f.prop, f.value, f.threshold).text() for f in kept))
        return out


@dataclass(frozen=True)
class Gap:
    """One fact that is absent (``record``), too general (``refine``) or recorded otherwise (``change``)."""

    kind: str  # record | refine | change
    question: str
    about: str = ""  # the case node it concerns ("" for the patient)

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "question": self.question}


Alternatives = list[list[Gap]]  # any one inner list, all of its gaps closed, would satisfy the expression


# --------------------------------------------------------------------------- expressions

@dataclass(frozen=True)
class _Named:
    iri: URIRef
    definition: Any  # an expression, or None for a class known by asserted types


@dataclass(frozen=True)
class _And:
    parts: tuple


@dataclass(frozen=True)
class _Or:
    parts: tuple


@dataclass(frozen=True)
class _Some:
    prop: URIRef
    filler: Any


@dataclass(frozen=True)
class _Value:
    prop: URIRef
    value: Node


@dataclass(frozen=True)
class _OneOf:
    members: tuple


@dataclass(frozen=True)
class _Data:
    """A data range: a base datatype, facets, a named range, a complement, or an intersection/union."""

    kind: str  # datatype | facets | named | not | and | or
    datatype: URIRef | None = None
    facets: tuple = ()
    parts: tuple = ()
    name: URIRef | None = None


@dataclass(frozen=True)
class _Opaque:
    node: Node


class Explainer:
    """Explains conditions of one knowledge graph; prepared once, used for many cases."""

    def __init__(self, knowledge: Graph) -> None:
        self.kg = knowledge
        self._expr: dict[Node, Any] = {}
        self._labels: dict[Node, str] = {}
        for s, o in knowledge.subject_objects(RDFS.label):
            self._labels.setdefault(s, str(o))
        for s, o in knowledge.subject_objects(SKOS.prefLabel):
            self._labels[s] = str(o)
        self._questions = {s: str(o) for s, o in knowledge.subject_objects(GK.question)}
        self._data_props = set(knowledge.subjects(RDF.type, OWL.DatatypeProperty))
        self._boolean = {p for p in self._data_props if (p, RDFS.range, XSD.boolean) in knowledge}
        self._functional = set(knowledge.subjects(RDF.type, OWL.FunctionalProperty))
        #: values that say a fact is not known yet (gk:meansNotKnown): asked for like an absent fact
        self._not_known = {s for s, o in knowledge.subject_objects(GK.meansNotKnown)
                           if isinstance(o, Literal) and o.toPython() is True}
        self._super: dict[Node, set[Node]] = {}
        #: object properties whose labelled values name a case node in words (its care action, its status)
        self._describing = {p for p in knowledge.subjects(RDF.type, OWL.ObjectProperty) if isinstance(p, URIRef)}

    # ---- reading ---------------------------------------------------------------------------------
    def label(self, node: Node | None) -> str:
        if node is None:
            return "?"
        if isinstance(node, Literal):
            value = node.toPython()
            if isinstance(value, bool):
                return "yes" if value else "no"
            if isinstance(value, Decimal | float) and value == int(value):
                return str(int(value))
            return str(node)
        text = self._labels.get(node)
        if text is not None:
            return text
        return local_name(node)

    def expression(self, node: Node) -> Any:
        """The parsed class expression of ``node`` (memoised)."""
        found = self._expr.get(node)
        if found is None:
            found = self._expr[node] = self._parse(node)
        return found

    def _list(self, head: Node) -> list[Node]:
        return list(Collection(self.kg, head))

    def _parse(self, node: Node) -> Any:
        kg = self.kg
        if isinstance(node, URIRef):
            definition = kg.value(node, OWL.equivalentClass)
            return _Named(node, self._parse(definition) if definition is not None else None)
        if (members := kg.value(node, OWL.intersectionOf)) is not None:
            return _And(tuple(self._parse(m) for m in self._list(members)))
        if (members := kg.value(node, OWL.unionOf)) is not None:
            return _Or(tuple(self._parse(m) for m in self._list(members)))
        if (members := kg.value(node, OWL.oneOf)) is not None:
            return _OneOf(tuple(self._list(members)))
        prop = kg.value(node, OWL.onProperty)
        if isinstance(prop, URIRef):
            if (value := kg.value(node, OWL.hasValue)) is not None:
                return _Value(prop, value)
            if (filler := kg.value(node, OWL.someValuesFrom)) is not None:
                if prop in self._data_props:
                    return _Some(prop, self._data(filler))
                return _Some(prop, self._parse(filler))
        return _Opaque(node)

    def _data(self, node: Node) -> _Data:
        kg = self.kg
        if isinstance(node, URIRef):
            definition = kg.value(node, OWL.equivalentClass)
            if definition is None:
                return _Data("datatype", datatype=node)
            return _Data("named", name=node, parts=(self._data(definition),))
        if (base := kg.value(node, OWL.onDatatype)) is not None:
            facets = []
            for f in self._list(kg.value(node, OWL.withRestrictions) or RDF.nil):
                for p, o in kg.predicate_objects(f):
                    if p in _FACET_SIGN:
                        facets.append((p, o))
            return _Data("facets", datatype=base if isinstance(base, URIRef) else None, facets=tuple(facets))
        if (other := kg.value(node, OWL.datatypeComplementOf)) is not None:
            return _Data("not", parts=(self._data(other),))
        if (members := kg.value(node, OWL.intersectionOf)) is not None:
            return _Data("and", parts=tuple(self._data(m) for m in self._list(members)))
        if (members := kg.value(node, OWL.unionOf)) is not None:
            return _Data("or", parts=tuple(self._data(m) for m in self._list(members)))
        return _Data("datatype", datatype=RDFS.Literal)

    def _supers(self, cls: Node) -> set[Node]:
        """``cls`` and its named superclasses (rdfs:subClassOf*), and for individuals their skos:broader*."""
        found = self._super.get(cls)
        if found is None:
            found, todo = {cls}, [cls]
            while todo:
                c = todo.pop()
                for s in [*self.kg.objects(c, RDFS.subClassOf), *self.kg.objects(c, SKOS.broader)]:
                    if isinstance(s, URIRef) and s not in found:
                        found.add(s)
                        todo.append(s)
            self._super[cls] = found
        return found

    # ---- data ranges -------------------------------------------------------------------------------
    def _in_range(self, rng: _Data, value: Node) -> bool:
        if not isinstance(value, Literal):
            return False
        if rng.kind == "named":
            return self._in_range(rng.parts[0], value)
        if rng.kind == "not":
            return not self._in_range(rng.parts[0], value)
        if rng.kind == "and":
            return all(self._in_range(p, value) for p in rng.parts)
        if rng.kind == "or":
            return any(self._in_range(p, value) for p in rng.parts)
        number = _number(value)
        if rng.kind == "facets":
            if number is None:
                return False
            for facet, bound in rng.facets:
                b = _number(bound)
                if b is None:
                    return False
                ok = {XSD.minInclusive: number >= b, XSD.maxInclusive: number <= b,
                      XSD.minExclusive: number > b, XSD.maxExclusive: number < b}[facet]
                if not ok:
                    return False
            return True
        if rng.datatype in (RDFS.Literal, None):
            return True
        if rng.datatype in (XSD.decimal, XSD.integer, XSD.double, XSD.float):
            return number is not None
        return value.datatype == rng.datatype

    def describe_range(self, rng: _Data) -> str:
        """A data range in words: ``≥ 3``, ``not ≥ 3``, or a datatype's label."""
        if rng.kind == "named":
            return self.describe_range(rng.parts[0])
        if rng.kind == "facets":
            return " and ".join(f"{_FACET_SIGN[f]} {self.label(b)}" for f, b in rng.facets) or self.label(rng.datatype)
        if rng.kind == "not":
            inner = rng.parts[0]
            named = inner.name if inner.kind == "named" else None
            text = self.describe_range(inner)
            flipped = _flip(text)
            return flipped if flipped else f"not {text}" + (f" ({self.label(named)})" if named else "")
        if rng.kind in ("and", "or"):
            parts = [self.describe_range(p) for p in rng.parts
                     if not (p.kind == "datatype" and p.datatype in (XSD.decimal, XSD.integer, RDFS.Literal))]
            return f" {rng.kind} ".join(parts) if parts else "a value"
        return f"a {self.label(rng.datatype)}"

    def _threshold(self, rng: _Data) -> Threshold | None:
        """The named data range (an interpretation threshold) inside ``rng``, if any."""
        if rng.kind == "named" and rng.name is not None:
            return Threshold(str(rng.name), self.label(rng.name), self.describe_range(rng))
        for part in rng.parts:
            found = self._threshold(part)
            if found is not None:
                return Threshold(found.name, found.label, self.describe_range(rng))
        return None

    # ---- describing nodes and expressions ------------------------------------------------------------
    def node_name(self, facts: Facts, node: Node, via: URIRef | None = None) -> str:
        """A case node in words: its most specific type's label and its deciding values, never its id."""
        key = (node, via)
        name = facts.names.get(key)
        if name is None:
            types = sorted(t for t in facts.types(node) if t != OWL.NamedIndividual)
            label = self.label(types[0]) if types else (self.label(via) if via is not None else "")
            details = [self.label(o) for p, values in facts.edges(node).items() if p in self._describing
                       for o in values if isinstance(o, URIRef) and o in self._labels]
            name = f"{label} ({', '.join(details)})" if details and label else (", ".join(details) or label)
            facts.names[key] = name
        return name

    def describe(self, expr: Any) -> str:
        """An expression as a noun phrase made of labels."""
        if isinstance(expr, _Named):
            if isinstance(expr.definition, _OneOf) and len(expr.definition.members) <= 3:
                return self.describe(expr.definition)  # a short list says more than the list's name
            if expr.iri in self._labels or expr.definition is None:
                return self.label(expr.iri)
            return self.describe(expr.definition)
        if isinstance(expr, _And):
            kinds = [p for p in expr.parts if not _is_anchor(p) and not isinstance(p, _Value)]
            values = [self.label(p.value) for p in expr.parts if isinstance(p, _Value)]
            head = " and ".join(self.describe(p) for p in kinds)
            if head and values:
                return f"{head} ({', '.join(values)})"
            return f"{values[0]} ({', '.join(values[1:])})" if len(values) > 1 else head or "".join(values)
        if isinstance(expr, _Or):
            return " or ".join(self.describe(p) for p in expr.parts if not _is_anchor(p))
        if isinstance(expr, _OneOf):
            return " or ".join(self.label(m) for m in expr.members)
        if isinstance(expr, _Value):
            return f"{self.label(expr.prop)}: {self.label(expr.value)}"
        if isinstance(expr, _Some):
            if isinstance(expr.filler, _Data):
                return f"{self.label(expr.prop)} {self.describe_range(expr.filler)}"
            if isinstance(expr.filler, _OneOf) or (isinstance(expr.filler, _Named) and expr.filler.iri in self._labels):
                return self.describe(expr.filler)  # the value's name says it ("second-line treatment")
            return f"{self.label(expr.prop)}: {self.describe(expr.filler)}"
        return self.label(getattr(expr, "node", None))

    def _ask(self, prop: URIRef, wanted: str) -> str:
        """The question for a property whose value is absent: ``gk:question`` on the property (``{}`` stands for
        what is wanted), else a generic one made of the property's label."""
        question = self._questions.get(prop)
        if question:
            return question.replace("{}", wanted) if "{}" in question else question
        if prop in self._boolean:
            return f"{self.label(prop)}: yes or no?"
        return f"What is the {self.label(prop)}?"

    # ---- traces --------------------------------------------------------------------------------------
    def trace(self, expr: Any, node: Node, facts: Facts, subject: str = "") -> Trace | None:
        """The facts of ``node`` that satisfy ``expr``, or None when the recorded facts do not (memoised per
        case: the conditions of a guideline share their parts)."""
        key = (id(expr), node, subject)
        if key in facts.traces:
            return facts.traces[key]
        found = self._trace(expr, node, facts, subject)
        facts.traces[key] = found
        return found

    def _trace(self, expr: Any, node: Node, facts: Facts, subject: str) -> Trace | None:
        if isinstance(expr, _Named):
            if expr.definition is not None:
                return self.trace(expr.definition, node, facts, subject)
            if any(expr.iri in self._supers(t) for t in facts.types(node)):
                return Trace([Fact(subject, "is a", self.label(expr.iri))] if subject else [], _nodes(node))
            return None
        if isinstance(expr, _And):
            total = Trace()
            for part in expr.parts:
                found = self.trace(part, node, facts, subject)
                if found is None:
                    return None
                total = total + found
            return total
        if isinstance(expr, _Or):
            for part in expr.parts:
                found = self.trace(part, node, facts, subject)
                if found is not None:
                    return found
            return None
        if isinstance(expr, _OneOf):
            return Trace() if node in expr.members else None
        if isinstance(expr, _Value):
            for o in facts.objects(node, expr.prop):
                if o == expr.value or (isinstance(o, Literal) and isinstance(expr.value, Literal)
                                       and o.toPython() == expr.value.toPython()):
                    return Trace([Fact(subject, self.label(expr.prop), self.label(o))], _nodes(node))
            return None
        if isinstance(expr, _Some):
            for o in facts.objects(node, expr.prop):
                if isinstance(expr.filler, _Data):
                    if self._in_range(expr.filler, o):
                        return Trace([Fact(subject, self.label(expr.prop), self.label(o),
                                           self._threshold(expr.filler))], _nodes(node))
                    continue
                if isinstance(expr.filler, _OneOf):
                    if o in expr.filler.members:
                        return Trace([Fact(subject, self.label(expr.prop), self.label(o))], _nodes(node))
                    continue
                inner = self.trace(expr.filler, o, facts, self.node_name(facts, o, expr.prop))
                if inner is not None:
                    return inner + Trace([], _nodes(node))
            return None
        return None

    # ---- gaps ----------------------------------------------------------------------------------------
    def gaps(self, expr: Any, node: Node, facts: Facts, subject: str = "") -> Alternatives:
        """What is absent for ``expr`` to hold for ``node``: alternatives, smallest first; [] when it already
        holds; [[Gap(change)...]] alternatives when only a different recorded value would make it hold."""
        if self.trace(expr, node, facts, subject) is not None:
            return []
        return _smallest(self._gaps(expr, node, facts, subject))

    def _gaps(self, expr: Any, node: Node, facts: Facts, subject: str) -> Alternatives:
        if isinstance(expr, _Named):
            if expr.definition is not None:
                return self._gaps(expr.definition, node, facts, subject)
            types = facts.types(node)
            if any(expr.iri in self._supers(t) for t in types):
                return [[]]
            general = [t for t in types if t in self._supers(expr.iri)]
            if general:
                q = f"Was the {self.label(general[0])} a {self.label(expr.iri)}?"
                return [[Gap("refine", q, subject)]]
            if types:
                as_recorded = " and ".join(sorted(self.label(t) for t in types))
                return [[Gap("change", f"{subject or as_recorded} is recorded as {as_recorded}, not as a "
                                       f"{self.label(expr.iri)}", subject)]]
            return [[Gap("record", f"Is {subject or 'it'} a {self.label(expr.iri)}?", subject)]]
        if isinstance(expr, _And):
            combined: Alternatives = [[]]
            for part in expr.parts:
                if self.trace(part, node, facts, subject) is not None:
                    continue
                options = self._gaps(part, node, facts, subject)
                combined = _smallest([a + [g for g in b if g not in a] for a in combined for b in options])
            return combined
        if isinstance(expr, _Or):
            out: Alternatives = []
            for part in expr.parts:
                out += self._gaps(part, node, facts, subject)
            return _smallest(out)
        if isinstance(expr, _OneOf):
            narrower = [m for m in expr.members if node in self._supers(m)]
            if narrower:  # the recorded value is more general than the wanted ones: ask which it was
                return [[Gap("refine", f"Was the {self.label(node)} "
                                       f"{' or '.join(self.label(m) for m in narrower)}?", subject)]]
            return [[Gap("change", f"{self.label(node)} is not {self.describe(expr)}", subject)]]
        if isinstance(expr, _Value):
            recorded = [o for o in facts.objects(node, expr.prop) if o not in self._not_known]
            wanted = self.label(expr.value)
            where = f" ({subject})" if subject else ""
            if not recorded:
                if expr.prop in self._boolean:
                    return [[Gap("record", f"{self._ask(expr.prop, wanted)}{where} ({wanted} decides it)", subject)]]
                return [[Gap("record", self._ask(expr.prop, wanted) + where, subject)]]
            for o in recorded:
                if o in self._supers(expr.value):  # the recorded value is more general than the one wanted
                    return [[Gap("refine", f"Was the {self.label(o)} {wanted}?", subject)]]
            if expr.prop not in self._functional:  # another value may be added beside the recorded one
                return [[Gap("record", self._ask(expr.prop, wanted) if expr.prop in self._questions
                             else f"{self.label(expr.prop)}{where}: {wanted}?", subject)]]
            return [[Gap("change", f"{self.label(expr.prop)}{where} is {self.label(recorded[0])}, "
                                   f"not {wanted}", subject)]]
        if isinstance(expr, _Some):
            recorded = facts.objects(node, expr.prop)
            if isinstance(expr.filler, _Data):
                wanted = self.describe_range(expr.filler)
                threshold = self._threshold(expr.filler)
                bound = f" ({threshold.label})" if threshold else ""
                if not recorded or expr.prop not in self._functional:
                    question = self._ask(expr.prop, wanted)
                    named = f": {threshold.label}" if threshold else ""
                    return [[Gap("record", f"{question} ({wanted} decides it{named})", subject)]]
                return [[Gap("change", f"{self.label(expr.prop)} is {self.label(recorded[0])}"
                                       f", not {wanted}{bound}", subject)]]
            if isinstance(expr.filler, _OneOf):
                if not recorded or expr.prop not in self._functional:
                    return [[Gap("record", self._ask(expr.prop, self.describe(expr.filler)), subject)]]
                for o in recorded:
                    narrower = [m for m in expr.filler.members if o in self._supers(m)]
                    if narrower:
                        return [[Gap("refine", f"Was the {self.label(o)} "
                                               f"{' or '.join(self.label(m) for m in narrower)}?", subject)]]
                if expr.prop not in self._functional:
                    return [[Gap("record", self._ask(expr.prop, self.describe(expr.filler)), subject)]]
                return [[Gap("change", f"{self.label(expr.prop)} is {self.label(recorded[0])}, not "
                                       f"{self.describe(expr.filler)}", subject)]]
            options = []
            for o in recorded:  # an existing value that could still satisfy the filler: ask about it
                options += [alt for alt in self._gaps(expr.filler, o, facts, self.node_name(facts, o, expr.prop))
                            if alt]
            answerable = [alt for alt in options if all(g.kind != "change" for g in alt)]
            if answerable:
                return _smallest(answerable)
            new = [[Gap("record", self._ask(expr.prop, self.describe(expr.filler)), subject)]]
            if recorded and expr.prop in self._functional:  # the one value there is would have to differ
                return _smallest(options) or new
            return new
        return [[Gap("record", self.describe(expr), subject)]]


def _nodes(node: Node) -> list[str]:
    return [str(node)] if isinstance(node, URIRef | BNode) else []


def _number(value: Node) -> Decimal | None:
    if not isinstance(value, Literal):
        return None
    if value.datatype not in (XSD.decimal, XSD.integer, XSD.double, XSD.float, XSD.int, XSD.long,
                              XSD.nonNegativeInteger, XSD.positiveInteger):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _flip(text: str) -> str | None:
    """The complement of a one-facet range in words (``≥ 3`` -> ``< 3``)."""
    flips = {"≥": "<", "≤": ">", ">": "≤", "<": "≥"}
    sign, _, rest = text.partition(" ")
    if sign in flips and rest and " and " not in rest and "(" not in rest:
        return f"{flips[sign]} {rest}"
    return None


def _is_anchor(expr: Any) -> bool:
    """A bare named class with no definition and no label of interest (gk:Patient in an intersection)."""
    return isinstance(expr, _Named) and expr.definition is None and str(expr.iri) == str(GK.Patient)


def _smallest(alternatives: Iterable[list[Gap]]) -> Alternatives:
    """Alternatives without duplicates or supersets, smallest first, at most a handful."""
    unique: list[list[Gap]] = []
    for alt in sorted(alternatives, key=len):
        if any(set(other) <= set(alt) for other in unique):
            continue
        unique.append(alt)
    return unique[:_MAX_ALTERNATIVES]


def questions(alternatives: Alternatives, join: Callable[[list[str]], str] = "; ".join) -> list[str]:
    """Alternatives as lines: one line per alternative, its gaps joined."""
    return [join([g.question for g in alt]) for alt in alternatives if alt]
