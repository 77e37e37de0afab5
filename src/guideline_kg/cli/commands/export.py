"""`guideline-kg export`: the pathway for other systems (FHIR CPG, CarePlan, CDS Hooks cards, RDF, graphs, CSV)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from guideline_kg.cases.fhir_in import is_fhir_bundle
from guideline_kg.checks.gate import Gate
from guideline_kg.cli.common import emit, note, project_inputs, project_of, refuse_overwriting_inputs, report_gate
from guideline_kg.core.errors import EXIT_ERROR, EXIT_FAILED, EXIT_OK, InputError
from guideline_kg.core.files import load_json, read_input, write_atomic
from guideline_kg.core.project import Project
from guideline_kg.knowledge.algorithm import build_graph
from guideline_kg.knowledge.graph import load_knowledge
from guideline_kg.outputs.cds_cards import cards_for
from guideline_kg.outputs.export import RDF_FORMATS, csv_tables, rdf_export, write_text
from guideline_kg.outputs.fhir_cpg import (
    Pathway,
    careplan,
    careplan_bundle,
    compile_applicability,
    compile_cql,
    fhir_package,
    input_patient,
    pathway_bundle,
    read_pathway,
    validate_resource,
)
from guideline_kg.outputs.render import render
from guideline_kg.store.stores import EmbeddedStore

CASE_FORMATS = ("careplan", "cds-cards")
FORMATS = ("fhir", "fhir-package", "careplan", "cds-cards", "turtle", "ntriples", "rdfxml", "jsonld", "graphml",
           "cytoscape", "csv")
EXTENSIONS = {"fhir": ".json", "fhir-package": ".tgz", "careplan": ".json", "cds-cards": ".json",
              "graphml": ".graphml", "cytoscape": ".cyjs", **{k: v[1] for k, v in RDF_FORMATS.items()}}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export the pathway: FHIR CPG, CarePlan, CDS Hooks cards, RDF, GraphML, Cytoscape, CSV",
        description="Write the knowledge graph for other systems, everything read through queries/export-*.rq. "
                    "fhir: a transaction Bundle of CPG-on-FHIR PlanDefinitions and ActivityDefinitions; "
                    "fhir-package (needs --out FILE.tgz): the same resources as a FHIR NPM package; "
                    "careplan / cds-cards (need --case): a case's applicable recommendations as an R4 CarePlan or "
                    "CDS Hooks patient-view cards; turtle, ntriples, rdfxml, jsonld: the whole graph; graphml, "
                    "cytoscape: the algorithm graph; csv (needs --out DIR): nodes.csv and edges.csv for "
                    "neo4j-admin import. Output goes to stdout, or to --out (a file; a folder for csv or several "
                    "cases). Exit 0 written, 1 a case fails validation or a FHIR resource fails its model, "
                    "2 bad input or error (nothing is written then).")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--case", type=Path, action="append", metavar="CASE",
                   help="case file or folder (careplan, cds-cards); repeatable")
    p.add_argument("--out", type=Path, metavar="FILE|DIR", help="output file (or folder) instead of stdout")
    p.add_argument("--jsonld-context", metavar="URL",
                   help="jsonld: refer to the context by this URL instead of embedding the guideline package's "
                        "context (guideline.toml [parts] jsonld_context)")
    p.add_argument("--reasoner", choices=["fast", "hermit"], default="fast",
                   help="careplan, cds-cards: derivation path (default fast)")
    p.set_defaults(handler=run)


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _check_args(args: argparse.Namespace) -> None:
    if args.format in CASE_FORMATS and not args.case:
        raise InputError(f"--format {args.format} needs --case CASE (a case file or folder)")
    if args.format not in CASE_FORMATS and args.case:
        raise InputError(f"--case applies to careplan and cds-cards only, not to --format {args.format}")
    if args.format == "csv" and args.out is None:
        raise InputError("--format csv writes two tables (nodes.csv, edges.csv): give --out DIR")
    if args.format == "fhir-package" and (args.out is None or args.out.is_dir()):
        raise InputError("--format fhir-package writes a .tgz archive: give --out FILE.tgz")
    if args.jsonld_context and args.format != "jsonld":
        raise InputError("--jsonld-context applies to --format jsonld only")
    refuse_overwriting_inputs(args.out, [*project_inputs(project_of(args)), *(args.case or [])])


def _valid(resource: dict[str, Any]) -> list[str]:
    """The validation message of a FHIR resource (empty when valid)."""
    try:
        validate_resource(resource)
    except InputError as exc:
        return [str(exc)]
    return []


def _cases(args: argparse.Namespace, project: Project, knowledge: Any) -> tuple[list[Any], list[Any], list[str]]:
    """Each case through the gate: the derivations of the valid ones and their sources; one problem per invalid
    case or unreadable case file (their files, violations and read errors are reported on stderr)."""
    gated = Gate(knowledge, project).read(args.case, reasoner=args.reasoner)
    invalid = report_gate(gated, "nothing exported for it")
    valid = [g for g in gated if g.result is not None]
    return [g.result for g in valid], [g.source for g in valid], \
        [f"{g.name}: {'case file unreadable' if g.unreadable else 'case fails validation'}" for g in invalid]


def _input_patient(source: Path | None) -> dict[str, str] | None:
    """The Patient reference of a FHIR case file (the case file named on the command line, read again); None for
    Turtle and JSON-LD cases (their CarePlan contains a Patient carrying the case's patient IRI)."""
    if source is None or source.suffix.lower() != ".json":
        return None
    data = load_json(read_input(source), source)
    return input_patient(data) if is_fhir_bundle(data) else None


def _outputs(args: argparse.Namespace, project: Project) -> tuple[dict[str, str], list[str]]:
    """Every output (name -> text) and every failure message, computed before anything is written."""
    knowledge = load_knowledge(project)
    store = EmbeddedStore.from_graph(knowledge)
    fmt = args.format
    if fmt in RDF_FORMATS:
        return {"": rdf_export(knowledge, project, fmt, args.jsonld_context)}, []
    if fmt == "csv":
        return csv_tables(store, project), []
    if fmt in ("graphml", "cytoscape"):
        algorithm = project.require("algorithm", f"`export --format {fmt}`")
        graph = build_graph(knowledge, project)
        if len(graph) == 0:
            raise InputError("the treatment algorithm has no gk:Transition", path=str(algorithm))
        return {"": render(graph, fmt).decode("utf-8")}, []
    if fmt == "fhir":
        bundle = pathway_bundle(store, project, _compiled_pathway(store, knowledge, project))
        problems = [m for e in bundle["entry"] for m in _valid(e["resource"])] + _valid(bundle)
        return {"": _json(bundle)}, problems
    results, sources, problems = _cases(args, project, knowledge)
    outputs: dict[str, str] = {}
    if not results:  # every case refused by the gate: nothing at all, not an empty Bundle
        return outputs, problems
    if fmt == "careplan":
        pathway = read_pathway(store, project)
        plans = [careplan(r, pathway, _input_patient(s)) for r, s in zip(results, sources, strict=True)]
        for plan in plans:
            problems += _valid(plan)
        if len(plans) == 1:
            outputs[results[0].case] = _json(plans[0])
        else:
            outputs.update({r.case: _json(pl) for r, pl in zip(results, plans, strict=True)})
            outputs[""] = _json(careplan_bundle(plans, pathway))
    else:
        docs = {r.case: cards_for(r, knowledge, project) for r in results}
        outputs.update({name: _json(d) for name, d in docs.items()})
        if len(docs) != 1:
            outputs[""] = _json({"cases": [{"case": n, **d} for n, d in docs.items()]})
    return outputs, problems


def _compiled_pathway(store: EmbeddedStore, knowledge: Any, project: Project) -> Pathway:
    """The pathway with its applicability conditions compiled to FHIRPath (the expressions `$apply` runs); when
    the compiler cannot, the interim ``{}`` conditions stay and a note says why."""
    pathway = read_pathway(store, project)
    why = compile_applicability(pathway, knowledge, project)
    if why is not None:
        note(f"applicability conditions left as the interim {{}} (undetermined): {why}")
    why = compile_cql(pathway, knowledge, project)
    if why is not None:
        note(f"no CQL Library exported: {why}")
    return pathway


def _package(args: argparse.Namespace, project: Project) -> int:
    """``--format fhir-package``: the pathway's resources, validated, as a FHIR NPM package (.tgz)."""
    knowledge = load_knowledge(project)
    store = EmbeddedStore.from_graph(knowledge)
    pathway = _compiled_pathway(store, knowledge, project)
    bundle = pathway_bundle(store, project, pathway)
    problems = [m for e in bundle["entry"] for m in _valid(e["resource"])]
    if problems:
        for p in problems:
            note(f"FHIR validation failed: {p}")
        note("nothing written")
        return EXIT_FAILED
    note(f"wrote {write_atomic(args.out, fhir_package(bundle, pathway))}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    project = project_of(args)
    if args.format == "fhir-package":
        return _package(args, project)
    outputs, problems = _outputs(args, project)
    fatal = [p for p in problems if "fails validation" not in p and "case file unreadable" not in p]
    failed = EXIT_ERROR if any("case file unreadable" in p for p in problems) else EXIT_FAILED
    if fatal:
        for p in fatal:
            note(f"FHIR validation failed: {p}")
        note("nothing written")
        return EXIT_FAILED
    ext = EXTENSIONS.get(args.format, "")
    if args.format == "csv" or (args.format in CASE_FORMATS and len(outputs) > 1 and args.out is not None
                                and args.out.suffix == ""):
        # a folder: one file per table or per case
        for name, text in outputs.items():
            if name:
                path = write_text(args.out / (name if args.format == "csv" else f"{name}.{args.format}{ext}"), text)
                note(f"wrote {path}")
    else:
        single = outputs.get("") if "" in outputs else next(iter(outputs.values()), None)
        if single is None:
            note("no valid case: nothing to export")
            return failed
        if args.out is None:
            emit(single.rstrip("\n"))
        else:
            name = next((n for n in outputs if n), "") if len(outputs) == 1 else ""
            target = args.out / f"{name or 'export'}{ext}" if args.out.is_dir() else args.out
            note(f"wrote {write_text(target, single)}")
    return failed if problems else EXIT_OK
