"""The knowledge of one guideline: ontology and content merged into one graph, and the guideline's IRI."""

from __future__ import annotations

import contextlib

from rdflib import Graph, URIRef

from guideline_kg.core.errors import InputError
from guideline_kg.core.namespaces import GK, PREFIXES, RDF, bind_prefixes, declare_namespace
from guideline_kg.core.project import Project
from guideline_kg.core.rdfio import read_graphs

__all__ = ["guideline_iri", "load_knowledge"]


def load_knowledge(project: Project) -> Graph:
    """Parse every ontology and content file of ``project`` into one merged graph."""
    files = project.knowledge_files()
    if not any(p.parent == project.ontology_dir for p in files):
        raise InputError("no ontology files (*.ttl) found", path=str(project.ontology_dir))
    if not project.parts("content"):
        raise InputError("no content files (*.ttl) found (guideline.toml [parts] content)",
                         path=project.manifest.where)
    graph = read_graphs(files, bind_prefixes(Graph()))
    if project.namespace is None:
        _declare_from_content(graph)
    return graph


def _declare_from_content(graph: Graph) -> None:
    """Without a namespace in the manifest, the guideline's is the content's prefix for its gk:Guideline IRI."""
    found = _guidelines(graph)
    if len(found) != 1:
        return
    iri = str(found[0])
    known = {str(ns) for ns in PREFIXES.values()}
    candidates = [(p, str(ns)) for p, ns in graph.namespaces()
                  if iri.startswith(str(ns)) and len(iri) > len(str(ns)) and str(ns) not in known and p]
    if candidates:
        prefix, ns = max(candidates, key=lambda c: len(c[1]))
        with contextlib.suppress(ValueError):  # a reserved prefix for the content's IRIs: keep the generic one
            declare_namespace(prefix, ns)


def guideline_iri(graph: Graph) -> URIRef:
    """The one gk:Guideline of the graph; an InputError if there is none or more than one."""
    found = _guidelines(graph)
    if len(found) != 1:
        raise InputError(f"expected exactly one gk:Guideline in the content, found {len(found)}")
    return found[0]


def _guidelines(graph: Graph) -> list[URIRef]:
    """The nodes typed gk:Guideline, as IRIs, in order."""
    return sorted({URIRef(str(g)) for g in graph.subjects(RDF.type, GK.Guideline)})
