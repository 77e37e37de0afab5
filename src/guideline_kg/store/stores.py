"""The triple store queries run on: the embedded pyoxigraph store by default (strict SPARQL 1.1)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, cast
from urllib.parse import urljoin, urlsplit

import pyoxigraph as ox
from rdflib import Graph
from rdflib.term import Node

from guideline_kg.core.errors import InputError
from guideline_kg.core.files import check_input_file
from guideline_kg.core.namespaces import GK, sparql_prologue
from guideline_kg.core.rdfio import from_oxigraph
from guideline_kg.store.results import QueryResult, QueryTimeout, materialise

if TYPE_CHECKING:
    import httpx

__all__ = [
    "EmbeddedStore",
    "RemoteStore",
    "Rows",
    "ServiceRefused",
    "SparqlSyntaxError",
    "Store",
    "check_service",
    "count_typed_subjects",
    "graph_to_ntriples",
    "open_store",
    "to_rdflib",
    "to_rdflib_node",
    "triples_to_graph",
]


class SparqlSyntaxError(InputError):
    """A query that does not parse; the message carries the parser's line and column."""


class ServiceRefused(InputError):
    """A query with a ``SERVICE`` clause whose endpoint is not on the allow-list (exit 2, HTTP 400)."""


# One token of SPARQL, enough to find SERVICE keywords: comments, strings and IRIs are single tokens, so a
# "SERVICE" inside them is not a keyword; prefixed names and variables are single tokens too (ex:SERVICE, ?service).
_TOKEN = re.compile(r"""
    (?P<comment>\#[^\n]*)
  | (?P<string>'{3}(?:[^'\\]|\\.|'(?!''))*'{3}|"{3}(?:[^"\\]|\\.|"(?!""))*"{3}
              |'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")
  | (?P<iri><[^<>"{}|^`\\\x00-\x20]*>)
  | (?P<var>[?$][\w\u00b7]+)
  | (?P<name>(?:[^\W\d][\w\-.]*)?:(?:[\w\-.:%]|\\.)*|[^\W\d][\w\-]*)
  | (?P<other>\S)
""", re.VERBOSE)


_CODEPOINT = re.compile(r"\\u([0-9A-Fa-f]{4})|\\U([0-9A-Fa-f]{8})")


def _tokens(text: str) -> list[tuple[str, str]]:
    # SPARQL processes \u and \U escapes before parsing (SPARQL 1.1, 19.2): so must the scan
    text = _CODEPOINT.sub(lambda m: chr(min(int(m.group(1) or m.group(2), 16), 0x10FFFF)), text)
    return [(m.lastgroup or "other", m.group()) for m in _TOKEN.finditer(text) if m.lastgroup != "comment"]


def check_service(query: str, allowed: Collection[str] = ()) -> None:
    """Refuse ``query`` (ServiceRefused) when it has a ``SERVICE`` clause whose endpoint is not in ``allowed``
    (full IRIs). Runs before the query reaches any store, so a refused endpoint is never contacted. A variable
    endpoint (``SERVICE ?x``) is always refused: it cannot be checked before the query runs."""
    tokens = _tokens(query)
    prefixes: dict[str, str] = {}
    base = ""
    for i, (kind, value) in enumerate(tokens):
        if kind != "name":
            continue
        word = value.upper()
        nxt = tokens[i + 1: i + 4]
        if word == "PREFIX" and len(nxt) >= 2 and nxt[0][0] == "name" and nxt[1][0] == "iri":
            prefixes[nxt[0][1].rstrip(":")] = urljoin(base, nxt[1][1][1:-1])
        elif word == "BASE" and nxt and nxt[0][0] == "iri":
            base = urljoin(base, nxt[0][1][1:-1])
        elif word == "SERVICE":
            if nxt and nxt[0][0] == "name" and nxt[0][1].upper() == "SILENT":
                nxt = nxt[1:]
            if not nxt:
                continue
            endpoint_kind, endpoint = nxt[0]
            iri: str | None = None
            if endpoint_kind == "iri":
                iri = urljoin(base, endpoint[1:-1])
            elif endpoint_kind == "name" and ":" in endpoint:
                prefix, local = endpoint.split(":", 1)
                iri = prefixes[prefix] + local if prefix in prefixes else None
            if iri is not None and iri in allowed:
                continue
            shown = f"<{iri}>" if iri is not None else endpoint
            why = ("federated queries are off; allow this endpoint with `query --allow-service URL`"
                   if iri is not None else "a SERVICE endpoint must be a literal IRI to be checked")
            raise ServiceRefused(f"SERVICE {shown} is not allowed ({why})")


