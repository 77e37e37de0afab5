"""Bounded work (issue 13, point 4): `query` stops at its time limit and its result limit and writes results as
they come; commands that hold every case in memory refuse a file of very many cases before parsing it.

Probe inputs are small and generated here. The one test that runs a query which would take hours runs the
command in a child process: the abandoned query thread ends with that process, not with the test session."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyoxigraph as ox
import pytest

from guideline_kg.checks.gate import MAX_CASES, refuse_many_cases
from guideline_kg.cli.main import main
from guideline_kg.core.errors import InputError
from guideline_kg.core.files import max_input_size, set_max_input_size
from guideline_kg.core.namespaces import GK
from guideline_kg.store import results
from guideline_kg.store.results import QueryTimeout, ResultTooLarge, write_streamed
from guideline_kg.store.stores import count_typed_subjects

REPO = Path(__file__).resolve().parents[1]
CARTESIAN_COUNT = "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }"


def run(capsysbinary, *argv: str) -> tuple[int, bytes, str]:
    code = main(list(argv))
    out = capsysbinary.readouterr()
    return code, out.out, out.err.decode()


def many_patients(path: Path, n: int, *, tail: str = "") -> Path:
    """A Turtle file of ``n`` patients (one triple each), then ``tail``."""
    lines = [f"@prefix gk: <{GK}> .", "@prefix case: <https://w3id.org/guideline-kg/case/> ."]
    lines += [f"case:p{i} a gk:Patient ." for i in range(n)]
    path.write_text("\n".join(lines) + "\n" + tail, encoding="utf-8")
    return path


# -- the time limit -------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_timeout_stops_a_cartesian_count() -> None:
    """A 3-way cartesian COUNT over the knowledge graph (thousands of triples: ~10^11 rows, hours of work)
    stops at --timeout 1 with exit 2 and a message naming the limit; no traceback, nothing on stdout."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "guideline_kg.cli.main", "query", "--query", CARTESIAN_COUNT,
                           "--timeout", "1", "--format", "tsv"], check=False, capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr
    assert "--query: the query ran longer than the time limit (1 s) and was stopped" in proc.stderr
    assert "--timeout" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert elapsed < 120  # loading the graph takes seconds; the count itself would take hours


def test_the_timeout_bounds_waiting_for_the_engine() -> None:
    """write_streamed gives up on a worker that does not answer: QueryTimeout after about the limit."""
    release = threading.Event()

    @contextlib.contextmanager
    def stuck():  # a query engine that never answers (until the test ends)
        release.wait(60)
        yield ox.parse_query_results(b"true", ox.QueryResultsFormat.TSV)

    started = time.monotonic()
    try:
        with pytest.raises(QueryTimeout, match=r"time limit \(0.3 s\)"):
            write_streamed(stuck, "tsv", io.BytesIO(), timeout=0.3)
    finally:
        release.set()
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("value", ["0", "-1", "abc", "inf"])
def test_timeout_must_be_positive_seconds(capsysbinary, value) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["query", "--query", "ASK {}", "--timeout", value])
    assert exc.value.code == 2 and "expected a number of seconds" in capsysbinary.readouterr().err.decode()


# -- the result limit -----------------------------------------------------------------------------------------

def test_limit_stops_after_n_solutions_with_exit_2(capsysbinary) -> None:
    q = "SELECT ?s ?p ?o WHERE { ?s ?p ?o }"
    code, out, err = run(capsysbinary, "query", "--query", q, "--format", "tsv", "--limit", "3")
    assert code == 2
    assert "the result has more than 3 solutions (--limit 3): stopped; the first 3 were written" in err
    assert "--limit" in err and "0: no limit" in err
    assert out.splitlines()[0] == b"?s\t?p\t?o" and len(out.splitlines()) == 1 + 3
    # the same query answers in full without a limit
    code, out, err = run(capsysbinary, "query", "--query", q, "--format", "tsv", "--limit", "0")
    assert code == 0, err
    assert len(out.splitlines()) > 1000


@pytest.mark.parametrize("fmt", ["json", "csv", "xml"])
def test_limit_in_every_solution_format(capsysbinary, fmt) -> None:
    q = "SELECT ?s WHERE { ?s ?p ?o FILTER(isIRI(?s)) }"
    code, out, err = run(capsysbinary, "query", "--query", q, "--format", fmt, "--limit", "2")
    assert code == 2 and "more than 2 solutions" in err
    # exactly the first two solutions were written (counted in the format's own terms)
    written = {"json": lambda: len(json.loads(out)["results"]["bindings"]),
               "csv": lambda: len(out.decode().splitlines()) - 1,
               "xml": lambda: out.count(b"<result>")}[fmt]()
    assert written == 2


