"""The knowledge of one guideline: ontology and content merged into one graph, and the guideline's IRI."""

from __future__ import annotations

from rdflib import Graph, URIRef

from guideline_kg.core.errors import InputError
from guideline_kg.core.namespaces import GK, RDF, bind_prefixes
from guideline_kg.core.project import Project
from guideline_kg.core.rdfio import read_graphs

__all__ = ["load_knowledge", "guideline_iri"]


def load_knowledge(project: Project) -> Graph:
    """Parse every ontology and content file of ``project`` into one merged graph."""
    files = project.knowledge_files()
    if not any(p.parent == project.ontology_dir for p in files):
        raise InputError("no ontology files (*.ttl) found", path=str(project.ontology_dir))
    if not project.parts("content"):
        raise InputError("no content files (*.ttl) found (guideline.toml [parts] content)",
                         path=project.manifest.where)
    return read_graphs(files, bind_prefixes(Graph()))


def guideline_iri(graph: Graph) -> URIRef:
    """The one gk:Guideline of the graph; an InputError if there is none or more than one."""
    found = sorted(set(graph.subjects(RDF.type, GK.Guideline)))
    if len(found) != 1:
        raise InputError(f"expected exactly one gk:Guideline in the content, found {len(found)}")
    return URIRef(found[0])
