"""Reading and writing RDF files with messages that name the file, the place and the defect.

Nothing is fetched while reading: a JSON-LD ``@context`` (or ``@import``) that names a URL or a file is refused
before parsing, except the project's own shipped contexts, matched by their published IRI and read from the local
file (:func:`shipped_contexts`). rdflib's own context loader is replaced by one that refuses everything, so no
JSON-LD parse anywhere in the process can reach the network or the file system on a document's say-so.

Limits (docs/security.md): a file is read only if it is a regular file within the input size limit
(:func:`guideline_kg.core.files.read_input_text`); RDF/XML with a document type declaration (``<!DOCTYPE``, hence
entity declarations: "billion laughs") is refused before parsing; a literal whose lexical form is not valid for its
datatype (``"abc"^^xsd:integer``) is an InputError naming the value, and rdflib's log noise about it never reaches
stderr. :func:`iri_segment` escapes a name (a file name, a Bundle id) for use in an IRI, reversibly.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import re
import threading
import unicodedata
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyoxigraph as ox
import rdflib.plugins.shared.jsonld.context as _jsonld_context
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.parser import PythonInputSource
from rdflib.plugins.parsers.notation3 import BadSyntax

from guideline_kg.core.errors import GuidelineKGError, InputError
from guideline_kg.core.files import TOO_DEEP, load_json, read_input_text, write_atomic
from guideline_kg.core.namespaces import PREFIXES, bind_prefixes
from guideline_kg.core.project import Project

__all__ = [
    "CONTEXT_IRI",
    "EXTENSIONS",
    "FORMATS",
    "from_oxigraph",
    "guess_format",
    "iri_segment",
    "iri_segment_name",
    "localise_contexts",
    "read_graph",
    "read_graphs",
    "register_context",
    "shipped_contexts",
    "write_graph",
]

#: rdflib format names by file extension.
FORMATS: dict[str, str] = {
    ".ttl": "turtle",
    ".nt": "nt",
    ".n3": "n3",
    ".rdf": "xml",
    ".owl": "xml",
    ".xml": "xml",
    ".jsonld": "json-ld",
    ".json": "json-ld",
    ".trig": "trig",
}
#: File extensions of each output syntax.
EXTENSIONS: dict[str, str] = {"turtle": ".ttl", "nt": ".nt", "xml": ".rdf", "json-ld": ".jsonld"}


#: The published IRI of the guideline package's JSON-LD context (manifest part ``jsonld_context``, see
#: docs/export.md); a document that names it gets the local file's context, never a download.
CONTEXT_IRI = "https://w3id.org/guideline-kg/context.jsonld"
#: JSON-LD contexts a document may name, by IRI: the local file that stands for each.
_SHIPPED: dict[str, Path] = {}
_SHIPPED_CONTENT: dict[str, Any] = {}


class _FetchRefused(Exception):
    """Raised by the replacement of rdflib's JSON-LD context loader: the IRI it was asked to load."""


def _refuse_fetch(source: Any, *args: Any, **kwargs: Any) -> Any:
    raise _FetchRefused(str(source))


# Defence in depth: rdflib loads remote and file: contexts with this function; nothing of this project needs it.
_jsonld_context.source_to_json = _refuse_fetch


def register_context(iri: str, path: Path | str) -> None:
    """Let JSON-LD documents name the context ``iri``; its content is read from the local file ``path``."""
    _SHIPPED[iri] = Path(path)
    _SHIPPED_CONTENT.pop(iri, None)


def shipped_contexts() -> dict[str, Path]:
    """The contexts a JSON-LD document may name (IRI -> local file): the default guideline package's context
    under :data:`CONTEXT_IRI` (and its own ``file:`` URL), plus any :func:`register_context` added."""
    if CONTEXT_IRI not in _SHIPPED:
        try:
            local = Project.at().part("jsonld_context")
        except GuidelineKGError:
            local = None
        if local is not None:
            register_context(CONTEXT_IRI, local)
            register_context(local.resolve().as_uri(), local)
    return dict(_SHIPPED)


