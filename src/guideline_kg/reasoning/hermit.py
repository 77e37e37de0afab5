"""The reference reasoner: HermiT through owlready2 (consistency, unsatisfiable classes, classification)."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

from rdflib import BNode, Graph, Literal, URIRef
from rdflib.namespace import OWL, RDF, RDFS, XSD
from rdflib.term import Node

from guideline_kg.core.errors import GuidelineKGError

__all__ = [
    "OWL2_DATATYPES",
    "ReasonerResult",
    "ReasonerUnavailable",
    "check_consistency",
    "classify",
    "reasoner_input",
    "reasoning_module",
    "run_hermit",
]

#: The OWL 2 datatype map (OWL 2 Syntax, section 4); literals of other datatypes cannot be given to HermiT.
_OWL2_XSD_NAMES = [
    "decimal", "integer", "nonNegativeInteger", "nonPositiveInteger", "positiveInteger", "negativeInteger", "long",
    "int", "short", "byte", "unsignedLong", "unsignedInt", "unsignedShort", "unsignedByte", "double", "float",
    "string", "normalizedString", "token", "language", "Name", "NCName", "NMTOKEN", "boolean", "hexBinary",
    "base64Binary", "anyURI", "dateTime", "dateTimeStamp",
]
OWL2_DATATYPES = {XSD[n] for n in _OWL2_XSD_NAMES} | {
    RDF.PlainLiteral, RDF.XMLLiteral, URIRef("http://www.w3.org/2000/01/rdf-schema#Literal"), RDF.langString}


#: rdf:type objects that make a node part of the schema (the TBox), never an individual that can be left out.
_SCHEMA_TYPES = {
    OWL.Class, RDFS.Class, OWL.Restriction, RDFS.Datatype, OWL.ObjectProperty, OWL.DatatypeProperty,
    OWL.AnnotationProperty, RDF.Property, OWL.Ontology, OWL.OntologyProperty, OWL.FunctionalProperty,
    OWL.InverseFunctionalProperty, OWL.TransitiveProperty, OWL.SymmetricProperty, OWL.AsymmetricProperty,
    OWL.ReflexiveProperty, OWL.IrreflexiveProperty, OWL.AllDisjointClasses, OWL.AllDisjointProperties,
    OWL.AllDifferent, OWL.NegativePropertyAssertion, OWL.Axiom, OWL.Annotation, OWL.DeprecatedClass,
    OWL.DeprecatedProperty, RDF.List}
#: Characteristics that merge individuals: two values of a functional property (two subjects of an inverse
#: functional one) are the same individual.
_MERGING = {OWL.FunctionalProperty: False, OWL.InverseFunctionalProperty: True}  # True: merges subjects
#: Schema predicates whose objects (or list items) are properties that class expressions and axioms reason on.
_PROPERTY_POSITIONS = {OWL.onProperty, OWL.onProperties, OWL.propertyChainAxiom, OWL.inverseOf,
                       OWL.equivalentProperty, OWL.propertyDisjointWith, OWL.members}
#: The annotation properties built into OWL 2 (their values never take part in reasoning).
_BUILTIN_ANNOTATIONS = {RDFS.label, RDFS.comment, RDFS.seeAlso, RDFS.isDefinedBy, OWL.versionInfo, OWL.deprecated,
                        OWL.priorVersion, OWL.backwardCompatibleWith, OWL.incompatibleWith}
#: Constructs that can relate individuals however far apart in the assertions: with one of them, nothing is left out.
_GLOBAL = {OWL.topObjectProperty, OWL.hasKey}
_SWRL = "http://www.w3.org/2003/11/swrl#"


class ReasonerUnavailable(GuidelineKGError):
    """Java or HermiT could not be started."""


@dataclass
class ReasonerResult:
    """What HermiT concluded: consistency, unsatisfiable named classes, inferred types of individuals."""

    consistent: bool
    unsatisfiable: list[str] = field(default_factory=list)
    types: dict[str, set[str]] = field(default_factory=dict)


def reasoner_input(graph: Graph) -> tuple[Graph, int]:
    """A copy of ``graph`` that HermiT accepts: no owl:imports (the graph is already merged) and no
    literals outside the OWL 2 datatype map (such as xsd:date, which SHACL checks instead)."""
    out = Graph()
    dropped = 0
    for s, p, o in graph:
        if p == OWL.imports:
            continue
        if isinstance(o, Literal) and o.datatype is not None and o.datatype not in OWL2_DATATYPES:
            dropped += 1
            continue
        out.add((s, p, o))
    return out, dropped


def reasoning_module(graph: Graph, extra: Graph) -> tuple[Graph, int]:
    """What decides the classification of ``extra``'s individuals in ``graph`` + ``extra``, and how many
    individuals of ``graph`` were left out: the whole schema (classes, properties, restrictions, datatype
    definitions and their facets, lists, axioms) and the assertions about every individual connected to
    ``extra`` or to the schema.

    An individual is kept when it is mentioned by ``extra``, or by the schema outside an annotation (a nominal:
    ``owl:hasValue``, an ``owl:oneOf`` list, ``owl:AllDifferent`` members), or when an assertion links it to a
    kept individual through a property that can carry a conclusion from one individual to the other: one that a
    restriction, property chain or property axiom names, or a sub-property of one; ``owl:sameAs`` and
    ``owl:differentFrom``; a functional (inverse functional) property that is a super-property of one, or whose
    subject (object) has two values, which it would merge. Any other group of individuals is out of reach of
    every class expression that could classify the case: in a consistent graph (``build`` and ``validate``
    check the whole graph) it adds no conclusion about the case's individuals. Its assertions are left out but
    for those that link it to a kept individual (which type the kept one by domain or range). With
    ``owl:topObjectProperty``, ``owl:hasKey`` or SWRL rules, which relate individuals however far apart, nothing
    is left out."""
    merged = graph + extra
    if any(term in _GLOBAL or str(term).startswith(_SWRL) for triple in merged for term in triple):
        return merged, 0
    schema = _schema_nodes(merged)
    annotations = set(merged.subjects(RDF.type, OWL.AnnotationProperty)) | _BUILTIN_ANNOTATIONS
    object_properties = set(merged.subjects(RDF.type, OWL.ObjectProperty))
    data_properties = set(merged.subjects(RDF.type, OWL.DatatypeProperty))
    supers = _super_properties(merged)
    reasoned = _reasoned_properties(merged)
    reasoned_or_above = reasoned | {q for p in reasoned for q in supers.get(p, ())}
    merging = {p: subjects for kind, subjects in _MERGING.items() for p in merged.subjects(RDF.type, kind)}
    linking = reasoned | {p for p in merging if p in reasoned_or_above} | {OWL.sameAs, OWL.differentFrom}
    individuals: set[Node] = set()
    for s, p, o in merged:
        if p == RDF.type:
            if o not in _SCHEMA_TYPES:
                individuals.add(s)
        elif p in object_properties or p in (OWL.sameAs, OWL.differentFrom):
            individuals.update((s, o))
        elif p in data_properties:
            individuals.add(s)
    individuals = {n for n in individuals if isinstance(n, (URIRef, BNode)) and n not in schema}
    parent: dict[Node, Node] = {n: n for n in individuals}

    def find(n: Node) -> Node:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    seeds = {n for triple in extra for n in triple if n in individuals}
    values: dict[tuple[Node, Node], set[Node]] = {}  # (merging property, individual) -> its values
    for s, p, o in merged:
        if o in individuals:
            if s in individuals:
                if p in linking:
                    parent[find(s)] = find(o)
                for q in {p} | supers.get(p, set()):
                    if q in merging and q not in linking:
                        key, value = (o, s) if merging[q] else (s, o)
                        values.setdefault((q, key), set()).add(value)
            elif p not in annotations:
                seeds.add(o)  # a nominal: the schema names this individual
    for (_q, key), found in values.items():
        if len(found) > 1:  # the values would be merged
            for value in found:
                parent[find(value)] = find(key)
    kept = {find(n) for n in seeds}
    dropped = {n for n in individuals if find(n) not in kept}
    if not dropped:
        return merged, 0
    out = Graph()
    for s, p, o in merged:  # an assertion between a kept and a left-out individual stays (domain, range)
        if s not in dropped or (o in individuals and o not in dropped):
            out.add((s, p, o))
    return out, sum(1 for n in dropped if (n, None, None) in graph)


def _schema_nodes(graph: Graph) -> set[Node]:
    """Nodes of the schema: typed as a class, property, restriction, datatype, list or axiom, a predicate, a
    class of an rdf:type, a list cell."""
    nodes: set[Node] = set(graph.predicates())
    for s, o in graph.subject_objects(RDF.type):
        nodes.add(o)
        if o in _SCHEMA_TYPES:
            nodes.add(s)
    nodes.update(graph.subjects(RDF.first))
    nodes.update(graph.subjects(RDF.rest))
    return nodes


def _super_properties(graph: Graph) -> dict[Node, set[Node]]:
    """Each property's super-properties (rdfs:subPropertyOf, transitively; owl:equivalentProperty both ways)."""
    direct: dict[Node, set[Node]] = {}
    for s, o in graph.subject_objects(RDFS.subPropertyOf):
        direct.setdefault(s, set()).add(o)
    for s, o in graph.subject_objects(OWL.equivalentProperty):
        direct.setdefault(s, set()).add(o)
        direct.setdefault(o, set()).add(s)
    closed: dict[Node, set[Node]] = {}
    for start, above in direct.items():
        seen: set[Node] = set()
        todo = list(above)
        while todo:
            q = todo.pop()
            if q not in seen:
                seen.add(q)
                todo.extend(direct.get(q, ()))
        closed[start] = seen - {start}
    return closed