def test_limit_on_a_graph_and_on_the_table(capsysbinary) -> None:
    q = "CONSTRUCT WHERE { ?s ?p ?o }"
    code, out, err = run(capsysbinary, "query", "--query", q, "--format", "nt", "--limit", "2")
    assert code == 2 and "more than 2 triples" in err
    assert len(list(ox.parse(out, ox.RdfFormat.N_TRIPLES))) == 2
    # the table needs every row for its widths: nothing is written
    code, out, err = run(capsysbinary, "query", "--query", "SELECT * WHERE { ?s ?p ?o }", "--limit", "2")
    assert code == 2 and out == b"" and "more than 2 solutions" in err


def test_limit_must_be_a_count(capsysbinary) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["query", "--query", "ASK {}", "--limit", "-5"])
    assert exc.value.code == 2 and "expected a whole number" in capsysbinary.readouterr().err.decode()


# -- streamed output ------------------------------------------------------------------------------------------

class _Source:
    """SPARQL JSON results produced row by row; after the first row it waits until the test has seen that row
    on the output (or 30 s): a writer that held the result whole would never let it go on."""

    def __init__(self, rows: int) -> None:
        self.rows, self.seen, self.waited = rows, threading.Event(), None

    def chunks(self):
        yield b'{"head":{"vars":["x"]},"results":{"bindings":['
        for i in range(self.rows):
            if i == 1:
                self.waited = self.seen.wait(30)
            yield (b"," if i else b"") + b'{"x":{"type":"uri","value":"urn:row%d"}}' % i
        yield b"]}}"


class _Out(io.BytesIO):
    def __init__(self, source: _Source) -> None:
        super().__init__()
        self.source = source

    def write(self, data) -> int:
        n = super().write(data)
        if b"urn:row0" in self.getvalue():
            self.source.seen.set()
        return n


class _Reader:
    """A binary file that hands out one chunk per read (a short read), as a network connection does."""

    def __init__(self, chunks) -> None:
        self._chunks = chunks

    def read(self, size: int = -1) -> bytes:
        return next(self._chunks, b"")


@pytest.mark.parametrize("fmt", ["tsv", "csv", "json"])
def test_the_first_rows_are_written_before_the_end(fmt) -> None:
    source = _Source(5)
    out = _Out(source)

    def open_result():
        return contextlib.nullcontext(ox.parse_query_results(_Reader(source.chunks()),
                                                             ox.QueryResultsFormat.JSON))

    assert write_streamed(open_result, fmt, out, timeout=120) == 5
    assert source.waited is True  # the first row was on the output while the query was still running
    got = ox.parse_query_results(out.getvalue(), ox.QueryResultsFormat.JSON) if fmt == "json" else None
    if got is not None:
        assert [s["x"].value for s in got] == [f"urn:row{i}" for i in range(5)]
    else:
        assert all(f"urn:row{i}".encode() in out.getvalue() for i in range(5))


TERMS = """<urn:a> <urn:p> "x"@en , 1, "a,b\\"c\\nd\\te" , _:b1, <urn:z>, 2.5, true, 1e3, "d"^^<urn:dt>, "<&>" ,
    " lead", "x\\u0000y", "ü €" ."""


@pytest.mark.parametrize("query", ["SELECT ?s ?o ?u WHERE { ?s ?p ?o } ORDER BY ?o", "SELECT * WHERE {}",
                                   "SELECT ?x WHERE {} LIMIT 0", "ASK { ?s ?p ?o }", "CONSTRUCT WHERE { ?s ?p ?o }"])
def test_streamed_bytes_are_pyoxigraphs(monkeypatch, query) -> None:
    """Written in chunks (three solutions here), every format is byte for byte what pyoxigraph writes for the
    whole result: the server's answers (materialised) and the command's (streamed) are the same."""
    monkeypatch.setattr(results, "CHUNK_ROWS", 3)
    store = ox.Store()
    store.load(TERMS.encode(), format=ox.RdfFormat.TURTLE)
    graph = query.startswith("CONSTRUCT")
    for fmt in ["turtle", "nt", "jsonld", "rdfxml"] if graph else ["json", "xml", "csv", "tsv"]:
        expected = results.serialise(results.materialise(store.query(query)), fmt)
        out = io.BytesIO()
        write_streamed(lambda: contextlib.nullcontext(store.query(query)), fmt, out, timeout=60)
        assert out.getvalue() == expected, fmt


