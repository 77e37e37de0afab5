"""Every SPARQL file of the project declares its prefixes and parses on its own, so it runs in any SPARQL tool, not
only through this package (which still puts its prologue, `core.namespaces.sparql_prologue`, in front: a prefix
declared twice with the same IRI is allowed). Checked with pyoxigraph, which knows no prefix, and with rdflib's
parser; rdflib knows rdf:, rdfs:, owl: and xsd: by itself, so the prefixes a file uses are also compared with the
ones it declares. New .rq files are picked up by the glob."""

from __future__ import annotations

import re
from pathlib import Path

import pyoxigraph as ox
import pytest
from rdflib.plugins.sparql import prepareQuery

from guideline_kg.core.namespaces import sparql_prologue

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted({*ROOT.glob("queries/**/*.rq"), *ROOT.glob("guidelines/*/queries/**/*.rq"),
                *ROOT.glob("tests/fixtures/*/queries/**/*.rq")})

# one token of SPARQL: comments, strings and IRIs are single tokens, so a colon inside them is no prefixed name
_TOKEN = re.compile(r"""
    (?P<comment>\#[^\n]*)
  | (?P<string>'{3}(?:[^'\\]|\\.|'(?!''))*'{3}|"{3}(?:[^"\\]|\\.|"(?!""))*"{3}|'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")
  | (?P<iri><[^<>"{}|^`\\\x00-\x20]*>)
  | (?P<var>[?$][\w\u00b7]+)
  | (?P<name>(?:[^\W\d][\w\-.]*)?:(?:[\w\-.:%]|\\.)*|[^\W\d][\w\-]*)
  | (?P<other>\S)
""", re.VERBOSE)


def _prefixes(text: str) -> tuple[set[str], set[str]]:
    """(declared, used): the prefixes of the file's PREFIX lines, and those of its prefixed names."""
    declared: set[str] = set()
    used: set[str] = set()
    tokens = [m for m in _TOKEN.finditer(text) if m.lastgroup != "comment"]
    for i, m in enumerate(tokens):
        if m.lastgroup != "name" or ":" not in m.group():
            continue
        prefix = m.group().split(":", 1)[0]
        if i > 0 and tokens[i - 1].group().upper() == "PREFIX":
            declared.add(prefix)
        else:
            used.add(prefix)
    return declared, used


def test_the_files_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in FILES}
    assert "queries/statements.rq" in names and "guidelines/plbp/queries/cq/advised-against.rq" in names
    assert len(FILES) >= 40


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(ROOT).as_posix() for p in FILES])
def test_query_declares_its_prefixes_and_parses_standalone(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    declared, used = _prefixes(text)
    assert used - declared == set(), f"{path}: prefixes used but not declared"
    try:
        ox.Store().query(text)  # pyoxigraph predeclares nothing; the empty store answers at once
    except SyntaxError as exc:
        pytest.fail(f"{path}: pyoxigraph: {exc}")
    prepareQuery(text)
    ox.Store().query(sparql_prologue() + text)  # the package's prologue in front is still harmless


def test_an_undeclared_prefix_is_caught() -> None:
    """The checks above can fail: a query that relies on a predeclared gk: and rdf:."""
    text = "SELECT ?s WHERE { ?s a gk:Statement ; rdf:value ?v }"
    assert _prefixes(text) == (set(), {"gk", "rdf"})
    with pytest.raises(SyntaxError):
        ox.Store().query(text)
    with pytest.raises(Exception, match="gk"):
        prepareQuery(text)