def _reasoned_properties(graph: Graph) -> set[Node]:
    """Properties that class expressions and property axioms reason on (restrictions, chains, inverses,
    equivalences, disjointness) and their sub-properties: an assertion of one can classify its subject or object."""
    found: set[Node] = set()
    for p in _PROPERTY_POSITIONS:
        for s, o in graph.subject_objects(p):
            if p in (OWL.inverseOf, OWL.equivalentProperty, OWL.propertyDisjointWith, OWL.propertyChainAxiom):
                found.add(s)
            found.update(graph.items(o) if (o, RDF.first, None) in graph else [o])
    changed = True
    while changed:  # a sub-property's assertions imply the super-property's
        changed = False
        for s, o in graph.subject_objects(RDFS.subPropertyOf):
            if o in found and s not in found:
                found.add(s)
                changed = True
    return found


def run_hermit(graph: Graph, individuals: Iterable[URIRef] = (), extra: Graph | None = None) -> ReasonerResult:
    """Run HermiT on ``graph`` (+ ``extra``); report consistency, unsatisfiable classes and the inferred
    named types (direct and indirect) of ``individuals``."""
    import owlready2  # noqa: PLC0415 - heavy (~0.2 s, sets up its quadstore); only HermiT runs need it

    data, _dropped = reasoner_input(graph + extra if extra is not None else graph)
    with tempfile.TemporaryDirectory(prefix="gkg-hermit-") as tmp:
        path = os.path.join(tmp, "merged.nt")
        data.serialize(destination=path, format="nt", encoding="utf-8")
        world = owlready2.World()
        sink = io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            onto = world.get_ontology("file://" + path).load(format="ntriples")
            try:
                with onto:
                    owlready2.sync_reasoner_hermit(world, infer_property_values=False, debug=0)
            except owlready2.base.OwlReadyInconsistentOntologyError:
                world.close()
                return ReasonerResult(consistent=False)
            except FileNotFoundError as exc:
                raise ReasonerUnavailable(f"cannot start Java for HermiT: {exc}") from None
            except Exception as exc:  # owlready2 wraps Java failures in CalledProcessError
                out = getattr(exc, "output", b"")
                detail = out.decode("utf-8", "replace").strip().splitlines()[:3] if isinstance(out, bytes) else []
                raise ReasonerUnavailable("HermiT failed: " + (" ".join(detail) or str(exc))) from None
        unsat = sorted(c.iri for c in world.inconsistent_classes() if hasattr(c, "iri")
                       and c.iri != str(OWL.Nothing))
        types: dict[str, set[str]] = {}
        for ind in individuals:
            entity = world[str(ind)]
            if entity is None:
                types[str(ind)] = set()
                continue
            types[str(ind)] = {c.iri for c in entity.INDIRECT_is_a
                               if isinstance(c, owlready2.ThingClass) and c.iri != str(OWL.Thing)}
        world.close()
        return ReasonerResult(consistent=True, unsatisfiable=unsat, types=types)


def check_consistency(graph: Graph) -> ReasonerResult:
    """HermiT's verdict on the merged graph: consistent, and which named classes are unsatisfiable."""
    return run_hermit(graph)


def classify(graph: Graph, individuals: Iterable[URIRef], extra: Graph | None = None) -> ReasonerResult:
    """The inferred named classes of each individual (HermiT realisation). With ``extra`` (the cases), HermiT
    is given only what decides them (:func:`reasoning_module`): the schema, the cases and the individuals linked
    to them, not the guideline's other individuals (statements, citations, evidence...), which it would otherwise
    realise with each case. The individuals asked about should be ``extra``'s."""
    if extra is None:
        return run_hermit(graph, individuals)
    module, _left_out = reasoning_module(graph, extra)
    return run_hermit(module, individuals)
