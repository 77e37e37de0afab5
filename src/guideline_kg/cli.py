"""The `guideline-kg` command line: one console script, subcommands, exit codes 0 pass / 1 fail / 2 error.

Each subcommand lives in a module of :mod:`guideline_kg.commands` that defines
``register(subparsers)``; this module finds them, parses the arguments and turns errors into exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import EXIT_ERROR, EXIT_OK, GuidelineKGError
from .project import Project

__all__ = ["main", "build_parser", "emit", "emit_json", "note", "project_of", "split_valid_cases", "add_store_arguments", "store_of"]


def emit(text: str) -> None:
    """Write to stdout, ending with a newline."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def note(text: str) -> None:
    """A message for people, on stderr (stdout stays clean for pipelines)."""
    sys.stderr.write(text + "\n")


def emit_json(data: Any) -> None:
    """Pretty JSON on stdout."""
    emit(json.dumps(data, indent=2, ensure_ascii=False))


def split_valid_cases(cases: list, project: Project, consequence: str) -> tuple[list, list]:
    """Validate each case against the case shapes (compiled engine); report its notes and, for an invalid
    case, its violations on stderr (``consequence`` says what the case does not get). Returns (valid, invalid)."""
    from .validate import validate_case

    valid, invalid = [], []
    for case in cases:
        for n in case.notes:
            note(f"{case.name}: {n}")
        violations = [f for f in validate_case(case.graph, project, engine="compiled") if f.severity == "Violation"]
        if violations:
            invalid.append(case)
            note(f"{case.name}: INVALID case, {consequence}:")
            for f in violations:
                note(f"  - {f.focus}: {f.message}")
        else:
            valid.append(case)
    return valid, invalid


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
    from .store import open_store

    return open_store(getattr(args, "store", None), getattr(args, "store_data", None))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand of :mod:`guideline_kg.commands`."""
    from . import __version__, commands

    parser = argparse.ArgumentParser(
        prog="guideline-kg",
        description="A clinical guideline as an OWL 2 / SHACL / SPARQL knowledge graph: build, validate, "
                    "recommend, query, render, export, serve.",
        epilog="Exit codes: 0 pass, 1 a check or validation failed, 2 bad input or error.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--home", type=Path, help="project root holding ontology/, kg/, shapes/, queries/ "
                        "(default: $GUIDELINE_KG_HOME or this checkout)")
    parser.add_argument("--ontology", type=Path, help="folder of ontology Turtle files (default: HOME/ontology)")
    parser.add_argument("--kg", type=Path, help="folder of guideline content Turtle files (default: HOME/kg)")
    parser.add_argument("--shapes", type=Path, help="folder of SHACL shapes (default: HOME/shapes)")
    parser.add_argument("--queries", type=Path, help="folder of SPARQL queries (default: HOME/queries)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        return int(args.handler(args))
    except GuidelineKGError as exc:
        note(f"guideline-kg {args.command}: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        note("guideline-kg: interrupted")
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_OK
    except OSError as exc:  # an output folder that cannot be made, a file that cannot be written
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        note(f"guideline-kg {args.command}: error: {where}{exc.strerror or exc}")
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
