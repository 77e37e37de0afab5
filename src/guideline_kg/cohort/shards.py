"""Read a cohort file in shards of whole cases, each shard bulk-loaded into its own pyoxigraph store.

Turtle and N-Triples cohorts are cut at the ``# case <name>`` marker lines that `cohort generate` writes
(a Turtle file's ``@prefix`` lines before the first marker are repeated for every shard). A file without
markers cannot be cut safely and is read as one shard. FHIR NDJSON holds one Bundle per line, mapped by
:func:`fhir_in.bundle_to_case`. A record that does not parse is reported with its file and line (the line of the
defect in a Turtle record, the line of an NDJSON record) and skipped; the rest of its shard is still read. An NDJSON
line that is not UTF-8, not JSON, not an object (an array, a string), not a Bundle, or longer than the input size
limit (``--max-input-size``, read without holding more than that) is such a record.
"""

from __future__ import annotations

import collections
import io
import json
import mmap
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PosixPath
from typing import Any

import pyoxigraph as ox
from rdflib import Graph

from guideline_kg.cases import fhir_in
from guideline_kg.cohort.generate import MARKER
from guideline_kg.core.errors import InputError, printable
from guideline_kg.core.files import TOO_DEEP, max_input_size
from guideline_kg.core.project import Project
from guideline_kg.store.stores import count_typed_subjects, graph_to_ntriples

__all__ = ["Shard", "ShardSpec", "Unreadable", "cohort_format", "count_records", "is_url", "iter_shards",
           "plan_shards", "read_shard", "read_url_range"]

_MARK = MARKER.encode()
_LINE_END = re.compile(rb"[^\n]\n")


@dataclass
class Unreadable:
    """A record that could not be read: its case name, where it starts, and why."""

    name: str
    line: int
    reason: str


@dataclass
class Shard:
    """Up to ``size`` cases in one store, with the records that could not be read."""

    store: ox.Store
    cases: int
    unreadable: list[Unreadable] = field(default_factory=list)


def cohort_format(path: Path) -> str:
    """The format of a cohort file, from its name: turtle, ntriples or fhir-ndjson."""
    name = path.name.lower()
    if name.endswith((".ndjson", ".jsonl")):
        return "fhir-ndjson"
    if name.endswith(".nt"):
        return "ntriples"
    if name.endswith(".ttl"):
        return "turtle"
    raise InputError("unknown cohort file type (expected .ttl, .nt or .ndjson)", path=str(path))


def _load(store: ox.Store, data: bytes, fmt: ox.RdfFormat) -> None:
    store.bulk_load(data, format=fmt)


def _records(handle: Iterable[bytes], header_out: list[bytes], offset: int = 0
             ) -> Iterator[tuple[str, int, list[bytes]]]:
    """(name, first line number, lines) of each marked record; lines before the first marker go to header_out.
    ``offset``: the number of lines of the file before the handle's first."""
    lines: list[bytes] = []
    name, start, seen = "", 1, False
    for lineno, line in enumerate(handle, 1 + offset):
        if line.startswith(_MARK):
            if seen:
                yield name, start, lines
            elif lines:
                header_out.extend(lines)
            name, start, lines, seen = line[len(_MARK):].strip().decode("utf-8", "replace"), lineno, [], True
            continue
        lines.append(line)
    if seen:
        yield name, start, lines
    elif lines:
        header_out.extend(lines)


def _whole_shard(path: Path, fmt: ox.RdfFormat, context: bytes) -> Shard:
    """A file without markers cannot be cut safely: it is one shard."""
    store = ox.Store()
    try:
        _load(store, path.read_bytes(), fmt)
    except SyntaxError as exc:
        raise InputError(f"does not parse: {exc}", path=str(path)) from None
    store.bulk_load(context, format=ox.RdfFormat.N_TRIPLES)
    n = sum(1 for _ in store.quads_for_pattern(None, ox.NamedNode(_RDF_TYPE), ox.NamedNode(_PATIENT)))
    return Shard(store, n)


_RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
_PATIENT = "https://w3id.org/guideline-kg/ontology#Patient"


