"""`guideline-kg reference`: the Markdown ontology reference, generated from the ontology itself."""

from __future__ import annotations

import argparse
from pathlib import Path

from guideline_kg.cli.common import emit, note, project_inputs, project_of, refuse_overwriting_inputs
from guideline_kg.core.errors import EXIT_FAILED, EXIT_OK
from guideline_kg.core.files import write_atomic
from guideline_kg.outputs.reference import load_ontology, ontology_reference


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reference", help="generate the Markdown reference of the ontology",
                       description="Generate a Markdown reference of the ontology (ontology/*.ttl): the class "
                                   "hierarchy, every class, property (with domain and range) and individual "
                                   "(grouped by class) with label, definition, notation and CPG-on-FHIR "
                                   "correspondence. Exit 0 written (or, with --check, up to date), 1 --check "
                                   "found FILE out of date, 2 unreadable input.")
    p.add_argument("--out", type=Path, metavar="FILE", help="write to FILE (default: standard output)")
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if FILE (--out) differs")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    project = project_of(args)
    if not args.check:
        refuse_overwriting_inputs(args.out, project_inputs(project))
    text = ontology_reference(load_ontology(project))
    if args.check:
        if args.out is None:
            note("guideline-kg reference: error: --check needs --out FILE")
            return 2
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else None
        if current != text:
            note(f"{args.out}: out of date with the ontology; run: guideline-kg reference --out {args.out}")
            return EXIT_FAILED
        note(f"{args.out}: up to date")
        return EXIT_OK
    if args.out is None:
        emit(text)
        return EXIT_OK
    write_atomic(args.out, text)
    note(f"wrote {args.out}")
    return EXIT_OK
