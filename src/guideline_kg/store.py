"""The triple store queries run on: the embedded pyoxigraph store by default (strict SPARQL 1.1)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Protocol

import pyoxigraph as ox
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.term import Node

from .errors import InputError
from .namespaces import sparql_prologue

__all__ = ["Store", "EmbeddedStore", "Rows", "to_rdflib", "graph_to_ntriples", "SparqlSyntaxError"]


class SparqlSyntaxError(InputError):
    """A query that does not parse; the message carries the parser's line and column."""


def to_rdflib(term: Any) -> Node | None:
    """Convert a pyoxigraph term to the equal rdflib term (None stays None)."""
    if term is None:
        return None
    if isinstance(term, ox.NamedNode):
        return URIRef(term.value)
    if isinstance(term, ox.BlankNode):
        return BNode(term.value)
    if isinstance(term, ox.Literal):
        if term.language:
            return Literal(term.value, lang=term.language)
        return Literal(term.value, datatype=URIRef(term.datatype.value))
    raise TypeError(f"unsupported term {term!r}")


def graph_to_ntriples(graph: Graph) -> bytes:
    """N-Triples bytes of an rdflib graph (the fastest hand-over to a store)."""
    return graph.serialize(format="nt", encoding="utf-8")


@dataclass
class Rows:
    """SELECT results: variable names and rows of rdflib terms (None where unbound)."""

    variables: list[str]
    rows: list[tuple[Node | None, ...]]

    def dicts(self) -> Iterator[dict[str, Node | None]]:
        for row in self.rows:
            yield dict(zip(self.variables, row))

    def __len__(self) -> int:
        return len(self.rows)


class Store(Protocol):
    """What the machinery needs of a store, embedded or remote."""

    def add_graph(self, graph: Graph) -> None: ...
    def select(self, query: str) -> Rows: ...
    def ask(self, query: str) -> bool: ...
    def construct(self, query: str) -> Graph: ...


class EmbeddedStore:
    """An in-process pyoxigraph store. Every query gets the project's prefixes prepended."""

    def __init__(self) -> None:
        self.ox = ox.Store()

    @classmethod
    def from_graph(cls, graph: Graph) -> "EmbeddedStore":
        store = cls()
        store.add_graph(graph)
        return store

    def add_graph(self, graph: Graph) -> None:
        self.ox.bulk_load(graph_to_ntriples(graph), format=ox.RdfFormat.N_TRIPLES)

    def add_ntriples(self, data: bytes) -> None:
        self.ox.bulk_load(data, format=ox.RdfFormat.N_TRIPLES)

    def _run(self, query: str) -> Any:
        text = sparql_prologue() + query
        try:
            return self.ox.query(text)
        except SyntaxError as exc:
            raise _syntax_error(str(exc), sparql_prologue().count("\n")) from None

    def select(self, query: str) -> Rows:
        result = self._run(query)
        if not isinstance(result, ox.QuerySolutions):
            raise InputError("expected a SELECT query")
        names = [v.value for v in result.variables]
        rows = [tuple(to_rdflib(sol[n]) for n in names) for sol in result]
        return Rows(names, rows)

    def ask(self, query: str) -> bool:
        result = self._run(query)
        if not isinstance(result, ox.QueryBoolean):
            raise InputError("expected an ASK query")
        return bool(result)

    def construct(self, query: str) -> Graph:
        result = self._run(query)
        graph = Graph()
        for t in result:
            graph.add((to_rdflib(t.subject), to_rdflib(t.predicate), to_rdflib(t.object)))
        return graph

    def raw(self, query: str) -> Any:
        """The pyoxigraph result object, for serialising results in a standard format."""
        return self._run(query)


_OX_POSITION = re.compile(r"^\s*error at (\d+):(\d+):\s*")


def _syntax_error(message: str, offset: int) -> SparqlSyntaxError:
    """A SparqlSyntaxError whose line counts from the user's first line, not from the prepended prologue.

    pyoxigraph words its errors ``error at LINE:COLUMN: expected ...``; only that leading position is shifted."""
    message = re.sub(r"\s+", " ", message).strip()
    m = _OX_POSITION.match(message)
    if m is None:
        return SparqlSyntaxError(f"SPARQL syntax error: {message}")
    line, column = int(m.group(1)) - offset, int(m.group(2))
    err = SparqlSyntaxError(f"SPARQL syntax error at line {line}, column {column}: {message[m.end():]}")
    err.line, err.column = line, column
    return err
