"""`build`: merge ontology and content into one ontology, prove it consistent with HermiT, check the OWL 2 DL
profile, write it in four syntaxes.

The merge is one ontology, as OWL tools expect of one file: the package's root ontology (the header that no other
header of the merge imports, e.g. ``<https://w3id.org/guideline-kg/plbp>``) keeps its header; the headers of the
ontologies merged into it (the generic ontology, the package's vocabulary) go, and so do the ``owl:imports`` of
them, which the file now holds: their IRIs (version IRIs where given) stay as ``dcterms:hasPart`` of the root.
An import of an ontology that is not in the merge is kept (and the strict load test would report it)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rdflib import Graph, URIRef

from guideline_kg.core.namespaces import DCTERMS, GK, OWL, RDF, SKOS
from guideline_kg.core.rdfio import EXTENSIONS, write_graph
from guideline_kg.knowledge.graph import guideline_iri
from guideline_kg.reasoning.hermit import ReasonerResult, check_consistency
from guideline_kg.reasoning.owl_profile import owl2_dl_violations

__all__ = ["BuildResult", "build", "close_imports", "summarise"]


@dataclass
class BuildResult:
    """The outcome of a build: the reasoner's verdict and the files written."""

    reasoner: ReasonerResult
    profile_violations: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.reasoner.consistent and not self.reasoner.unsatisfiable and not self.profile_violations


def close_imports(graph: Graph) -> Graph:
    """``graph`` (a merge of ontology files) as one ontology with its imports closed in it (module docstring); a
    copy, with ``graph``'s prefixes. A graph without a header, or with several headers none of which imports the
    others, is returned copied as it is."""
    out = Graph()
    for prefix, ns in graph.namespaces():
        out.bind(prefix, ns, override=True, replace=True)
    headers = {h for h in graph.subjects(RDF.type, OWL.Ontology) if isinstance(h, URIRef)}
    imported = {o for h in headers for o in graph.objects(h, OWL.imports)}
    roots = headers - imported
    if len(roots) != 1:
        for t in graph:
            out.add(t)
        return out
    (root,) = roots
    merged = headers - {root}
    for t in graph:
        s, p, o = t
        if s in merged or (p == OWL.imports and o in merged):
            continue
        out.add(t)
    for h in sorted(merged):
        out.add((root, DCTERMS.hasPart, graph.value(h, OWL.versionIRI) or h))
    return out


def build(graph: Graph, out_dir: Path | None) -> BuildResult:
    """Close the imports of ``graph`` (:func:`close_imports`), check it with HermiT and the OWL 2 DL profile;
    when both pass and ``out_dir`` is given, write it."""
    graph = close_imports(graph)
    result = BuildResult(check_consistency(graph), owl2_dl_violations(graph))
    if result.ok and out_dir is not None:
        for fmt, ext in EXTENSIONS.items():
            result.written.append(write_graph(graph, Path(out_dir) / f"merged{ext}", fmt))
    return result


def summarise(graph: Graph) -> dict[str, Any]:
    """Counts that describe the merged graph (for the main job's summary)."""
    kinds: Counter[str] = Counter()
    for s in set(graph.subjects(GK.sourceLine, None)):
        for t in graph.objects(s, RDF.type):
            notation = graph.value(t, SKOS.notation)
            if notation is not None:
                kinds[str(notation)] += 1
    return {
        "guideline": str(guideline_iri(graph)),
        "title": str(graph.value(guideline_iri(graph), DCTERMS.title) or ""),
        "triples": len(close_imports(graph)),  # as written: one ontology, its imports closed
        "classes": len(set(graph.subjects(RDF.type, OWL.Class)) - {None}),
        "statements": sum(kinds.values()),
        "statements_by_kind": dict(sorted(kinds.items())),
        "source_lines": len(set(graph.objects(None, GK.sourceLine))),
        "references": len(set(graph.subjects(RDF.type, GK.Reference))),
        "populations": len(set(graph.objects(None, GK.population))),
    }

