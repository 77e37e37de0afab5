"""Helpers every subcommand shares: output on stdout/stderr, the project and store the global options name."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from guideline_kg.checks.gate import GateResult
from guideline_kg.core.errors import InputError, printable
from guideline_kg.core.files import overlapping_input
from guideline_kg.core.project import Project
from guideline_kg.store.stores import open_store

__all__ = [
    "add_store_arguments",
    "emit",
    "emit_json",
    "note",
    "project_inputs",
    "project_of",
    "refuse_overwriting_inputs",
    "report_gate",
    "store_of",
]


def emit(text: str) -> None:
    """Write to stdout, ending with a newline (a file name's bytes that are not UTF-8 as ``\\xff`` escapes)."""
    text = printable(text)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def note(text: str) -> None:
    """A message for people, on stderr (stdout stays clean for pipelines)."""
    sys.stderr.write(printable(text) + "\n")


def emit_json(data: Any) -> None:
    """Pretty JSON on stdout (ASCII escapes when a value holds what UTF-8 cannot write, so it stays JSON)."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if printable(text) != text:
        text = json.dumps(data, indent=2)
    emit(text)


def report_gate(results: list[GateResult], consequence: str) -> list[GateResult]:
    """Write each case's reader notes and, for each case the gate refused, its file and every violation on
    stderr (``consequence`` says what the case does not get). Returns the invalid ones."""
    for r in results:
        for n in r.notes:
            note(f"{r.name}: {n}")
    invalid = [r for r in results if not r.valid]
    for r in invalid:
        for line in r.report(consequence):
            note(line)
    return invalid


def project_of(args: argparse.Namespace) -> Project:
    """The project the global options point at."""
    return Project.at(args.home, ontology=args.ontology, kg=args.kg, shapes=args.shapes, queries=args.queries)


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """The --store URL / --store-data URL options of commands that can run on an external SPARQL server."""
    parser.add_argument("--store", metavar="URL", help="run on this SPARQL 1.1 server (its query endpoint; "
                        "e.g. http://127.0.0.1:7878 for Oxigraph) instead of the embedded store")
    parser.add_argument("--store-data", metavar="URL", help="the server's Graph Store Protocol endpoint for "
                        "loading (default for Oxigraph: .../store); see docs/querying.md for other servers")


def store_of(args: argparse.Namespace) -> Any:
    """The store the --store options name: a RemoteStore, or a new embedded store."""
    return open_store(getattr(args, "store", None), getattr(args, "store_data", None))


def project_inputs(project: Project) -> list[Path]:
    """The folders every command reads: ontology, shapes, queries and the guideline package."""
    return [project.ontology_dir, project.shapes_dir, project.queries_dir, project.package_dir]


def refuse_overwriting_inputs(out: Path | str | None, inputs: Iterable[Path | str], option: str = "--out") -> None:
    """InputError (exit 2), before anything is written, when ``out`` is one of ``inputs``, inside an input
    folder, or an input folder itself. ``None`` and ``-`` (standard output) are always safe."""
    if out is None or str(out) == "-":
        return
    hit = overlapping_input(out, inputs)
    if hit is not None:
        same = Path(out).resolve() == hit.resolve()
        where = "is the input" if same else "lies in the input folder"
        raise InputError(f"{option} {out} {where} {hit}; inputs are never written: choose another output")