def _line_of(text: str, value: str) -> int | None:
    """The line of the first occurrence of the JSON string ``value`` in ``text`` (for messages)."""
    at = text.find(json.dumps(value))
    return None if at < 0 else text.count("\n", 0, at) + 1


def _shipped_context(iri: Any, key: str, path: Path, text: str) -> Any:
    """The content (the ``@context`` value) of the shipped context ``iri``; InputError for anything else."""
    if not isinstance(iri, str):
        raise InputError(f"JSON-LD {key} must be a string, an object or a list, not {type(iri).__name__}",
                         path=str(path))
    shipped = shipped_contexts()
    if iri not in shipped:
        allowed = ", ".join(sorted(i for i in shipped if not i.startswith("file:"))) or "none"
        raise InputError(f"JSON-LD {key} {iri!r} is not allowed: contexts are never fetched from the network "
                         f"or read from other files; embed the context in the document (shipped contexts "
                         f"that may be named: {allowed})", path=str(path), line=_line_of(text, iri))
    if iri not in _SHIPPED_CONTENT:
        local = shipped[iri]
        try:
            doc = load_json(local.read_text(encoding="utf-8"), local)
        except OSError as exc:
            raise InputError(f"cannot read the shipped JSON-LD context {iri}: {exc.strerror or exc}",
                             path=str(local)) from None
        if not isinstance(doc, dict) or "@context" not in doc:
            raise InputError(f"the shipped JSON-LD context {iri} has no \"@context\"", path=str(local))
        _SHIPPED_CONTENT[iri] = doc["@context"]
    return copy.deepcopy(_SHIPPED_CONTENT[iri])


