"""The `guideline-kg` command line: one console script, subcommands, exit codes 0 pass / 1 fail / 2 error.

Each subcommand lives in a module of :mod:`guideline_kg.commands` that defines
``register(subparsers)``; this module finds them, parses the arguments and turns errors into exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from guideline_kg import __version__
from guideline_kg.cli import commands
from guideline_kg.cli.common import note
from guideline_kg.core.errors import EXIT_ERROR, EXIT_OK, GuidelineKGError
from guideline_kg.core.files import DEFAULT_MAX_INPUT_SIZE, max_input_size, parse_size, set_max_input_size

__all__ = ["DEBUG_VARIABLE", "build_parser", "main"]

#: Set to 1 to get the traceback of an internal error (for a bug report) after its one-line message.
DEBUG_VARIABLE = "GUIDELINE_KG_DEBUG"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand of :mod:`guideline_kg.commands`."""

    parser = argparse.ArgumentParser(
        prog="guideline-kg",
        description="A clinical guideline as an OWL 2 / SHACL / SPARQL knowledge graph: build, validate, "
                    "recommend, query, render, export, serve.",
        epilog="Exit codes: 0 pass, 1 a check or validation failed, 2 bad input or error.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--home", type=Path, help="project root holding ontology/, shapes/, queries/ and guidelines/ "
                        "(default: $GUIDELINE_KG_HOME or this checkout)")
    parser.add_argument("--ontology", type=Path, help="folder of ontology Turtle files (default: HOME/ontology)")
    parser.add_argument("--kg", type=Path, help="a guideline package folder, its parts named by its guideline.toml "
                        "(default: the one package under HOME/guidelines/; docs/guideline-package.md)")
    parser.add_argument("--shapes", type=Path, help="folder of SHACL shapes (default: HOME/shapes)")
    parser.add_argument("--queries", type=Path, help="folder of SPARQL queries (default: HOME/queries)")
    parser.add_argument("--max-input-size", type=_size, default=DEFAULT_MAX_INPUT_SIZE, metavar="SIZE",
                        help="refuse an input file larger than this before reading it (e.g. 100MB, 2G, 512KiB; 0: no "
                        f"limit; default {DEFAULT_MAX_INPUT_SIZE // 10**6} MB). Cohort files are streamed: the limit "
                        "applies to each of their records. Devices and FIFOs are always refused.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _exit_code(exc: BaseException, command: str) -> int:
    """The one-line message (on stderr) and exit code of a failure of ``command``; never a traceback, except
    for an internal error when $GUIDELINE_KG_DEBUG is 1."""
    prefix = f"guideline-kg {command}"
    if isinstance(exc, GuidelineKGError):
        note(f"{prefix}: error: {exc}")
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        note("guideline-kg: interrupted")
        return EXIT_ERROR
    if isinstance(exc, BrokenPipeError):
        return EXIT_OK
    if isinstance(exc, OSError):  # an output folder that cannot be made, a file that cannot be written
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        note(f"{prefix}: error: {where}{exc.strerror or exc}")
        return EXIT_ERROR
    if isinstance(exc, RecursionError):  # a reader that let a deeply nested input through
        note(f"{prefix}: error: an input is nested too deeply (arrays, objects or brackets inside each other "
             "beyond the parser's limit)")
        return EXIT_ERROR
    if os.environ.get(DEBUG_VARIABLE) == "1":
        traceback.print_exception(exc)
    message = re.sub(r"\s+", " ", str(exc)).strip()[:500]
    note(f"{prefix}: internal error: {type(exc).__name__}: {message} (please report)")
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    previous = max_input_size()
    set_max_input_size(args.max_input_size)
    try:
        return int(args.handler(args))
    except (Exception, KeyboardInterrupt) as exc:  # every failure: one line and an exit code
        return _exit_code(exc, args.command)
    finally:
        set_max_input_size(previous)  # for callers that run main() in-process (tests)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