def _parse_error(exc: SyntaxError, path: Path, start: int, header_lines: int) -> str:
    """The message of a record's syntax error at the defect's line in the file: the parser counts lines of the
    header plus the record; the record's first line follows its marker line ``start``."""
    message = str(exc.msg if exc.msg else exc)
    lineno = exc.lineno if isinstance(exc.lineno, int) else None
    if lineno is None or lineno <= header_lines:
        return f"{path}:{start}: record does not parse: {message}"
    line = start + lineno - header_lines
    # the parser's own line numbers, in its message, as lines of the file too
    message = re.sub(r"\bline (\d+)", lambda m: f"line {start + int(m[1]) - header_lines}"
                     if int(m[1]) > header_lines else m[0], message)
    return f"{path}:{line}: record does not parse: {message}"


def _make_shard(path: Path, header: bytes, batch: list[tuple[str, int, list[bytes]]], fmt: ox.RdfFormat,
                context: bytes) -> Shard:
    store = ox.Store()
    shard = Shard(store, len(batch))
    try:
        _load(store, header + b"".join(b"".join(lines) for _, _, lines in batch), fmt)
    except SyntaxError:
        # one bad record must not cost the shard: load record by record and report the bad ones
        store = shard.store = ox.Store()
        header_lines = header.count(b"\n")
        for name, start, lines in batch:
            try:
                # parse first (the parser is lazy: consume it): a failed bulk load may be partial
                collections.deque(ox.parse(header + b"".join(lines), format=fmt), maxlen=0)
                _load(store, header + b"".join(lines), fmt)
            except SyntaxError as exc:
                shard.unreadable.append(Unreadable(name, start, _parse_error(exc, path, start, header_lines)))
        shard.cases = len(batch) - len(shard.unreadable)
    store.bulk_load(context, format=ox.RdfFormat.N_TRIPLES)
    return shard


def _load_records(path: Path, header: bytes, data: bytes, line: int, fmt: ox.RdfFormat, context: bytes) -> Shard:
    """The whole records in ``data`` (from a marker line on; ``line``: the file's line of its first byte) in one
    bulk load, the marker lines being comments; cut into records (:func:`_make_shard`) only when that fails."""
    try:
        store = ox.Store()
        _load(store, header + data, fmt)
    except SyntaxError:
        return _make_shard(path, header, list(_records(io.BytesIO(data), [], line - 1)), fmt, context)
    store.bulk_load(context, format=ox.RdfFormat.N_TRIPLES)
    return Shard(store, data.count(b"\n" + _MARK) + data.startswith(_MARK))


def _fhir_shard(path: Path, numbered: Iterable[tuple[int, bytes | None]], context: bytes, project: Project | None,
                seen: dict[str, int]) -> Shard:
    """One shard of FHIR NDJSON: each (line number, bytes) a Bundle, mapped to a case; ``seen`` holds the
    patients already read (two records of one patient would merge into one case)."""
    graph, n, bad = Graph(), 0, []
    for lineno, raw in numbered:
        name = printable(f"{path.stem}-line{lineno}")
        try:
            if raw is None:
                raise InputError(f"the record is longer than the input size limit of {max_input_size():,} "
                                 "bytes (--max-input-size); skipped without reading it whole")
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
            try:
                bundle = json.loads(text)  # RecursionError: nested too deeply (below)
            except json.JSONDecodeError as exc:
                raise InputError(f"malformed JSON at column {exc.colno}: {exc.msg}") from None
            if not isinstance(bundle, dict):
                raise InputError(f"a record must be a FHIR Bundle object, not a JSON {_json_kind(bundle)}")
            if isinstance(bundle.get("id"), str) and bundle["id"]:
                name = bundle["id"]
            case = fhir_in.bundle_to_case(bundle, name, project=project)
            name = case.name
            if str(case.patient) in seen:
                raise InputError(f"another record (line {seen[str(case.patient)]}) is the case {name!r} "
                                 "(the same Bundle.id); each record must be one patient with its own id")
            seen[str(case.patient)] = lineno
        except (InputError, ValueError, KeyError, TypeError, AttributeError) as exc:
            bad.append(Unreadable(printable(name), lineno,
                                  printable(f"{path}:{lineno}: bundle cannot be read: {exc}")))
            continue
        except RecursionError:
            bad.append(Unreadable(printable(name), lineno, f"{path}:{lineno}: bundle cannot be read: {TOO_DEEP}"))
            continue
        graph += case.graph
        n += 1
    store = ox.Store()
    store.bulk_load(graph_to_ntriples(graph), format=ox.RdfFormat.N_TRIPLES)
    store.bulk_load(context, format=ox.RdfFormat.N_TRIPLES)
    return Shard(store, n, bad)


