"""SPARQL results in standard formats: one materialised form, serialised by pyoxigraph's own writers.

A query result is materialised once into :class:`QueryResult` (SPARQL JSON bytes for SELECT and ASK,
N-Triples bytes for CONSTRUCT and DESCRIBE), with an optional size limit checked while the solutions are
read. Every other format (XML, CSV, TSV; Turtle, RDF/XML, JSON-LD) is written from it by pyoxigraph, so
the command line, the HTTP endpoint and the remote store all give byte-identical standard results.

The command line streams instead (:func:`write_streamed`): solutions are written as they come, in small chunks
that pyoxigraph's own writers serialise (so the bytes are those of :func:`serialise`), memory bounded by a chunk,
with a result limit and a time limit. The query runs in a worker thread (a running pyoxigraph query cannot be
interrupted, but it releases the GIL): when the time is up the caller stops waiting and raises
:class:`QueryTimeout`; the abandoned thread ends with the process.
"""

from __future__ import annotations

import contextlib
import io
import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import pyoxigraph as ox

from guideline_kg.core.errors import InputError
from guideline_kg.core.namespaces import PREFIXES

__all__ = [
    "GRAPH_FORMATS",
    "MEDIA_TYPES",
    "SOLUTION_FORMATS",
    "QueryResult",
    "QueryTimeout",
    "ResultTooLarge",
    "compact",
    "materialise",
    "serialise",
    "table",
    "write_result",
    "write_streamed",
]

#: Result formats for SELECT and ASK (name -> pyoxigraph format).
SOLUTION_FORMATS: dict[str, ox.QueryResultsFormat] = {
    "json": ox.QueryResultsFormat.JSON,
    "xml": ox.QueryResultsFormat.XML,
    "csv": ox.QueryResultsFormat.CSV,
    "tsv": ox.QueryResultsFormat.TSV,
}
#: RDF syntaxes for CONSTRUCT and DESCRIBE (name -> pyoxigraph format).
GRAPH_FORMATS: dict[str, ox.RdfFormat] = {
    "turtle": ox.RdfFormat.TURTLE,
    "nt": ox.RdfFormat.N_TRIPLES,
    "jsonld": ox.RdfFormat.JSON_LD,
    "rdfxml": ox.RdfFormat.RDF_XML,
}
#: Media type of each format name (``table`` is text for people).
MEDIA_TYPES: dict[str, str] = {
    **{k: v.media_type.split(";")[0] for k, v in SOLUTION_FORMATS.items()},
    **{k: v.media_type.split(";")[0] for k, v in GRAPH_FORMATS.items()},
    "table": "text/plain",
}


class ResultTooLarge(InputError):
    """A result with more solutions or triples than the configured limit (``limit``, when known; ``written``:
    how many were written before the stop, when streaming)."""

    limit: int | None = None
    written: int = 0


class QueryTimeout(InputError):
    """A query that did not finish within the configured time limit."""


@dataclass(frozen=True)
class QueryResult:
    """A materialised result: ``kind`` is ``solutions``, ``boolean`` or ``graph``; ``data`` is SPARQL JSON
    (solutions, boolean) or N-Triples (graph); ``count`` is the number of solutions or triples."""

    kind: str
    data: bytes
    count: int

    def solutions(self) -> ox.QuerySolutions | ox.QueryBoolean:
        """The solutions (or boolean) parsed back by pyoxigraph."""
        return ox.parse_query_results(self.data, ox.QueryResultsFormat.JSON)

    def solution_rows(self) -> ox.QuerySolutions:
        """The solutions of a SELECT result (InputError for any other kind)."""
        parsed = self.solutions()
        if not isinstance(parsed, ox.QuerySolutions):
            raise InputError(f"expected the solutions of a SELECT query, not a {self.kind} result")
        return parsed

    def boolean(self) -> bool:
        """The answer of an ASK result (InputError for any other kind)."""
        parsed = self.solutions()
        if not isinstance(parsed, ox.QueryBoolean):
            raise InputError(f"expected the answer of an ASK query, not a {self.kind} result")
        return bool(parsed)

    def triples(self) -> list[ox.Triple]:
        """The triples of a graph result."""
        return list(ox.parse(self.data, ox.RdfFormat.N_TRIPLES))


