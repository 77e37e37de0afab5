"""The project's namespaces, declared once, and the one function that binds them on a graph."""

from __future__ import annotations

from rdflib import Graph, Namespace
from rdflib.namespace import DCTERMS, OWL, PROV, RDF, RDFS, SH, SKOS, XSD

__all__ = [
    "GK",
    "PLBP",
    "CASE",
    "RESULT",
    "SSSOM",
    "DCTERMS",
    "OWL",
    "PROV",
    "RDF",
    "RDFS",
    "SH",
    "SKOS",
    "XSD",
    "PREFIXES",
    "bind_prefixes",
    "sparql_prologue",
]

#: The ontology of guideline entities (classes and properties; generic across guidelines).
GK = Namespace("https://w3id.org/guideline-kg/ontology#")
#: This guideline's content: statements, definitions, algorithm ("persistent lower back pain").
PLBP = Namespace("https://w3id.org/guideline-kg/plbp/")
#: Patient cases shipped as examples.
CASE = Namespace("https://w3id.org/guideline-kg/case/")
#: Results of a derivation (one per case and statement).
RESULT = Namespace("https://w3id.org/guideline-kg/result/")
SSSOM = Namespace("https://w3id.org/sssom/")

PREFIXES: dict[str, Namespace] = {
    "gk": GK,
    "plbp": PLBP,
    "case": CASE,
    "result": RESULT,
    "sssom": SSSOM,
    "owl": OWL,
    "rdf": RDF,
    "rdfs": RDFS,
    "xsd": XSD,
    "skos": SKOS,
    "dcterms": DCTERMS,
    "prov": PROV,
    "sh": SH,
}


def bind_prefixes(graph: Graph) -> Graph:
    """Bind the project's prefixes on ``graph`` (so every serialisation reads the same) and return it."""
    for prefix, namespace in PREFIXES.items():
        graph.bind(prefix, namespace, override=True, replace=True)
    return graph


def sparql_prologue() -> str:
    """The PREFIX lines that every project query may assume."""
    return "".join(f"PREFIX {p}: <{ns}>\n" for p, ns in PREFIXES.items())
