"""Reading and writing RDF: every defect names the file, the line and column, and the parser's reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from rdflib import Graph, Literal, URIRef

from guideline_kg.core.errors import InputError
from guideline_kg.core.namespaces import GK
from guideline_kg.core.rdfio import EXTENSIONS, guess_format, read_graph, write_graph

PREFIX = "@prefix gk: <https://w3id.org/guideline-kg/ontology#> .\n"


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def error_of(path: Path) -> InputError:
    with pytest.raises(InputError) as info:
        read_graph(path)
    return info.value


@pytest.mark.parametrize("body, line, column, reason", [
    (PREFIX + "\ngk:x gk:y .\n", 3, 10, "objectList expected"),
    (PREFIX + "gk:a gk:b gk:c .\ngk:x gk:y \"unterminated .\n", 3, 26, "newline found in string literal"),  # at the newline
    (PREFIX + "gk:a gk:b \"é\" .\ngk:éx gk:y gk:z\n", 3, 16, "EOF found after object"),
], ids=["missing-object", "unterminated-string", "missing-dot-at-end-after-non-ascii"])
def test_malformed_turtle_names_file_line_column_and_reason(tmp_path: Path, body: str, line: int, column: int,
                                                            reason: str) -> None:
    err = error_of(write(tmp_path, "bad.ttl", body))
    assert (err.path, err.line, err.column) == (str(tmp_path / "bad.ttl"), line, column)
    assert str(err).startswith(f"{tmp_path / 'bad.ttl'}:{line}:{column}: malformed turtle: ")
    assert reason in str(err)


def test_malformed_json_ld_names_line_and_column(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, "case.jsonld", '{"@id": "https://w3id.org/x",\n  "https://w3id.org/y": [1,}\n'))
    assert (err.line, err.column) == (2, 28)
    assert "malformed JSON" in str(err)


def test_malformed_rdf_xml_names_line_and_column(tmp_path: Path) -> None:
    text = ('<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
            '<rdf:Description rdf:about="https://w3id.org/x">\n</rdf:RDF>\n')
    err = error_of(write(tmp_path, "bad.rdf", text))
    assert (err.line, err.column) == (3, 3)
    assert "mismatched tag" in str(err) and "<unknown>" not in str(err)


def test_missing_file(tmp_path: Path) -> None:
    err = error_of(tmp_path / "nowhere.ttl")
    assert str(err) == f"{tmp_path / 'nowhere.ttl'}: no such file"


def test_folder_is_not_a_file(tmp_path: Path) -> None:
    assert "is a folder" in str(error_of(tmp_path))


def test_unknown_extension(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, "notes.txt", "hello"))
    assert "unknown RDF file extension '.txt'" in str(err) and ".ttl" in str(err)


def test_not_utf8(tmp_path: Path) -> None:
    assert "not UTF-8" in str(error_of(write(tmp_path, "latin.ttl", b"\xff\xfe")))


@pytest.mark.parametrize("name, fmt", [("a.ttl", "turtle"), ("a.nt", "nt"), ("a.owl", "xml"), ("a.jsonld", "json-ld")])
def test_format_is_guessed_from_the_extension(name: str, fmt: str) -> None:
    assert guess_format(Path(name)) == fmt


@pytest.mark.parametrize("fmt", sorted(EXTENSIONS))
def test_written_graphs_read_back_equal(tmp_path: Path, fmt: str) -> None:
    graph = Graph()
    graph.add((URIRef("https://w3id.org/guideline-kg/test/s"), GK.verbatimText, Literal("Avoid routine imaging")))
    graph.add((URIRef("https://w3id.org/guideline-kg/test/s"), GK.sourceLine, Literal(37)))
    path = write_graph(graph, tmp_path / "sub" / f"g{EXTENSIONS[fmt]}", fmt)
    assert set(read_graph(path)) == set(graph)
