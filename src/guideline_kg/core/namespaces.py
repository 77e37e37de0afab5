"""The project's namespaces, declared once, and the one function that binds them on a graph.

The generic namespaces (the ontology, cases, results and the reused vocabularies) are fixed here. A guideline's own
namespace is data: its package manifest declares it (``[guideline] prefix`` and ``namespace``), or its content's
Turtle prefixes do, and :func:`declare_namespace` adds it to :data:`PREFIXES` when the package is opened, so that
every graph, query and export of that guideline uses it.
"""

from __future__ import annotations

from rdflib import Graph, Namespace
from rdflib.namespace import DCTERMS, OWL, PROV, RDF, RDFS, SH, SKOS, XSD

__all__ = [
    "CASE",
    "DCTERMS",
    "GENERIC_PREFIXES",
    "GK",
    "OWL",
    "PREFIXES",
    "PROV",
    "RDF",
    "RDFS",
    "RESULT",
    "SH",
    "SKOS",
    "SSSOM",
    "XSD",
    "bind_prefixes",
    "declare_namespace",
    "qname",
    "sparql_prologue",
]

#: The ontology of guideline entities (classes and properties; generic across guidelines).
GK = Namespace("https://w3id.org/guideline-kg/ontology#")
#: Patient cases shipped as examples.
CASE = Namespace("https://w3id.org/guideline-kg/case/")
#: Results of a derivation (one per case and statement).
RESULT = Namespace("https://w3id.org/guideline-kg/result/")
SSSOM = Namespace("https://w3id.org/sssom/")

#: Every value a plain Namespace (rdflib's closed vocabularies such as OWL are classes; their IRIs are used here).
PREFIXES: dict[str, Namespace] = {
    "gk": GK,
    "case": CASE,
    "result": RESULT,
    "sssom": SSSOM,
    "owl": Namespace(str(OWL)),
    "rdf": Namespace(str(RDF)),
    "rdfs": Namespace(str(RDFS)),
    "xsd": Namespace(str(XSD)),
    "skos": Namespace(str(SKOS)),
    "dcterms": Namespace(str(DCTERMS)),
    "prov": Namespace(str(PROV)),
    "sh": Namespace(str(SH)),
}


#: The generic prefixes only (no guideline's); :data:`PREFIXES` is these plus the declared guideline namespaces.
GENERIC_PREFIXES: dict[str, Namespace] = dict(PREFIXES)


def declare_namespace(prefix: str, iri: str) -> Namespace:
    """Add a guideline's namespace to :data:`PREFIXES` (bound on graphs, predeclared in queries) and return it.

    A generic prefix cannot be redeclared (ValueError); declaring a guideline prefix again replaces its IRI.
    """
    if prefix in GENERIC_PREFIXES:
        if str(GENERIC_PREFIXES[prefix]) == iri:
            return GENERIC_PREFIXES[prefix]
        raise ValueError(f"prefix {prefix!r} is reserved for {GENERIC_PREFIXES[prefix]}")
    PREFIXES[prefix] = Namespace(iri)
    return PREFIXES[prefix]


def bind_prefixes(graph: Graph) -> Graph:
    """Bind the project's prefixes on ``graph`` (so every serialisation reads the same) and return it."""
    for prefix, namespace in PREFIXES.items():
        graph.bind(prefix, namespace, override=True, replace=True)
    return graph


def qname(iri: str) -> str:
    """A prefixed name for an IRI of a declared namespace (``plbp:ChronicPainDuration``), else the IRI."""
    for prefix, ns in PREFIXES.items():
        base = str(ns)
        if prefix and iri.startswith(base) and len(iri) > len(base):
            return f"{prefix}:{iri[len(base):]}"
    return iri


def local_name(iri: object) -> str:
    """The last segment of an IRI, after its last ``#`` or ``/`` (``.../plbp/L16`` -> ``L16``); "" for None.
    The short id every text view uses for statements, cases and classes."""
    return str(iri).rsplit("#", 1)[-1].rsplit("/", 1)[-1] if iri else ""


def sparql_prologue() -> str:
    """The PREFIX lines that every project query may assume."""
    return "".join(f"PREFIX {p}: <{ns}>\n" for p, ns in PREFIXES.items())
