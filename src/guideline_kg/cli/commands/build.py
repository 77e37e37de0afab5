"""`guideline-kg build`: merge, prove consistent with HermiT, write build/merged.* in four syntaxes."""

from __future__ import annotations

import argparse
from pathlib import Path

from guideline_kg.cli.common import (
    add_store_arguments,
    emit,
    emit_json,
    note,
    project_inputs,
    project_of,
    refuse_overwriting_inputs,
    store_of,
)
from guideline_kg.core.errors import EXIT_FAILED, EXIT_OK
from guideline_kg.knowledge.graph import load_knowledge
from guideline_kg.outputs.build import build, summarise


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build",
                       help="merge ontology and content, prove consistency with HermiT, write the merged graph",
                       description="Merge ontology/ and the guideline package's Turtle parts, prove the merged graph "
                                   "consistent with HermiT (and "
                                   "that no named class is unsatisfiable), and write it to OUT as Turtle, "
                                   "N-Triples, RDF/XML and JSON-LD. Also checks the OWL 2 DL profile with the OWL API. "
                                   "Exit 0 consistent and in profile, 1 inconsistent, unsatisfiable classes or "
                                   "profile violations, 2 unreadable input.")
    p.add_argument("--out", type=Path, default=Path("build"), help="output folder (default: build)")
    p.add_argument("--format", choices=["text", "json"], default="text", help="summary format")
    add_store_arguments(p)  # --store URL: also replace the server's default graph with the merged graph
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    project = project_of(args)
    refuse_overwriting_inputs(args.out, project_inputs(project))
    graph = load_knowledge(project)
    result = build(graph, args.out)
    summary = summarise(graph)
    if args.store and result.ok:
        store_of(args).replace_graph(graph)
        summary["store"] = args.store
    summary.update({"consistent": result.reasoner.consistent,
                    "unsatisfiable_classes": result.reasoner.unsatisfiable,
                    "owl2_dl_violations": result.profile_violations,
                    "written": [str(p) for p in result.written]})
    if args.format == "json":
        emit_json(summary)
    else:
        if not result.reasoner.consistent:
            note("HermiT: the merged graph is INCONSISTENT (no model exists); nothing written.")
        elif result.reasoner.unsatisfiable:
            note("HermiT: unsatisfiable classes: " + ", ".join(result.reasoner.unsatisfiable))
        else:
            emit(f"HermiT: consistent; no named class is unsatisfiable ({summary['classes']} classes).")
        if result.profile_violations:
            note(f"OWL 2 DL profile: {len(result.profile_violations)} violations (OWL API):")
            for v in result.profile_violations:
                note(f"  - {v}")
        else:
            emit("OWL API: the merged graph is in the OWL 2 DL profile.")
        emit(f"Guideline: {summary['title']}\n  IRI: {summary['guideline']}")
        emit(f"  {summary['triples']} triples, {summary['statements']} statements on "
             f"{summary['source_lines']} source lines, {summary['references']} references, "
             f"{summary['populations']} populations")
        emit("  statements by kind: " + ", ".join(f"{k} {n}" for k, n in summary["statements_by_kind"].items()))
        for path in result.written:
            emit(f"  wrote {path}")
        if summary.get("store"):
            emit(f"  loaded into {summary['store']} (default graph replaced)")
    return EXIT_OK if result.ok else EXIT_FAILED
