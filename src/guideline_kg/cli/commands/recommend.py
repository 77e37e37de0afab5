"""`guideline-kg recommend`: which statements apply to each case, which do not, which are undetermined, and why."""

from __future__ import annotations

import argparse
from pathlib import Path

from guideline_kg.checks.gate import Gate, exit_code
from guideline_kg.cli.common import add_store_arguments, emit, emit_json, project_of, report_gate, store_of
from guideline_kg.knowledge.graph import load_knowledge
from guideline_kg.outputs.report import json_report, summary_table, text_report
from guideline_kg.reasoning.derive import results_graph


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recommend", help="derive the applicable recommendations for patient cases",
                       description="Validate each case against the case shapes, then derive every statement's "
                                   "status (applicable, not-applicable, undetermined) with the facts that decided "
                                   "it or the data missing. CASE is a Turtle, JSON-LD or FHIR R4 Bundle file, or a "
                                   "folder of them. Exit 0 success, 1 a case fails validation, 2 unreadable input.")
    p.add_argument("cases", nargs="+", type=Path, metavar="CASE")
    p.add_argument("--reasoner", choices=["fast", "hermit"], default="fast",
                   help="fast: SPARQL on the embedded store (default); hermit: OWL reasoning with HermiT")
    p.add_argument("--format", choices=["text", "json", "turtle"], default="text")
    add_store_arguments(p)  # --store URL: load the cases there and derive (fast path) with SPARQL on that server
    p.add_argument("--applicable-only", action="store_true", help="text: hide statements that do not apply")
    p.add_argument("--summary", action="store_true", help="text: one line per case instead of the full report")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    project = project_of(args)
    knowledge = load_knowledge(project)
    gate = Gate(knowledge, project)
    gated = gate.read(args.cases, reasoner=args.reasoner, store=store_of(args) if args.store else None)
    invalid = report_gate(gated, "no recommendations")
    results = [g.result for g in gated if g.result is not None]
    if args.format == "json":
        doc = json_report(gate.evaluator, results)
        notes = {id(g.result): g for g in gated if g.result is not None}
        for case_doc, result in zip(doc["cases"], results, strict=True):  # what the reader could not record
            case_doc["input_notes"] = notes[id(result)].input_notes()
        doc["invalid_cases"] = [g.to_json() for g in invalid]
        emit_json(doc)
    elif args.format == "turtle":
        graph = results_graph(results, knowledge)
        for g in invalid:  # an invalid case: its SHACL validation report (every violation), and no results
            if not g.unreadable:
                graph += g.shacl_report()
        emit(graph.serialize(format="turtle"))
    elif args.summary:
        emit(summary_table(results))
    else:
        emit(text_report(gate.evaluator, results, show_all=not args.applicable_only))
    return exit_code(gated)  # 2 if a case file was unreadable (reported above), 1 if a case is invalid
