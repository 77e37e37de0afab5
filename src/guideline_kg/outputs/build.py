"""`build`: merge ontology and content, prove the merge consistent with HermiT, write it in four syntaxes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rdflib import Graph

from guideline_kg.core.namespaces import DCTERMS, GK, OWL, RDF, SKOS
from guideline_kg.core.rdfio import EXTENSIONS, write_graph
from guideline_kg.knowledge.graph import guideline_iri
from guideline_kg.reasoning.hermit import ReasonerResult, check_consistency
from guideline_kg.reasoning.owl_profile import owl2_dl_violations

__all__ = ["BuildResult", "build", "summarise"]


@dataclass
class BuildResult:
    """The outcome of a build: the reasoner's verdict and the files written."""

    reasoner: ReasonerResult
    profile_violations: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.reasoner.consistent and not self.reasoner.unsatisfiable and not self.profile_violations


def build(graph: Graph, out_dir: Path | None) -> BuildResult:
    """Check ``graph`` with HermiT and the OWL 2 DL profile; when both pass and ``out_dir`` is given, write it."""
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
        "triples": len(graph),
        "classes": len(set(graph.subjects(RDF.type, OWL.Class)) - {None}),
        "statements": sum(kinds.values()),
        "statements_by_kind": dict(sorted(kinds.items())),
        "source_lines": len(set(graph.objects(None, GK.sourceLine))),
        "references": len(set(graph.subjects(RDF.type, GK.Reference))),
        "populations": len(set(graph.objects(None, GK.population))),
    }

