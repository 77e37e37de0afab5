"""`guideline-kg recommend`: which statements apply to each case, which do not, which are undetermined, and why."""

from __future__ import annotations

import argparse
from pathlib import Path

from guideline_kg.cases.reader import load_cases
from guideline_kg.cli.common import add_store_arguments, emit, emit_json, project_of, split_valid_cases, store_of
from guideline_kg.reasoning.derive import Evaluator, results_graph
from guideline_kg.core.errors import EXIT_FAILED, EXIT_OK
from guideline_kg.knowledge.graph import load_knowledge
from guideline_kg.outputs.report import json_report, summary_table, text_report


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
    cases = load_cases(args.cases)
    valid, invalid = split_valid_cases(cases, project, "no recommendations")
    evaluator = Evaluator(knowledge, project)
    if args.store:
        results = _on_store(args, knowledge, evaluator, valid)
    else:
        results = [evaluator.evaluate(c, args.reasoner) for c in valid]
    if args.format == "json":
        doc = json_report(evaluator, results)
        doc["invalid_cases"] = [c.name for c in invalid]
        emit_json(doc)
    elif args.format == "turtle":
        emit(results_graph(results, knowledge).serialize(format="turtle"))
    elif args.summary:
        emit(summary_table(results))
    else:
        emit(text_report(evaluator, results, show_all=not args.applicable_only))
    return EXIT_FAILED if invalid else EXIT_OK


def _on_store(args: argparse.Namespace, knowledge, evaluator: Evaluator, cases: list) -> list:
    """The fast path evaluated by the SPARQL server of --store, after loading the cases into it."""
    from guideline_kg.core.errors import InputError

    if args.reasoner != "fast":
        raise InputError("--store runs the fast path (SPARQL); --reasoner hermit runs only in-process")
    store = store_of(args)
    if not store.has_knowledge():
        store.add_graph(knowledge)
    for case in cases:
        store.add_graph(case.graph)
    return list(evaluator.evaluate_store(store, [c.patient for c in cases], {c.patient: c.name for c in cases}))