def to_rdflib(term: Any) -> Node | None:
    """Convert a pyoxigraph term to the equal rdflib term (None stays None)."""
    if term is None:
        return None
    return to_rdflib_node(term)


def to_rdflib_node(term: Any) -> Node:
    """Convert a bound pyoxigraph term (IRI, blank node or literal) to the equal rdflib term (an xsd:string
    literal keeps its datatype, as in SPARQL results)."""
    node: Node = from_oxigraph(term, plain_strings=False)
    return node


def triples_to_graph(triples: Any) -> Graph:
    """An rdflib graph of pyoxigraph triples (or quads, whose graph name is dropped)."""
    graph = Graph()
    for t in triples:
        graph.add((to_rdflib_node(t.subject), to_rdflib_node(t.predicate), to_rdflib_node(t.object)))
    return graph


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
            yield dict(zip(self.variables, row, strict=True))

    def __len__(self) -> int:
        return len(self.rows)


class Store(Protocol):
    """What the machinery needs of a store, embedded or remote."""

    def add_graph(self, graph: Graph) -> None: ...
    def select(self, query: str) -> Rows: ...
    def ask(self, query: str) -> bool: ...
    def construct(self, query: str) -> Graph: ...
    def raw(self, query: str) -> Any: ...


class EmbeddedStore:
    """An in-process pyoxigraph store. Every query gets the project's prefixes prepended."""

    def __init__(self) -> None:
        self.ox = ox.Store()
        #: SERVICE endpoints a query may call (full IRIs); empty: every SERVICE clause is refused.
        self.allowed_services: frozenset[str] = frozenset()

    @classmethod
    def from_graph(cls, graph: Graph) -> EmbeddedStore:
        store = cls()
        store.add_graph(graph)
        return store

    def add_graph(self, graph: Graph) -> None:
        self.ox.bulk_load(graph_to_ntriples(graph), format=ox.RdfFormat.N_TRIPLES)

    def add_ntriples(self, data: bytes) -> None:
        self.ox.bulk_load(data, format=ox.RdfFormat.N_TRIPLES)

    def _run(self, query: str) -> Any:
        text = sparql_prologue() + query
        check_service(text, self.allowed_services)
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
        return triples_to_graph(self._run(query))

    def raw(self, query: str) -> Any:
        """The pyoxigraph result object, for serialising results in a standard format."""
        return self._run(query)

    def result(self, query: str, limit: int | None = None) -> QueryResult:
        """The materialised result of any query form (at most ``limit`` solutions or triples)."""
        return materialise(self._run(query), limit)

    @contextlib.contextmanager
    def streaming(self, query: str) -> Iterator[Any]:
        """The pyoxigraph result of ``query``, to be read as it is computed (``results.write_streamed``)."""
        yield self._run(query)

    def has_knowledge(self) -> bool:
        """Whether a guideline is loaded (a node typed gk:Guideline)."""
        return self.ask(f"ASK {{ ?g a <{GK.Guideline}> }}")


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