def _json_kind(value: object) -> str:
    kinds: dict[type, str] = {list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


def _ndjson_lines(handle: Any, offset: int = 0) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) of each line of a binary handle (``offset`` lines of the file before it); None for a
    line longer than the input size limit, which is skipped to its end without being held in memory."""
    limit = max_input_size()
    lineno = offset
    while True:
        line = handle.readline(limit + 1) if limit else handle.readline()
        if not line:
            return
        lineno += 1
        if limit and len(line) > limit and not line.endswith(b"\n"):
            while True:  # skip to the end of the line, a chunk at a time
                chunk = handle.readline(1 << 20)
                if not chunk or chunk.endswith(b"\n"):
                    break
            yield lineno, None
            continue
        yield lineno, line


def count_records(path: Path) -> int | None:
    """How many records :func:`iter_shards` will read from ``path``, counted cheaply (the total of a progress
    bar, before the real read): the ``# case`` marker lines of a Turtle or N-Triples cohort (a byte scan, ~2 GB/s),
    or, in a file without markers, the subjects typed ``gk:Patient`` (:func:`store.stores.count_typed_subjects`,
    a parse without a store); the non-blank lines of FHIR NDJSON. ``None`` when it cannot be told (an unknown
    file type, a file the reader will refuse)."""
    path = Path(path)
    try:
        fmt = cohort_format(path)
    except InputError:
        return None
    if not path.is_file():
        return None
    markers = lines = 0
    tail = b"\n"  # the end of the previous chunk (a marker or a line end may straddle two chunks)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            if fmt == "fhir-ndjson":  # lines with something on them (the reader skips blank ones)
                lines += len(_LINE_END.findall(tail[-1:] + chunk))
            else:
                markers += (tail + chunk).count(b"\n" + _MARK)
            tail = chunk[-len(_MARK):]
    lines += tail[-1:] != b"\n"  # a last line without a newline
    if fmt == "fhir-ndjson":
        return lines
    if markers:
        return markers
    return count_typed_subjects(path, _PATIENT, stop_after=1 << 62)


@dataclass(frozen=True)
class ShardSpec:
    """Where one shard lies in a cohort file: a byte range of whole records, with the line number it starts on
    and (Turtle) the prefix lines before the first marker. A task on any machine that sees ``path`` reads its
    shard from this alone (:func:`read_shard`); the specs of a file are the same on every run."""

    path: str
    index: int
    fmt: str
    start: int
    end: int
    line: int
    header: bytes = b""
    whole: bool = False  # a Turtle/N-Triples file without markers: one shard, the whole file


def plan_shards(path: Path, size: int = 10_000) -> list[ShardSpec]:
    """The shards of ``path`` of at most ``size`` records each, found by a byte scan (no parsing): every
    ``size``-th ``# case`` marker line of a Turtle or N-Triples cohort, every ``size``-th line of NDJSON."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=str(path))
    if size < 1:
        raise InputError(f"--shard-size must be at least 1 (got {size})")
    fmt = cohort_format(path)
    total = path.stat().st_size
    if total == 0:
        return []
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if fmt == "fhir-ndjson":
            starts, pos, n = [0], 0, 0
            while True:
                pos = mm.find(b"\n", pos)
                if pos < 0 or pos + 1 >= total:
                    break
                pos += 1
                n += 1
                if n % size == 0:
                    starts.append(pos)
            lines = [1 + i * size for i in range(len(starts))]
            header = b""
        else:
            marks = [0] if mm[: len(_MARK)] == _MARK else []
            pos = 0
            while (pos := mm.find(b"\n" + _MARK, pos)) >= 0:
                pos += 1
                marks.append(pos)
            if not marks:
                return [ShardSpec(str(path), 0, fmt, 0, total, 1, whole=True)]
            header = mm[: marks[0]]
            starts = marks[::size]
            lines, last, count = [], 0, 1
            for s in starts:
                count += mm[last:s].count(b"\n") if s > last else 0
                lines.append(count)
                last = s
    ends = [*starts[1:], total]
    return [ShardSpec(str(path), i, fmt, s, e, ln, header) for i, (s, e, ln) in enumerate(zip(starts, ends, lines,
                                                                                            strict=True))]


