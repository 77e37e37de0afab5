"""`guideline-kg query`: run SPARQL on the knowledge graph, patient cases and, on request, inferences."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any, BinaryIO, cast

from guideline_kg.checks.gate import exit_code
from guideline_kg.cli.common import add_store_arguments, emit, emit_json, note, project_of
from guideline_kg.core.errors import EXIT_OK, InputError
from guideline_kg.core.files import read_input_text
from guideline_kg.core.project import Project
from guideline_kg.core.queries import list_queries, load_query
from guideline_kg.outputs.dataset import load_into, query_data
from guideline_kg.store.results import SOLUTION_FORMATS, QueryTimeout, ResultTooLarge, write_streamed
from guideline_kg.store.stores import SparqlSyntaxError, open_store

FORMATS = ["table", *SOLUTION_FORMATS, "turtle", "nt", "jsonld", "rdfxml"]
#: Defaults of the bounds on one query (docs/querying.md, docs/security.md).
DEFAULT_TIMEOUT = 60.0
DEFAULT_LIMIT = 100_000


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, not {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, not {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("query", help="run a SPARQL query on the knowledge graph and cases",
                       description="Run a SPARQL 1.1 query (a file, the name of a query of queries/, or --query "
                                   "TEXT) on the knowledge graph plus the given cases. The project's prefixes "
                                   "(gk:, case:, result:, owl:, rdfs:, skos:, prov:, ..., and the guideline's own, "
                                   "from its manifest) are predeclared. "
                                   "--results adds the derivation results of the cases, --inferred HermiT's "
                                   "inferred rdf:type of every named individual. A case that fails the case "
                                   "shapes is left out (no facts, results or inferences) and its violations are "
                                   "reported. Results are written as they come; the query stops at --timeout "
                                   "seconds and at --limit results. Exit 0 answered, 1 answered without an "
                                   "invalid case, 2 bad query or input (syntax errors give line and column), "
                                   "time limit or result limit exceeded.")
    p.add_argument("query", nargs="?", metavar="QUERY",
                   help="an .rq file or the name of a query of queries/ or of the guideline's competency questions")
    p.add_argument("cases", nargs="*", type=Path, metavar="CASE", help="case files or folders to query with")
    p.add_argument("--query", dest="text", metavar="TEXT", help="the query text itself")
    p.add_argument("--list", action="store_true", help="list the named queries with their purpose")
    p.add_argument("--results", action="store_true",
                   help="add the derivation results (gk:RecommendationResult, fast path) of the cases")
    p.add_argument("--inferred", action="store_true",
                   help="add HermiT's inferred rdf:type triples for the named individuals (one reasoner run)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="table (default for SELECT/ASK), json, xml, csv, tsv; turtle (default for "
                        "CONSTRUCT/DESCRIBE), nt, jsonld, rdfxml")
    p.add_argument("--allow-service", action="append", default=[], metavar="URL",
                   help="let a SERVICE clause call this endpoint (repeatable; exact IRI). Without it every "
                        "SERVICE is refused before any connection (exit 2)")
    p.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"stop the query after this many seconds, exit 2 (default {DEFAULT_TIMEOUT:g}); with "
                        "--store, also the wait for each answer of the server")
    p.add_argument("--limit", type=_count, default=DEFAULT_LIMIT, metavar="N",
                   help=f"stop after N solutions or triples, exit 2 (default {DEFAULT_LIMIT}; 0: no limit); "
                        "the first N are written")
    add_store_arguments(p)
    p.set_defaults(handler=run)


class _Output(io.RawIOBase):
    """Standard output that remembers whether the last byte written ended a line."""

    def __init__(self, out: BinaryIO) -> None:
        super().__init__()
        self._out, self.ends_line = out, True

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        if chunk:
            self._out.write(chunk)
            self.ends_line = chunk.endswith(b"\n")
        return len(chunk)

    def flush(self) -> None:
        self._out.flush()


def _relative(path: Path, project: Project) -> str:
    """A named query's path: relative to queries/, or to the project home (the package's competency questions)."""
    for base in (project.queries_dir, project.home):
        if path.is_relative_to(base):
            return str(path.relative_to(base))
    return str(path)


def _list(args: argparse.Namespace) -> int:
    project = project_of(args)
    named = list_queries(project.query_folders())
    if args.format == "json":
        emit_json([{"name": q.name, "path": _relative(q.path, project), "purpose": q.purpose}
                   for q in named])
        return EXIT_OK
    width = max((len(q.name) for q in named), default=0)
    for q in named:
        emit(f"{q.name.ljust(width)}  {q.purpose}")
    return EXIT_OK


def _query_text(args: argparse.Namespace) -> tuple[str, str]:
    """The query text and where it came from (for messages)."""
    project = project_of(args)
    if args.text is not None:
        if args.query is not None:  # with --query, every positional argument is a case
            args.cases.insert(0, Path(args.query))
        return args.text, "--query"
    if args.query is None:
        raise InputError("give a query: an .rq file, the name of a query of queries/ or of the guideline's competency "
                         "questions (see --list), "
                         "or --query TEXT")
    path = Path(args.query)
    if path.suffix == ".rq" and not path.exists():
        raise InputError("no such file", path=str(path))
    if path.exists() and not path.is_file():
        raise InputError("not a regular file (a folder, device or pipe is not a query)", path=str(path))
    if path.suffix == ".rq" or path.is_file():
        try:  # a regular file within the input size limit (never a FIFO or an endless device), UTF-8
            return read_input_text(path), str(path)
        except OSError as exc:
            raise InputError(f"cannot read the query: {exc}", path=str(path)) from None
    named = load_query(project.query_folders(), args.query)
    return named.text, str(named.path)


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list(args)
    text, origin = _query_text(args)
    project = project_of(args)
    data = query_data(project, args.cases, results=args.results, inferred=args.inferred)
    for n in data.notes:
        note(n)
    if args.inferred:
        note(f"HermiT: {data.inferred} inferred rdf:type triples added")
    store = open_store(args.store, args.store_data, timeout=args.timeout)
    store.allowed_services = frozenset(args.allow_service)
    load_into(store, data)
    limit = args.limit or None
    out = _Output(sys.stdout.buffer)
    try:
        write_streamed(lambda: store.streaming(text), args.format, cast(BinaryIO, out), timeout=args.timeout,
                       limit=limit)
        if not out.ends_line:  # JSON and XML documents end without one; a terminal prompt follows
            out.write(b"\n")
            out.flush()
    except SparqlSyntaxError as exc:
        raise SparqlSyntaxError(str(exc), path=origin) from None
    except QueryTimeout as exc:
        raise QueryTimeout(f"{exc}; narrow the query or give a larger --timeout", path=origin) from None
    except ResultTooLarge as exc:
        what = "triples" if "triple" in str(exc) else "solutions"
        shown = f"the first {exc.written} were written; " if exc.written else ""
        raise ResultTooLarge(f"the result has more than {args.limit} {what} (--limit {args.limit}): stopped; "
                             f"{shown}add LIMIT to the query, or give a larger --limit (0: no limit)",
                             path=origin) from None
    except InputError as exc:
        if exc.path is None and str(exc).startswith("--format"):  # a format that does not fit the result
            raise InputError(str(exc), path=origin) from None
        raise
    return exit_code(data.invalid)  # 2 if a case file was unreadable (reported above), 1 if a case is invalid