def _term_json(term: Any) -> dict[str, str]:
    if isinstance(term, ox.NamedNode):
        return {"type": "uri", "value": term.value}
    if isinstance(term, ox.BlankNode):
        return {"type": "bnode", "value": term.value}
    if isinstance(term, ox.Literal):
        out = {"type": "literal", "value": term.value}
        if term.language:
            out["xml:lang"] = term.language
        elif term.datatype.value != "http://www.w3.org/2001/XMLSchema#string":
            out["datatype"] = term.datatype.value
        return out
    raise InputError(f"unsupported term in a result: {term!r}")


def _too_large(limit: int, what: str, written: int = 0) -> ResultTooLarge:
    err = ResultTooLarge(f"the result has more than {limit} {what} (the limit); add LIMIT to the query "
                         "or raise the limit")
    err.limit, err.written = limit, written
    return err


def materialise(raw: Any, limit: int | None = None) -> QueryResult:
    """Read a pyoxigraph result (solutions, boolean or triples) into a :class:`QueryResult`, stopping with
    :class:`ResultTooLarge` as soon as more than ``limit`` solutions or triples have been read."""
    if isinstance(raw, ox.QueryBoolean):
        return QueryResult("boolean", json.dumps({"head": {}, "boolean": bool(raw)}, separators=(",", ":")).encode(),
                           1)
    if isinstance(raw, ox.QuerySolutions):
        names = [v.value for v in raw.variables]
        bindings: list[dict[str, dict[str, str]]] = []
        for solution in raw:
            if limit is not None and len(bindings) >= limit:
                raise _too_large(limit, "solutions")
            bindings.append({n: _term_json(solution[n]) for n in names if solution[n] is not None})
        return QueryResult("solutions", _solutions_doc(names, bindings), len(bindings))
    triples: list[ox.Triple] = []
    for t in raw:
        if limit is not None and len(triples) >= limit:
            raise _too_large(limit, "triples")
        triples.append(t if isinstance(t, ox.Triple) else ox.Triple(t.subject, t.predicate, t.object))
    return QueryResult("graph", _write_rdf(triples, ox.RdfFormat.N_TRIPLES), len(triples))


