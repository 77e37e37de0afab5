"""The data a query runs on: the knowledge graph, patient cases, their derivation results and, on request,
the reasoner's conclusions (inferred rdf:type of the cases' individuals); loaded into any store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rdflib import Graph, URIRef
from rdflib.namespace import OWL, RDF, RDFS

from guideline_kg.cases.reader import Case, load_cases
from guideline_kg.core.errors import InputError
from guideline_kg.knowledge.graph import load_knowledge
from guideline_kg.core.namespaces import bind_prefixes
from guideline_kg.core.project import Project
from guideline_kg.store.stores import Store

__all__ = ["QueryData", "query_data", "individuals", "inferred_types", "load_into"]

#: rdf:type objects that mark a node as a class or property, not an individual.
_META = {OWL.Class, RDFS.Class, OWL.ObjectProperty, OWL.DatatypeProperty, OWL.AnnotationProperty,
         RDF.Property, OWL.Ontology, OWL.Restriction, RDFS.Datatype}


@dataclass
class QueryData:
    """The knowledge graph and the graph of everything added for the query (cases, results, inferences)."""

    knowledge: Graph
    extra: Graph
    cases: list[Case] = field(default_factory=list)
    inferred: int = 0
    notes: list[str] = field(default_factory=list)


def individuals(graph: Graph) -> list[URIRef]:
    """The named individuals of a graph: IRIs with an rdf:type, none of which is a meta-class."""
    typed: dict[URIRef, set] = {}
    for s, o in graph.subject_objects(RDF.type):
        if isinstance(s, URIRef):
            typed.setdefault(s, set()).add(o)
    return sorted(s for s, types in typed.items() if not types & _META)


def inferred_types(knowledge: Graph, cases_graph: Graph) -> Graph:
    """HermiT's conclusions as triples: every named class (direct and indirect) of every named individual
    of the knowledge graph and of ``cases_graph``, not already asserted. One HermiT run (InputError if the
    cases make the graph inconsistent)."""
    from guideline_kg.reasoning.hermit import run_hermit

    merged = knowledge + cases_graph
    result = run_hermit(knowledge, individuals(merged), extra=cases_graph)
    if not result.consistent:
        raise InputError("the cases contradict the ontology (HermiT finds knowledge + cases inconsistent); "
                         "no inferences")
    out = bind_prefixes(Graph())
    for ind, classes in result.types.items():
        for cls in classes:
            triple = (URIRef(ind), RDF.type, URIRef(cls))
            if triple not in merged:
                out.add(triple)
    return out


def query_data(project: Project, case_paths: list[Path] | None = None, *, results: bool = False,
               inferred: bool = False) -> QueryData:
    """Knowledge + the given cases (+ the fast path's derivation results, + HermiT's inferred types)."""
    knowledge = load_knowledge(project)
    cases = load_cases(list(case_paths)) if case_paths else []
    extra = bind_prefixes(Graph())
    notes = [f"{c.name}: {n}" for c in cases for n in c.notes]
    for case in cases:
        extra += case.graph
    if results and cases:
        from guideline_kg.reasoning.derive import Evaluator, results_graph

        evaluator = Evaluator(knowledge, project)
        extra += results_graph([evaluator.evaluate(c) for c in cases], knowledge)
    count = 0
    if inferred:
        conclusions = inferred_types(knowledge, extra)
        extra += conclusions
        count = len(conclusions)
    return QueryData(knowledge, extra, cases, count, notes)


def load_into(store: Store, data: QueryData, *, replace: bool = False) -> None:
    """Put ``data`` into ``store``. The knowledge graph is loaded only if the store has no guideline yet
    (or always with ``replace``, which on a remote store replaces its default graph)."""
    if replace and hasattr(store, "replace_graph"):
        store.replace_graph(data.knowledge + data.extra)  # type: ignore[attr-defined]
        return
    has = getattr(store, "has_knowledge", None)
    if replace or has is None or not has():
        store.add_graph(data.knowledge)
    if len(data.extra):
        store.add_graph(data.extra)
