"""The data a query runs on: the knowledge graph, patient cases, their derivation results and, on request,
the reasoner's conclusions (inferred rdf:type of the cases' individuals); loaded into any store. Cases come
through the gate (:mod:`guideline_kg.checks.gate`): an invalid case contributes nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rdflib import Graph, URIRef
from rdflib.namespace import OWL, RDF, RDFS

from guideline_kg.cases.reader import Case
from guideline_kg.checks.gate import Gate, GateResult
from guideline_kg.core.errors import InputError
from guideline_kg.core.namespaces import bind_prefixes
from guideline_kg.core.project import Project
from guideline_kg.knowledge.graph import load_knowledge
from guideline_kg.reasoning.derive import results_graph
from guideline_kg.reasoning.hermit import run_hermit
from guideline_kg.store.stores import Store

__all__ = ["QueryData", "individuals", "inferred_types", "load_into", "query_data"]

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
    invalid: list[GateResult] = field(default_factory=list)  #: cases the gate refused (not in the data)


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
    """Knowledge + the given cases that pass the gate (checks.gate) (+ the fast path's derivation results,
    + HermiT's inferred types). A case that fails the case shapes adds nothing (no fact, no result, no
    inference): it is in ``invalid`` and its file and violations are in ``notes``."""
    knowledge = load_knowledge(project)
    gated = Gate(knowledge, project).read(list(case_paths), derive=results) if case_paths else []
    extra = bind_prefixes(Graph())
    notes = [f"{g.name}: {n}" for g in gated for n in g.notes]
    invalid = [g for g in gated if not g.valid]
    for g in invalid:
        notes += g.report("left out of the dataset (no facts, results or inferences)")
    cases = [g.case for g in gated if g.case is not None]
    for case in cases:
        extra += case.graph
    derived = [g.result for g in gated if g.result is not None]
    if derived:
        extra += results_graph(derived, knowledge)
    count = 0
    if inferred:
        conclusions = inferred_types(knowledge, extra)
        extra += conclusions
        count = len(conclusions)
    return QueryData(knowledge, extra, cases, count, notes, invalid)


def load_into(store: Store, data: QueryData, *, replace: bool = False) -> None:
    """Put ``data`` into ``store``. The knowledge graph is loaded only if the store has no guideline yet
    (or always with ``replace``, which on a remote store replaces its default graph)."""
    if replace and hasattr(store, "replace_graph"):
        store.replace_graph(data.knowledge + data.extra)
        return
    has = getattr(store, "has_knowledge", None)
    if replace or has is None or not has():
        store.add_graph(data.knowledge)
    if len(data.extra):
        store.add_graph(data.extra)
