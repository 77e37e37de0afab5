"""Exports of the knowledge graph to other systems: RDF syntaxes, JSON-LD with the published context, CSV tables.

Everything is read through the named SPARQL queries ``queries/export-*.rq`` on the embedded store, so a second
guideline exports unchanged. The FHIR exports live in :mod:`fhir_out`, CDS Hooks cards in :mod:`cds`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from rdflib import Graph

from guideline_kg.core.errors import InputError
from guideline_kg.core.files import write_atomic
from guideline_kg.core.namespaces import GENERIC_PREFIXES, PREFIXES, bind_prefixes, sparql_prologue
from guideline_kg.core.project import Project
from guideline_kg.core.queries import load_query
from guideline_kg.outputs.build import close_imports
from guideline_kg.store.stores import EmbeddedStore

__all__ = [
    "CONTEXT_PART",
    "RDF_FORMATS",
    "csv_tables",
    "export_graph",
    "jsonld_context",
    "rdf_export",
    "short_name",
    "write_text",
]

#: Export format name -> (rdflib serialiser, file extension).
RDF_FORMATS: dict[str, tuple[str, str]] = {
    "turtle": ("turtle", ".ttl"),
    "ntriples": ("nt", ".nt"),
    "rdfxml": ("xml", ".rdf"),
    "jsonld": ("json-ld", ".jsonld"),
}
#: The manifest part naming the package's JSON-LD context (``[parts] jsonld_context``).
CONTEXT_PART = "jsonld_context"


def short_name(iri: str) -> str:
    """The local name of an IRI (after the last ``#`` or ``/``)."""
    return iri.rstrip("/").rsplit("#", 1)[-1].rsplit("/", 1)[-1]


def export_graph(knowledge: Graph, project: Project) -> Graph:
    """The graph every RDF export serialises: the CONSTRUCT of ``export-graph.rq`` over the knowledge graph, as
    one ontology with its imports closed in it (:func:`outputs.build.close_imports`, as ``build`` writes it), so
    that OWL tools load it offline with their default settings.

    This one query runs on rdflib's engine over the parsed graph, not on the embedded store: pyoxigraph keeps
    the value of a numeric literal, not its lexical form (``3.0`` comes back as ``3``), and an export must be the
    source graph term for term (tests/test_export.py proves it isomorphic after a re-import).
    """
    query = sparql_prologue() + load_query(project.queries_dir, "export-graph").text
    out = bind_prefixes(Graph())
    constructed = knowledge.query(query).graph
    if constructed is None:
        raise InputError("export-graph.rq must be a CONSTRUCT query", path=str(project.queries_dir))
    for triple in constructed:
        out.add(triple)
    return close_imports(out)


def jsonld_context(project: Project) -> dict[str, Any]:
    """The package's JSON-LD context (its manifest's ``[parts] jsonld_context``), its ``@context`` object; an
    InputError (exit 2) when the package names none."""
    path = project.require(CONTEXT_PART, "`export --format jsonld`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("the JSON-LD context file is missing", path=str(path)) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg}", path=str(path), line=exc.lineno, column=exc.colno) from None
    context = data.get("@context") if isinstance(data, dict) else None
    if not isinstance(context, dict):
        raise InputError("expected an object with an \"@context\" object", path=str(path))
    return context


def rdf_export(knowledge: Graph, project: Project, fmt: str, context_url: str | None = None) -> str:
    """The knowledge graph in one RDF syntax (``turtle``, ``ntriples``, ``rdfxml``, ``jsonld``).

    JSON-LD is compacted with the committed context; the document embeds it, or, given ``context_url``,
    refers to it by that URL (the published copy of the package's context).
    """
    if fmt not in RDF_FORMATS:
        raise InputError(f"unknown RDF export format {fmt!r} (expected one of {', '.join(RDF_FORMATS)})")
    graph = export_graph(knowledge, project)
    serialiser = RDF_FORMATS[fmt][0]
    if fmt != "jsonld":
        return graph.serialize(format=serialiser)
    context = jsonld_context(project)
    doc = json.loads(graph.serialize(format="json-ld", context=context, auto_compact=True))
    if context_url:
        doc["@context"] = context_url
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _value(term: Any) -> str:
    return "" if term is None else str(term)


def _prefixed(iri: str) -> str:
    """A property-graph label: the local name for IRIs of the ontology (gk:) or of a guideline's namespace,
    ``prefix_localname`` in another known namespace, else the local name."""
    for prefix, ns in PREFIXES.items():
        if iri.startswith(str(ns)) and iri != str(ns):
            own = prefix == "gk" or prefix not in GENERIC_PREFIXES
            return iri[len(str(ns)):] if own else f"{prefix}_{iri[len(str(ns)):]}"
    return short_name(iri)


def csv_tables(store: EmbeddedStore, project: Project) -> dict[str, str]:
    """Node and edge tables (``nodes.csv``, ``edges.csv``) in the neo4j-admin import header style.

    Nodes are the graph's IRIs (types become labels); edges are the triples between two IRIs (rdf:type excepted).
    Blank-node structures (OWL class expressions) stay in the RDF exports.
    """
    nodes = store.select(load_query(project.queries_dir, "export-csv-nodes").text)
    node_rows = []
    for r in nodes.dicts():
        types = sorted(_prefixed(t) for t in _value(r["types"]).split())
        node_rows.append([_value(r["node"]), ";".join(types) or "Resource", _value(r["label"]),
                          _value(r["text"]), _value(r["line"]), _value(r["notation"])])
    edges = store.select(load_query(project.queries_dir, "export-csv-edges").text)
    edge_rows = [[_value(r["source"]), _value(r["target"]), _prefixed(_value(r["predicate"])), _value(r["predicate"])]
                 for r in edges.dicts()]
    return {
        "nodes.csv": _csv(["iri:ID", ":LABEL", "label", "text", "sourceLine:int", "notation"], node_rows),
        "edges.csv": _csv([":START_ID", ":END_ID", ":TYPE", "predicate"], edge_rows),
    }


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` whole or not at all (:func:`core.files.write_atomic`: a temporary file renamed
    into place, mode 0644)."""
    return write_atomic(path, text)