def _write_rdf(triples: list[ox.Triple], fmt: ox.RdfFormat, prefixes: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    ox.serialize(triples, buffer, format=fmt, prefixes=prefixes)
    return buffer.getvalue()


def serialise(result: QueryResult, fmt: str) -> bytes:
    """``result`` in format ``fmt`` (a key of SOLUTION_FORMATS, GRAPH_FORMATS, or ``table``)."""
    if fmt == "table":
        return table(result).encode("utf-8")
    if result.kind == "graph":
        if fmt not in GRAPH_FORMATS:
            raise InputError(f"a CONSTRUCT or DESCRIBE result is a graph: choose one of "
                             f"{', '.join(GRAPH_FORMATS)} or table, not {fmt}")
        if fmt == "nt":
            return result.data
        prefixes = {p: str(ns) for p, ns in PREFIXES.items()}
        return _write_rdf(result.triples(), GRAPH_FORMATS[fmt], prefixes)
    if fmt not in SOLUTION_FORMATS:
        raise InputError(f"a SELECT or ASK result is a table of solutions: choose one of "
                         f"{', '.join(SOLUTION_FORMATS)} or table, not {fmt}")
    if fmt == "json":
        return result.data
    buffer = io.BytesIO()
    result.solutions().serialize(buffer, format=SOLUTION_FORMATS[fmt])
    return buffer.getvalue()


def compact(term: Any) -> str:
    """A readable form of a pyoxigraph term: prefixed names, literal values, ``_:`` blank nodes."""
    if term is None:
        return ""
    if isinstance(term, ox.NamedNode):
        for prefix, ns in PREFIXES.items():
            if term.value.startswith(str(ns)) and "/" not in term.value[len(str(ns)):]:
                return f"{prefix}:{term.value[len(str(ns)):]}"
        return f"<{term.value}>"
    if isinstance(term, ox.BlankNode):
        return f"_:{term.value}"
    if isinstance(term, ox.Literal):
        return term.value + (f"@{term.language}" if term.language else "")
    return str(term)


def table(result: QueryResult, width: int = 80) -> str:
    """A text table for people: one column per variable, cells cut at ``width`` characters."""
    if result.kind == "boolean":
        return "true" if result.boolean() else "false"
    if result.kind == "graph":
        rows = [tuple(compact(x) for x in (t.subject, t.predicate, t.object)) for t in result.triples()]
        header = ["subject", "predicate", "object"]
        noun = "triple"
    else:
        solutions = result.solution_rows()
        header = [v.value for v in solutions.variables]
        rows = [tuple(compact(s[n]) for n in header) for s in solutions]
        noun = "solution"
    rows = [tuple(c.replace("\n", " ")[:width] for c in r) for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    out = [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]
    out.append(f"({len(rows)} {noun}{'' if len(rows) == 1 else 's'})")
    return "\n".join(out)


#: Solutions per chunk handed to pyoxigraph's writers when streaming (a chunk is also written when a solution
#: comes CHUNK_SECONDS after the last write, and the first solution is written at once).
CHUNK_ROWS = 1000
CHUNK_SECONDS = 0.2
# What follows the solutions in each format's document (TSV and CSV have no footer).
_FOOTERS = {"json": b"]}}", "xml": b"</results></sparql>", "csv": b"", "tsv": b""}


def _solutions_doc(names: list[str], bindings: list[dict[str, dict[str, str]]]) -> bytes:
    doc = {"head": {"vars": names}, "results": {"bindings": bindings}}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _written_by_pyoxigraph(names: list[str], bindings: list[dict[str, dict[str, str]]], fmt: str) -> bytes:
    """The document pyoxigraph writes in ``fmt`` for these solutions."""
    parsed = ox.parse_query_results(_solutions_doc(names, bindings), ox.QueryResultsFormat.JSON)
    assert isinstance(parsed, ox.QuerySolutions)
    return parsed.serialize(format=SOLUTION_FORMATS[fmt]) or b""


class _Chunks(io.RawIOBase):
    """A binary file whose writes go to ``write`` (pyoxigraph's RDF writers stream into it)."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        super().__init__()
        self._write = write

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        if chunk:
            self._write(chunk)
        return len(chunk)


def write_result(raw: Any, fmt: str | None, write: Callable[[bytes], None], limit: int | None = None) -> int:
    """Write a pyoxigraph result (solutions, boolean or triples) in format ``fmt`` (None: ``table`` for
    solutions and booleans, ``turtle`` for graphs) through ``write``, as the solutions or triples come.

    Returns how many solutions or triples were written. More than ``limit`` of them: the first ``limit`` are
    written, then ResultTooLarge. A format that does not fit the result's kind is an InputError before anything
    is written. ``table`` needs every row for its widths: it is built whole (at most ``limit`` rows)."""
    kind = "boolean" if isinstance(raw, ox.QueryBoolean) else "solutions" if isinstance(raw, ox.QuerySolutions) \
        else "graph"
    fmt = fmt or ("turtle" if kind == "graph" else "table")
    if (fmt in GRAPH_FORMATS and kind != "graph") or (fmt in SOLUTION_FORMATS and kind == "graph"):
        raise InputError(f"--format {fmt} does not fit a {'graph' if kind == 'graph' else 'SELECT/ASK'} result")
    if fmt == "table":
        whole = materialise(raw, limit)
        write(table(whole).encode("utf-8") + b"\n")
        return whole.count
    if kind == "boolean":
        write(raw.serialize(format=SOLUTION_FORMATS[fmt]) or b"")
        return 1
    if kind == "graph":
        n = 0

        def counted(items: Any) -> Any:  # the triples, ResultTooLarge beyond the limit
            nonlocal n
            for t in items:
                if limit is not None and n >= limit:
                    raise _too_large(limit, "triples", n)
                n += 1
                yield t if isinstance(t, ox.Triple) else ox.Triple(t.subject, t.predicate, t.object)
        prefixes = None if fmt == "nt" else {p: str(ns) for p, ns in PREFIXES.items()}
        with _Chunks(write) as out:
            ox.serialize(counted(raw), cast(BinaryIO, out), format=GRAPH_FORMATS[fmt], prefixes=prefixes)
        return n
    names = [v.value for v in raw.variables]
    footer = _FOOTERS[fmt]
    empty = _written_by_pyoxigraph(names, [], fmt)
    header = empty[: len(empty) - len(footer)]
    write(header)
    chunk: list[dict[str, dict[str, str]]] = []
    count, first, last = 0, True, time.monotonic()

    def flush() -> None:
        nonlocal chunk, first, last
        if chunk:
            doc = _written_by_pyoxigraph(names, chunk, fmt)
            body = doc[len(header): len(doc) - len(footer)]
            write((b"," if fmt == "json" and not first else b"") + body)
            chunk, first = [], False
        last = time.monotonic()

    for solution in raw:
        if limit is not None and count >= limit:
            flush()
            write(footer)
            raise _too_large(limit, "solutions", count)
        chunk.append({n: _term_json(solution[n]) for n in names if solution[n] is not None})
        count += 1
        # the first solution at once, then chunks of CHUNK_ROWS, or whatever came in CHUNK_SECONDS
        if count == 1 or len(chunk) >= CHUNK_ROWS or time.monotonic() - last >= CHUNK_SECONDS:
            flush()
    flush()
    write(footer)
    return count


class _Stopped(Exception):
    """The reader gave up (time limit): the worker stops writing."""


def write_streamed(open_result: Callable[[], Any], fmt: str | None, out: BinaryIO, *,
                   timeout: float | None = None, limit: int | None = None) -> int:
    """Run a query and write its result to ``out`` as it comes (see :func:`write_result`).

    ``open_result`` is called in a worker thread and returns a context manager giving the pyoxigraph result
    (it runs the query). The worker hands chunks of output over a small bounded queue; this thread writes them.
    ``timeout`` bounds the time spent waiting for the worker (time spent writing to a slow reader of ``out`` is
    not counted): beyond it QueryTimeout is raised and the worker is abandoned (a daemon thread; it stops at its
    next chunk, or with the process if it is inside the query engine). Errors of the worker are raised here.
    Returns how many solutions or triples were written."""
    chunks: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=8)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> None:
        while True:
            if stop.is_set():
                raise _Stopped
            with contextlib.suppress(queue.Full):
                chunks.put(item, timeout=0.1)
                return

    def work() -> None:
        try:
            with open_result() as raw:
                n = write_result(raw, fmt, lambda data: put(("data", data)), limit)
            put(("end", n))
        except _Stopped:
            return
        except BaseException as exc:  # handed to the waiting thread, which raises it
            # without the worker's frames: pyoxigraph's result objects must be dropped in the thread that made them
            cause: BaseException | None = exc
            while cause is not None:
                cause.__traceback__ = None
                cause = cause.__cause__ or cause.__context__
            with contextlib.suppress(_Stopped):
                put(("error", exc))

    worker = threading.Thread(target=work, name="gkg-query", daemon=True)
    worker.start()
    budget = timeout
    try:
        while True:
            started = time.monotonic()
            try:
                kind, value = chunks.get(timeout=budget)
            except queue.Empty:
                raise QueryTimeout(f"the query ran longer than the time limit ({timeout:g} s) and was "
                                   "stopped") from None
            if budget is not None:
                budget = max(budget - (time.monotonic() - started), 0.001)
            if kind == "data":
                out.write(value)
                out.flush()
            elif kind == "end":
                return int(value)
            else:
                raise value
    finally:
        stop.set()
