"""`guideline-kg validate`: SHACL shapes and the consistency analysis of the guideline, and any given cases."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from rdflib import Graph

from guideline_kg.checks.gate import Gate, GateResult, exit_code
from guideline_kg.checks.validate import (
    SAMPLE_SEED,
    SAMPLE_SIZE,
    ValidationResult,
    check_case_results,
    report_graph,
    sort_findings,
    validate_knowledge,
)
from guideline_kg.cli.common import emit, emit_json, project_of, report_gate
from guideline_kg.cohort.generate import generate, load_profile, record_to_ntriples
from guideline_kg.core.errors import EXIT_ERROR, EXIT_FAILED, EXIT_OK
from guideline_kg.core.findings import SEVERITIES, Finding
from guideline_kg.core.project import Project
from guideline_kg.knowledge.graph import load_knowledge
from guideline_kg.reasoning.derive import results_graph
from guideline_kg.reasoning.hermit import run_hermit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="validate the guideline graph (SHACL, consistency analysis) and patient cases",
                       description="Validate the guideline graph against shapes/*-shapes.ttl, run the checks of "
                                   "queries/checks/ (contradictions decided by HermiT, repetitions, content gaps, "
                                   "unsupported statements, dangling references, unreachable steps) and validate "
                                   "each CASE against the case shapes; a valid case is then evaluated and checked "
                                   "for applicable recommendations that pull in opposite directions. "
                                   "Exit 0 no violation, 1 a violation, 2 unreadable input.")
    p.add_argument("cases", nargs="*", type=Path, metavar="CASE",
                   help="patient case files (Turtle, JSON-LD, FHIR R4 Bundle) or folders of them")
    p.add_argument("--format", choices=["text", "json", "turtle"], default="text",
                   help="text for people (default), json for pipelines, turtle: the sh:ValidationReport")
    p.add_argument("--no-reasoner", action="store_true",
                   help="do not run HermiT: contradiction candidates are reported undecided (Warning)")
    p.add_argument("--sample", type=int, default=SAMPLE_SIZE, metavar="N",
                   help=f"patients drawn from the package's cohort profile (seed {SAMPLE_SEED}) on which statements "
                        f"reported as repetitions must get equal statuses, besides the example cases "
                        f"(default {SAMPLE_SIZE}; 0: the example cases only)")
    p.set_defaults(handler=run)


def _sample(project: Project, n: int) -> Graph | None:
    """``n`` valid patients drawn from the package's cohort profile (none without a profile)."""
    path = project.part("cohort_profile")
    if n <= 0 or path is None or not path.is_file():
        return None
    records = (r for r in generate(load_profile(path), n, SAMPLE_SEED) if r.defect is None)
    return Graph().parse(data="".join(record_to_ntriples(r) for r in records), format="nt")


def _validate_cases(gated: list[GateResult], knowledge: Graph, project: Project) -> tuple[ValidationResult, int]:
    """Every case through the gate (case shapes, then the fast path for a valid case); the applicable
    statements of each valid case are checked for conflicts."""
    result = ValidationResult()
    if not gated:
        return result, 0
    report_gate(gated, "not evaluated")
    for g in gated:
        result.extend(ValidationResult(g.findings(), [g.shacl_report()]))
        if g.result is not None:
            derived = results_graph([g.result], knowledge)
            result.findings += [replace(f, source=g.where) for f in check_case_results(knowledge, derived, project)]
    return result, len(gated)


def format_text(result: ValidationResult, cases: int) -> str:
    """Findings grouped by severity, most severe first, each with its kind, focus, source lines and message."""
    findings = sort_findings(result.findings)
    counts = {s: sum(1 for f in findings if f.severity == s) for s in SEVERITIES}
    out = [f"guideline-kg validate: {'CONFORMS' if result.conforms else 'DOES NOT CONFORM'} - "
           + ", ".join(f"{n} {s.lower()}{'s' if n != 1 and s != 'Info' else ''}" for s, n in counts.items())
           + f" (guideline graph and {cases} case{'s' if cases != 1 else ''})"]
    for severity in SEVERITIES:
        group = [f for f in findings if f.severity == severity]
        if not group:
            continue
        out.append(f"\n{severity} ({len(group)})")
        out += [_line(f) for f in group]
    return "\n".join(out)


def _line(f: Finding) -> str:
    lines = f" (line{'s' if len(f.source_lines) > 1 else ''} {', '.join(map(str, f.source_lines))})" \
        if f.source_lines else ""
    where = f" in {f.source}" if f.source and Path(f.source).suffix in (".ttl", ".jsonld", ".json", ".nt") else ""
    return f"  [{f.kind}] {f.focus or '-'}{lines}{where}: {f.message}"


def run(args: argparse.Namespace) -> int:
    project = project_of(args)
    knowledge = load_knowledge(project)
    # read by the gate before any check runs: no readable case at all fails here (exit 2); one unreadable file
    # among others is reported, the others are validated, and the run exits 2
    gated = Gate(knowledge, project).read(list(args.cases)) if args.cases else []
    result = validate_knowledge(knowledge, project, reasoner=None if args.no_reasoner else run_hermit,
                                sample=_sample(project, args.sample))
    cases, n_cases = _validate_cases(gated, knowledge, project)
    result.extend(cases)
    result.findings = sort_findings(result.findings)
    if args.format == "json":
        emit_json(result.to_json())
    elif args.format == "turtle":
        emit(report_graph(result).serialize(format="turtle"))
    else:
        emit(format_text(result, n_cases))
    if exit_code(gated) == EXIT_ERROR:
        return EXIT_ERROR
    return EXIT_OK if result.conforms else EXIT_FAILED