def _objects(doc: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in ``doc``, depth first, without recursion (documents may be deep)."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            yield node
            stack.extend(node.values())


def localise_contexts(doc: Any, path: Path, text: str = "") -> Any:
    """``doc`` with every ``@context`` and ``@import`` that names a context by IRI replaced by the shipped
    context's content; any other IRI (remote, ``file:``, relative) is an InputError naming the file and IRI."""
    for node in _objects(doc):
        if "@context" in node:
            value = node["@context"]
            if isinstance(value, str):
                node["@context"] = _shipped_context(value, "@context", path, text)
            elif isinstance(value, list):
                node["@context"] = [_shipped_context(v, "@context", path, text) if isinstance(v, str) else v
                                    for v in value]
        if "@import" in node:
            merged = _shipped_context(node.pop("@import"), "@import", path, text)
            if not isinstance(merged, dict):
                raise InputError("JSON-LD @import must name a context object", path=str(path))
            merged.update(node)
            node.clear()
            node.update(merged)
    return doc


def _iri_char(ch: str) -> bool:
    """Whether ``ch`` may stand unescaped in an IRI path segment minted from a name: RFC 3986 unreserved ASCII,
    or an RFC 3987 ``ucschar`` (no controls, no private use, no surrogates, no non-characters)."""
    if ch.isascii():
        return ch.isalnum() or ch in "-._~"
    code = ord(ch)
    return code >= 0xA0 and unicodedata.category(ch) not in ("Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp", "Zs") \
        and (code & 0xFFFE) != 0xFFFE and not 0xFDD0 <= code <= 0xFDEF


def iri_segment(name: str) -> str:
    """``name`` as one IRI path segment (RFC 3987): letters, digits, ``-._~`` and non-ASCII letters stay, every
    other character is percent-encoded as its UTF-8 bytes (a file name's bytes that are not UTF-8, kept by Python
    as surrogates, as those bytes). Reversible: :func:`iri_segment_name`. ``"a b<>"`` -> ``"a%20b%3C%3E"``."""
    if all(_iri_char(ch) for ch in name):
        return name
    out = []
    for ch in name:
        if _iri_char(ch):
            out.append(ch)
        else:
            out.append(urllib.parse.quote(ch.encode("utf-8", "surrogateescape"), safe=""))
    return "".join(out)


def iri_segment_name(segment: str) -> str:
    """The name :func:`iri_segment` escaped (bytes that are not UTF-8 come back as surrogates)."""
    return urllib.parse.unquote(segment, errors="surrogateescape")


class _IllTyped(logging.Filter):
    """Drops rdflib's log record for a literal it cannot convert (a warning with a traceback, on stderr) and, while
    :func:`_collect_ill_typed` is active in this thread (a file being read), lets the reader report the literal
    itself; while reading, rdflib's "does not look like a valid URI" is dropped too (the reader reports it)."""

    local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        found = getattr(self.local, "found", None)
        if found is not None and "does not look like a valid URI" in str(record.msg):
            return False  # while reading: the reader names an invalid IRI itself (_refuse_invalid_terms)
        if not str(record.msg).startswith("Failed to convert Literal lexical form"):
            return True
        if found is not None:
            found.append(record)
        return False


_ILL_TYPED = _IllTyped()
logging.getLogger("rdflib.term").addFilter(_ILL_TYPED)


@contextlib.contextmanager
def _collect_ill_typed() -> Iterator[list[logging.LogRecord]]:
    found: list[logging.LogRecord] = []
    _IllTyped.local.found = found
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rdflib warns about odd IRIs and literals; the reader reports defects
            yield found
    finally:
        _IllTyped.local.found = None


def _ill_typed_literals(graph: Graph) -> list[Literal]:
    """The ill-typed literals of ``graph``, sorted, at most 10."""
    bad = {o for o in graph.objects() if isinstance(o, Literal) and o.ill_typed}
    return sorted(bad, key=str)[:10]


def _refuse_ill_typed(bad: list[Literal], path: Path, text: str) -> None:
    def shown(lit: Literal) -> str:
        dt = str(lit.datatype)
        for prefix, ns in PREFIXES.items():
            if dt.startswith(str(ns)):
                dt = f"{prefix}:{dt[len(str(ns)):]}"
                break
        return f"{json.dumps(str(lit), ensure_ascii=False)[:80]}^^{dt}"

    first = bad[0]
    at = max(text.find(json.dumps(str(first), ensure_ascii=False)), text.find(f'"{first}"'))
    at = at if at >= 0 or not str(first) else text.find(str(first))
    line = None if at < 0 else text.count("\n", 0, at) + 1
    more = f" (and {len(bad) - 1} more: {', '.join(shown(b) for b in bad[1:])})" if len(bad) > 1 else ""
    raise InputError(f"ill-typed literal {shown(first)}: {json.dumps(str(first), ensure_ascii=False)[:80]} is not "
                     f"a valid {shown(first).rsplit('^^', 1)[1]}{more}", path=str(path), line=line)


def _visible(text: str) -> str:
    """``text`` with characters that do not print (controls) as ``\\u`` escapes."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def _refuse_invalid_terms(graph: Graph, path: Path, text: str) -> None:
    """InputError naming the first IRI that is not a valid IRI (RFC 3987: no spaces, controls, ``<>"{}|^`\\``),
    or the first invalid language tag, of ``graph``. rdflib lets them through; the stores (pyoxigraph) and every
    other RDF tool refuse them, so a case with one would fail later without its file and place."""
    seen: set[str] = set()
    for triple in graph:
        for term in triple:
            if isinstance(term, URIRef):
                iri, lang = str(term), None
            elif isinstance(term, Literal):
                iri, lang = (str(term.datatype) if term.datatype else ""), term.language
            else:
                continue
            if iri and iri not in seen:
                seen.add(iri)
                try:
                    ox.NamedNode(iri)
                except ValueError as exc:
                    tail = re.split(r"[/#:]", iri)[-1] or iri
                    at = text.find(tail)
                    raise InputError(f"invalid IRI <{_visible(iri[:200])}>: {_visible(str(exc))}", path=str(path),
                                     line=None if at < 0 else text.count("\n", 0, at) + 1) from None
            if lang and f"@{lang}" not in seen:
                seen.add(f"@{lang}")
                try:
                    ox.Literal("", language=lang)
                except ValueError:
                    at = text.find(lang)
                    raise InputError(f"invalid language tag {lang!r} (BCP 47, such as en or en-GB)", path=str(path),
                                     line=None if at < 0 else text.count("\n", 0, at) + 1) from None


#: A document type declaration in XML: the only place entities are declared (refused, "billion laughs").
_DOCTYPE = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_XML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


def _refuse_dtd(text: str, path: Path) -> None:
    """InputError when an RDF/XML document has a document type declaration (``<!DOCTYPE ...>``, entity
    declarations): entity expansion can turn a kilobyte into gigabytes ("billion laughs"), and external entities
    read other files; RDF/XML needs neither."""
    m = _DOCTYPE.search(_XML_COMMENT.sub(lambda c: " " * len(c[0]), text))
    if m:
        line = text.count("\n", 0, m.start()) + 1
        raise InputError("RDF/XML with a document type declaration (<!DOCTYPE or <!ENTITY) is refused: entity "
                         "declarations can expand without bound (\"billion laughs\") or read other files; write "
                         "the RDF/XML without a DTD", path=str(path), line=line)


def guess_format(path: Path) -> str:
    """The rdflib parser for ``path`` from its extension, or an InputError naming the file."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"unknown RDF file extension {path.suffix!r} (expected one of "
                         f"{', '.join(sorted(FORMATS))})", path=str(path))
    return fmt


def _bad_syntax_position(exc: BadSyntax, text: str) -> tuple[int | None, int | None]:
    """Line and column (1-based) of a Turtle/N3 syntax error, from the parser's byte offset into the text."""
    data, i = getattr(exc, "_str", None), getattr(exc, "_i", None)
    if not isinstance(data, bytes) or not isinstance(i, int):
        data, i = text.encode("utf-8"), None
    if i is None:
        line = getattr(exc, "lines", None)
        return (line + 1 if isinstance(line, int) else None), None
    i = len(data.rstrip()) if i < 0 else min(i, len(data))  # -1: the parser hit the end of the file
    start = data.rfind(b"\n", 0, i) + 1
    return data.count(b"\n", 0, i) + 1, len(data[start:i].decode("utf-8", "replace")) + 1


def _sax_position(exc: Exception) -> tuple[int | None, int | None]:
    """Line and column of an RDF/XML (SAX) parse error, when the parser gives them."""
    get_line, get_col = getattr(exc, "getLineNumber", None), getattr(exc, "getColumnNumber", None)
    if callable(get_line) and callable(get_col):
        line, col = get_line(), get_col()
        return (line if isinstance(line, int) else None), (col + 1 if isinstance(col, int) else None)
    return None, None


def read_graph(path: Path | str, graph: Graph | None = None, fmt: str | None = None) -> Graph:
    """Parse one RDF file into ``graph`` (a new graph by default). Errors say file, line, column and why."""
    path = Path(path)
    if path.is_dir():
        raise InputError("is a folder, not an RDF file", path=str(path))
    fmt = fmt or guess_format(path)
    graph = graph if graph is not None else bind_prefixes(Graph())
    fresh = len(graph) == 0  # a case file read into its own graph: every term is checked (below)
    text = read_input_text(path)  # a regular file within the size limit, else InputError before reading
    if fmt == "xml":
        _refuse_dtd(text, path)
    try:
        with _collect_ill_typed() as ill:
            if fmt == "json-ld":
                doc = localise_contexts(load_json(text, path), path, text)
                graph.parse(source=PythonInputSource(doc, path.resolve().as_uri()), format=fmt)
            else:
                graph.parse(data=text, format=fmt, publicID=path.resolve().as_uri())
    except InputError:
        raise
    except _FetchRefused as exc:
        raise InputError(f"JSON-LD context {exc} is not allowed: contexts are never fetched from the network or "
                         "read from other files", path=str(path)) from None
    except RecursionError:
        raise InputError(f"malformed {fmt}: {TOO_DEEP}", path=str(path)) from None
    except BadSyntax as exc:
        line, col = _bad_syntax_position(exc, text)
        message = re.sub(r"\s+", " ", str(getattr(exc, "_why", None) or exc)).strip()
        raise InputError(f"malformed {fmt}: {message}", path=str(path), line=line, column=col) from None
    except Exception as exc:  # rdflib raises many unrelated types for bad input
        line, col = _sax_position(exc)
        message = exc.getMessage() if line is not None and hasattr(exc, "getMessage") else str(exc)
        message = re.sub(r"\s+", " ", str(message)).strip()
        if line is None:
            m = re.search(r"line (\d+)", message)
            line = int(m.group(1)) if m else None
        raise InputError(f"malformed {fmt}: {message}", path=str(path), line=line, column=col) from None
    if ill:
        bad = _ill_typed_literals(graph)
        if bad:
            _refuse_ill_typed(bad, path, text)
    if fresh:
        _refuse_invalid_terms(graph, path, text)
    return graph


_XSD_STRING = "http://www.w3.org/2001/XMLSchema#string"


def from_oxigraph(term: Any, plain_strings: bool = True) -> Any:
    """A pyoxigraph term (IRI, blank node or literal) as the equal rdflib term. With ``plain_strings`` an
    xsd:string literal becomes a plain literal, as rdflib's own parsers give it; without, it keeps its datatype
    (as SPARQL results carry it)."""
    if isinstance(term, ox.NamedNode):
        return URIRef(term.value)
    if isinstance(term, ox.BlankNode):
        return BNode(term.value)
    if not isinstance(term, ox.Literal):
        raise TypeError(f"unsupported term {term!r}")
    if term.language:
        return Literal(term.value, lang=term.language)
    if plain_strings and term.datatype.value == _XSD_STRING:
        return Literal(term.value)
    return Literal(term.value, datatype=URIRef(term.datatype.value))


def _read_turtle_fast(path: Path, graph: Graph) -> bool:
    """Parse a Turtle file with pyoxigraph's parser (several times faster than rdflib's) into ``graph``, with
    its prefixes; False when it is not well-formed, so that rdflib parses it again and reports the defect with its
    place. Blank nodes get fresh labels, so files never share one."""
    text = read_input_text(path)
    try:
        parser = ox.parse(input=text.encode("utf-8"), format=ox.RdfFormat.TURTLE,
                          base_iri=path.resolve().as_uri())
        triples = [(from_oxigraph(q.subject), from_oxigraph(q.predicate), from_oxigraph(q.object)) for q in parser]
    except (SyntaxError, ValueError):
        return False
    if any(isinstance(o, Literal) and o.ill_typed for _, _, o in triples):
        return False  # rdflib's reading reports them, naming each value
    graph.addN((s, p, o, graph) for s, p, o in triples)
    for prefix, ns in parser.prefixes.items():
        graph.bind(prefix, ns, override=False)
    return True


def read_graphs(paths: list[Path], graph: Graph | None = None) -> Graph:
    """Parse several RDF files (the ontology and a guideline's content) into one graph: Turtle by pyoxigraph's
    parser, other formats and any file with a defect by :func:`read_graph` (which names the defect's place)."""
    graph = graph if graph is not None else bind_prefixes(Graph())
    for p in paths:
        path = Path(p)
        if path.is_file() and guess_format(path) == "turtle" and _read_turtle_fast(path, graph):
            continue
        read_graph(path, graph)
    return graph


def write_graph(graph: Graph, path: Path | str, fmt: str) -> Path:
    """Serialise ``graph`` to ``path`` in rdflib format ``fmt``, atomically (folders are created)."""
    bind_prefixes(graph)
    if fmt == "json-ld":
        context = {p: str(ns) for p, ns in PREFIXES.items()}
        data = graph.serialize(format=fmt, context=context, auto_compact=True, encoding="utf-8")
    else:
        data = graph.serialize(format=fmt, encoding="utf-8")
    return write_atomic(path, data)