def test_a_format_that_does_not_fit_writes_nothing() -> None:
    store = ox.Store()
    out = io.BytesIO()
    with pytest.raises(InputError, match="does not fit"):
        write_streamed(lambda: contextlib.nullcontext(store.query("SELECT * WHERE {}")), "turtle", out, timeout=60)
    assert out.getvalue() == b""


def test_limit_in_write_streamed_counts_what_was_written() -> None:
    store = ox.Store()
    store.load(TERMS.encode(), format=ox.RdfFormat.TURTLE)
    out = io.BytesIO()
    with pytest.raises(ResultTooLarge) as err:
        write_streamed(lambda: contextlib.nullcontext(store.query("SELECT * WHERE { ?s ?p ?o }")), "tsv", out,
                       timeout=60, limit=4)
    assert err.value.written == 4 and len(out.getvalue().splitlines()) == 1 + 4


# -- many cases in one file -----------------------------------------------------------------------------------

def test_count_typed_subjects_stops_early(tmp_path) -> None:
    # a defect after the 20th patient: the count stops at 10 before reaching it
    path = many_patients(tmp_path / "many.ttl", 20, tail="this is not turtle\n")
    assert count_typed_subjects(path, str(GK.Patient), 10) == 10
    assert count_typed_subjects(path, str(GK.Patient), 100) == 20  # up to the defect
    assert count_typed_subjects(tmp_path / "x.jsonld", str(GK.Patient), 10) is None  # not scanned


def test_refuse_many_cases_counts_files_and_folders(tmp_path) -> None:
    folder = tmp_path / "cases"
    folder.mkdir()
    for i in range(3):
        many_patients(folder / f"c{i}.ttl", 1)
    refuse_many_cases([folder], limit=3)
    with pytest.raises(InputError, match="more than 2 patient cases in the files given") as err:
        refuse_many_cases([folder], limit=2)
    assert "cohort evaluate" in str(err.value)
    one = many_patients(tmp_path / "one.ttl", 3)
    with pytest.raises(InputError, match=r"one\.ttl: more than 2 patient cases"):
        refuse_many_cases([one], limit=2)
    refuse_many_cases([tmp_path / "missing.ttl"], limit=1)  # left to the reader, which names it


@pytest.mark.parametrize("command", ["recommend", "validate"])
@pytest.mark.slow
def test_recommend_and_validate_refuse_a_file_of_many_cases(capsysbinary, tmp_path, command) -> None:
    path = many_patients(tmp_path / "cohort.ttl", MAX_CASES + 1)
    started = time.monotonic()
    code, out, err = run(capsysbinary, command, str(path))
    assert code == 2 and out == b""
    assert f"{path}: more than {MAX_CASES} patient cases" in err and "cohort evaluate" in err
    assert "Traceback" not in err
    assert time.monotonic() - started < 60


def test_render_case_refuses_a_file_of_many_cases_at_once(capsysbinary, tmp_path) -> None:
    """`render --case` draws one case: a file of 20,000 patients is refused before the knowledge graph or the
    cases are read (the scan stops at the second patient), and nothing is written."""
    path = many_patients(tmp_path / "cohort.ttl", 20_000)
    out_file = tmp_path / "pathway.svg"
    started = time.monotonic()
    code, _, err = run(capsysbinary, "render", "--case", str(path), "--out", str(out_file))
    assert code == 2 and "more than 1 patient case (`render --case` draws the pathway of one case)" in err
    assert "cohort evaluate" in err and not out_file.exists()
    assert time.monotonic() - started < 30


def test_the_case_count_opens_no_fifo_and_no_oversized_file(tmp_path) -> None:
    """The scan reads only what the readers would read: a FIFO (a hang) and a file over the input size limit
    are left uncounted for the reader to refuse by name."""
    fifo = tmp_path / "case.ttl"
    os.mkfifo(fifo)
    assert count_typed_subjects(fifo, str(GK.Patient), 2) is None
    big = many_patients(tmp_path / "big.ttl", 50)
    previous = max_input_size()
    set_max_input_size(100)
    try:
        assert count_typed_subjects(big, str(GK.Patient), 2) is None
    finally:
        set_max_input_size(previous)
    assert count_typed_subjects(big, str(GK.Patient), 2) == 2