class _Range:
    """A binary file handle that ends at ``end`` (readline and iteration stop there)."""

    def __init__(self, handle: Any, end: int) -> None:
        self.handle, self.end = handle, end

    def readline(self, limit: int = -1) -> bytes:
        left = self.end - self.handle.tell()
        if left <= 0:
            return b""
        return self.handle.readline(left if limit is None or limit < 0 else min(limit, left))

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


def read_shard(spec: ShardSpec, context: bytes = b"", project: Project | None = None,
               seen: dict[str, int] | None = None) -> Shard:
    """The shard ``spec`` names, read and loaded into its own store (``context`` added). ``seen`` (patient IRI
    to line) carries the duplicate-record check across the shards of one reader."""
    if is_url(spec.path):  # an fsspec URL (checked by cohort.cluster.resolve_input): its byte range, read once
        return _read_url_shard(spec, context, project, seen)
    path = Path(spec.path)
    if not path.is_file():
        raise InputError("no such file (a shard must be read from a path every worker can see)", path=str(path))
    if spec.fmt == "fhir-ndjson":
        with path.open("rb") as handle:
            handle.seek(spec.start)
            return _fhir_shard(path, _ndjson_lines(_Range(handle, spec.end), spec.line - 1), context, project,
                               {} if seen is None else seen)
    rdf = ox.RdfFormat.TURTLE if spec.fmt == "turtle" else ox.RdfFormat.N_TRIPLES
    if spec.whole:
        return _whole_shard(path, rdf, context)
    with path.open("rb") as handle:
        handle.seek(spec.start)
        data = handle.read(spec.end - spec.start)
    return _load_records(path, spec.header, data, spec.line, rdf, context)


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*(://|::)")


def is_url(text: str) -> bool:
    """Whether a cohort input names a URL (``scheme://...``, fsspec's chains ``a::b://...`` too)."""
    return bool(_URL.match(text))


class UrlPath(PosixPath):
    """The name of a shard read from an fsspec URL: shown (``str``) as the URL itself, in every message."""

    url = ""

    def __str__(self) -> str:
        return self.url


def url_path(url: str) -> UrlPath:
    named = UrlPath(url.split("::", 1)[0].split("://", 1)[-1] or "input")
    named.url = url
    return named


def read_url_range(url: str, start: int, end: int) -> bytes:
    """Bytes ``start`` to ``end`` of the file at an fsspec URL."""
    import fsspec  # type: ignore[import-untyped]  # noqa: PLC0415 - only URL inputs need it (it comes with dask)

    try:
        with fsspec.open(url, "rb") as handle:
            handle.seek(start)
            return bytes(handle.read(end - start))
    except (OSError, ValueError, ImportError, EOFError) as exc:
        raise InputError(f"cannot be read: {exc}", path=url) from None


def _read_url_shard(spec: ShardSpec, context: bytes, project: Project | None, seen: dict[str, int] | None) -> Shard:
    """A shard of a cohort at an fsspec URL: its byte range read into memory (one shard), then read as a file's."""
    name, data = url_path(spec.path), read_url_range(spec.path, spec.start, spec.end)
    if spec.fmt == "fhir-ndjson":
        return _fhir_shard(name, _ndjson_lines(io.BytesIO(data), spec.line - 1), context, project,
                           {} if seen is None else seen)
    rdf = ox.RdfFormat.TURTLE if spec.fmt == "turtle" else ox.RdfFormat.N_TRIPLES
    return _load_records(name, spec.header, data, spec.line, rdf, context)


def iter_shards(path: Path, size: int = 10_000, context: bytes = b"",
                project: Project | None = None) -> Iterator[Shard]:
    """The cohort in ``path`` as shards of at most ``size`` cases; ``context`` (N-Triples) is added to each
    shard's store (the ontology's class hierarchy, which validation needs). FHIR Bundles are read with the FHIR
    case mapping of ``project``'s guideline package (default: this checkout's)."""
    seen: dict[str, int] = {}
    for spec in plan_shards(Path(path), size):
        yield read_shard(spec, context, project, seen)
