"""SPARQL results in standard formats: one materialised form, serialised by pyoxigraph's own writers.

A query result is materialised once into :class:`QueryResult` (SPARQL JSON bytes for SELECT and ASK,
N-Triples bytes for CONSTRUCT and DESCRIBE), with an optional size limit checked while the solutions are
read. Every other format (XML, CSV, TSV; Turtle, RDF/XML, JSON-LD) is written from it by pyoxigraph, so
the command line, the HTTP endpoint and the remote store all give byte-identical standard results.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

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
    """A result with more solutions or triples than the configured limit."""


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


def _too_large(limit: int, what: str) -> ResultTooLarge:
    return ResultTooLarge(f"the result has more than {limit} {what} (the limit); add LIMIT to the query "
                          "or raise the limit")


def materialise(raw: Any, limit: int | None = None) -> QueryResult:
    """Read a pyoxigraph result (solutions, boolean or triples) into a :class:`QueryResult`, stopping with
    :class:`ResultTooLarge` as soon as more than ``limit`` solutions or triples have been read."""
    if isinstance(raw, ox.QueryBoolean):
        return QueryResult("boolean", json.dumps({"head": {}, "boolean": bool(raw)}).encode(), 1)
    if isinstance(raw, ox.QuerySolutions):
        names = [v.value for v in raw.variables]
        bindings: list[dict[str, dict[str, str]]] = []
        for solution in raw:
            if limit is not None and len(bindings) >= limit:
                raise _too_large(limit, "solutions")
            bindings.append({n: _term_json(solution[n]) for n in names if solution[n] is not None})
        doc = {"head": {"vars": names}, "results": {"bindings": bindings}}
        return QueryResult("solutions", json.dumps(doc, ensure_ascii=False).encode("utf-8"), len(bindings))
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