class RemoteStore:
    """A SPARQL 1.1 server used as the store: queries over the SPARQL 1.1 Protocol (``url``, the query
    endpoint) and loading over the Graph Store Protocol (``data_url``, into the default graph).

    Every query gets the project's prefixes prepended, as on the embedded store. ``data_url`` defaults to the
    Oxigraph layout: ``http://host:port`` or ``.../query`` queries, ``.../store`` loads."""

    def __init__(self, url: str, data_url: str | None = None, timeout: float = 60.0) -> None:
        self.url, self.data_url = remote_endpoints(url, data_url)
        self.timeout = timeout
        #: SERVICE endpoints a query may call (full IRIs); empty: every SERVICE clause is refused.
        self.allowed_services: frozenset[str] = frozenset()
        import httpx  # noqa: PLC0415 - ~0.17 s to import (it loads rich); only a remote store needs it

        self.httpx = httpx
        self.client = httpx.Client(timeout=timeout, headers={"User-Agent": "guideline-kg"})

    def __repr__(self) -> str:
        return f"RemoteStore({self.url!r}, data_url={self.data_url!r})"

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.client.request(method, url, **kwargs)
        except self.httpx.TimeoutException:
            raise QueryTimeout(f"{url}: no answer within the time limit ({self.timeout:g} s)") from None
        except self.httpx.HTTPError as exc:
            raise InputError(f"cannot reach the SPARQL server {url}: {exc}") from None

    def _load(self, method: str, graph: Graph) -> None:
        self.send_ntriples(graph_to_ntriples(graph), replace=method == "PUT")

    def send_ntriples(self, data: bytes, replace: bool = False) -> None:
        """Add (POST) or, with ``replace``, put (PUT) N-Triples into the default graph (Graph Store Protocol)."""
        sep = "&" if "?" in self.data_url else "?"
        resp = self._request("PUT" if replace else "POST", f"{self.data_url}{sep}default", content=data,
                             headers={"Content-Type": "application/n-triples"})
        if resp.status_code >= 300:
            raise InputError(f"{self.data_url}: the server refused the graph (HTTP {resp.status_code}): "
                             f"{resp.text.strip()[:300]}")

    def clear_default(self) -> None:
        """Empty the default graph (Graph Store Protocol DELETE; a missing graph counts as empty)."""
        sep = "&" if "?" in self.data_url else "?"
        resp = self._request("DELETE", f"{self.data_url}{sep}default")
        if resp.status_code >= 300 and resp.status_code != 404:
            raise InputError(f"{self.data_url}: the server did not clear the default graph "
                             f"(HTTP {resp.status_code}): {resp.text.strip()[:300]}")

    def add_graph(self, graph: Graph) -> None:
        """Add the triples of ``graph`` to the server's default graph (Graph Store Protocol POST)."""
        self._load("POST", graph)

    def replace_graph(self, graph: Graph) -> None:
        """Replace the server's default graph with ``graph`` (Graph Store Protocol PUT)."""
        self._load("PUT", graph)

    def result(self, query: str, limit: int | None = None) -> QueryResult:
        """Run any query form on the server; the materialised result (at most ``limit`` items)."""
        check_service(sparql_prologue() + query, self.allowed_services)
        resp = self._request("POST", self.url, content=(sparql_prologue() + query).encode("utf-8"), headers={
            "Content-Type": "application/sparql-query; charset=utf-8",
            "Accept": "application/sparql-results+json, application/n-triples;q=0.9"})
        if resp.status_code == 400:
            raise _syntax_error(resp.text, sparql_prologue().count("\n"))
        if resp.status_code >= 300:
            raise InputError(f"{self.url}: HTTP {resp.status_code}: {resp.text.strip()[:300]}")
        ctype = resp.headers.get("content-type", "").split(";")[0].strip()
        try:
            if ctype == "application/sparql-results+json":
                return materialise(ox.parse_query_results(resp.content, ox.QueryResultsFormat.JSON), limit)
            fmt = ox.RdfFormat.from_media_type(ctype)
            if fmt is None:
                raise InputError(f"{self.url}: unexpected result type {ctype!r}")
            return materialise(ox.parse(resp.content, fmt), limit)
        except SyntaxError as exc:
            raise InputError(f"{self.url}: malformed {ctype} result: {exc}") from None

    @contextlib.contextmanager
    def streaming(self, query: str) -> Iterator[Any]:
        """The result of ``query`` parsed by pyoxigraph while the server's answer arrives (nothing held whole):
        solutions, a boolean, or triples. The HTTP client's timeout bounds each wait for the server."""
        text = sparql_prologue() + query
        check_service(text, self.allowed_services)
        headers = {"Content-Type": "application/sparql-query; charset=utf-8",
                   "Accept": "application/sparql-results+json, application/n-triples;q=0.9"}
        ctype = ""
        try:
            with self.client.stream("POST", self.url, content=text.encode("utf-8"), headers=headers) as resp:
                if resp.status_code >= 300:
                    body = resp.read().decode("utf-8", "replace")
                    if resp.status_code == 400:
                        raise _syntax_error(body, sparql_prologue().count("\n"))
                    raise InputError(f"{self.url}: HTTP {resp.status_code}: {body.strip()[:300]}")
                ctype = resp.headers.get("content-type", "").split(";")[0].strip()
                reader = cast(BinaryIO, _Reader(resp.iter_bytes()))
                if ctype == "application/sparql-results+json":
                    yield ox.parse_query_results(reader, ox.QueryResultsFormat.JSON)
                else:
                    fmt = ox.RdfFormat.from_media_type(ctype)
                    if fmt is None:
                        raise InputError(f"{self.url}: unexpected result type {ctype!r}")
                    yield ox.parse(reader, fmt)
        except SyntaxError as exc:
            raise InputError(f"{self.url}: malformed {ctype} result: {exc}") from None
        except self.httpx.TimeoutException:
            raise QueryTimeout(f"{self.url}: no answer within the time limit ({self.timeout:g} s)") from None
        except self.httpx.HTTPError as exc:
            raise InputError(f"cannot reach the SPARQL server {self.url}: {exc}") from None

    def raw(self, query: str) -> Any:
        """The result as pyoxigraph objects (solutions, boolean, or a list of triples)."""
        res = self.result(query)
        return res.triples() if res.kind == "graph" else res.solutions()

    def select(self, query: str) -> Rows:
        res = self.result(query)
        if res.kind != "solutions":
            raise InputError("expected a SELECT query")
        solutions = res.solution_rows()
        names = [v.value for v in solutions.variables]
        return Rows(names, [tuple(to_rdflib(sol[n]) for n in names) for sol in solutions])

    def ask(self, query: str) -> bool:
        res = self.result(query)
        if res.kind != "boolean":
            raise InputError("expected an ASK query")
        return res.boolean()

    def construct(self, query: str) -> Graph:
        res = self.result(query)
        if res.kind != "graph":
            raise InputError("expected a CONSTRUCT or DESCRIBE query")
        return triples_to_graph(res.triples())

    def has_knowledge(self) -> bool:
        """Whether a guideline is loaded (a node typed gk:Guideline)."""
        return self.ask(f"ASK {{ ?g a <{GK.Guideline}> }}")

    def close(self) -> None:
        self.client.close()


