"""Reading and writing RDF files with messages that name the file, the place and the defect."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rdflib import Graph
from rdflib.plugins.parsers.notation3 import BadSyntax

from guideline_kg.core.errors import InputError
from guideline_kg.core.namespaces import PREFIXES, bind_prefixes

__all__ = ["EXTENSIONS", "FORMATS", "guess_format", "read_graph", "read_graphs", "write_graph"]

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
    if not path.exists():
        raise InputError("no such file", path=str(path))
    if path.is_dir():
        raise InputError("is a folder, not an RDF file", path=str(path))
    fmt = fmt or guess_format(path)
    graph = graph if graph is not None else bind_prefixes(Graph())
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=str(path)) from None
    try:
        if fmt == "json-ld":
            try:
                json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(f"malformed JSON: {exc.msg}", path=str(path), line=exc.lineno,
                                 column=exc.colno) from None
        graph.parse(data=text, format=fmt, publicID=path.resolve().as_uri())
    except InputError:
        raise
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
    return graph


def read_graphs(paths: list[Path], graph: Graph | None = None) -> Graph:
    """Parse several RDF files into one graph."""
    graph = graph if graph is not None else bind_prefixes(Graph())
    for p in paths:
        read_graph(p, graph)
    return graph


def write_graph(graph: Graph, path: Path | str, fmt: str) -> Path:
    """Serialise ``graph`` to ``path`` in rdflib format ``fmt`` (folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bind_prefixes(graph)
    if fmt == "json-ld":
        context = {p: str(ns) for p, ns in PREFIXES.items()}
        graph.serialize(destination=str(path), format=fmt, context=context, auto_compact=True)
    else:
        graph.serialize(destination=str(path), format=fmt, encoding="utf-8")
    return path