class _Reader:
    """A binary file over an iterator of byte chunks (an HTTP body as it arrives), for pyoxigraph's parsers."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
            if size >= 0:
                break  # a short read is allowed: the parser asks again
        if size < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


#: The RDF syntaxes :func:`count_typed_subjects` scans (line-oriented, streamed by pyoxigraph's parser).
_SCANNED = {".ttl": ox.RdfFormat.TURTLE, ".nt": ox.RdfFormat.N_TRIPLES}


def count_typed_subjects(path: Path, type_iri: str, stop_after: int) -> int | None:
    """How many distinct subjects an RDF file types ``type_iri`` (``rdf:type``), counted by pyoxigraph's
    streaming parser, stopping as soon as ``stop_after`` are found (memory: the file's parser buffer and
    ``stop_after`` subjects). ``None`` when the file is not Turtle or N-Triples, or not one the readers would open
    (a device, a FIFO, a file over the input size limit: ``core.files.check_input_file``); a file that does not
    parse is counted up to the defect (the reader that reads it for real reports it)."""
    fmt = _SCANNED.get(path.suffix.lower())
    if fmt is None:
        return None
    try:  # only a regular file within the input size limit: the reader refuses the others, by name
        check_input_file(path)
    except InputError:
        return None
    rdf_type = ox.NamedNode("http://www.w3.org/1999/02/22-rdf-syntax-ns#type")
    wanted = ox.NamedNode(type_iri)
    seen: set[Any] = set()
    try:
        for t in ox.parse(path=path, format=fmt, base_iri=path.resolve().as_uri(), lenient=True):
            if t.predicate == rdf_type and t.object == wanted:
                seen.add(t.subject)
                if len(seen) >= stop_after:
                    break
    except (SyntaxError, OSError, ValueError):
        pass
    return len(seen)


def remote_endpoints(url: str, data_url: str | None = None) -> tuple[str, str]:
    """The query and Graph Store endpoints of a server URL (defaults follow Oxigraph's /query and /store)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"--store {url!r}: expected an http(s) URL of a SPARQL query endpoint")
    base = url.rstrip("/")
    if parts.path in ("", "/"):
        return base + "/query", data_url or base + "/store"
    if data_url is None and base.endswith("/query"):
        data_url = base[: -len("/query")] + "/store"
    if data_url is None:
        raise InputError(f"--store {url}: give the Graph Store Protocol endpoint with --store-data "
                         "(only Oxigraph's .../query -> .../store is known)")
    return base, data_url


def open_store(url: str | None = None, data_url: str | None = None, timeout: float = 60.0
               ) -> EmbeddedStore | RemoteStore:
    """The embedded store, or the SPARQL server at ``url`` when one is given."""
    return EmbeddedStore() if url is None else RemoteStore(url, data_url, timeout)
