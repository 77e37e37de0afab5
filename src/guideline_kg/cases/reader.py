"""Patient cases in: Turtle, N-Triples, JSON-LD, or FHIR R4 Bundles (mapped by :mod:`fhir_in`).

Files are read one by one: with ``errors`` (a list), a file that cannot be read is recorded there (its
InputError names the file, the place and the defect) and every other file is still read, so that one malformed
file of a folder does not stop the rest (the gate, :meth:`guideline_kg.checks.gate.Gate.read`, reports it).
"""

from __future__ import annotations

from pathlib import Path

from rdflib import Graph, URIRef

from guideline_kg.cases import fhir_in
from guideline_kg.cases.model import Case
from guideline_kg.core.errors import InputError, printable
from guideline_kg.core.files import load_json, read_input_text
from guideline_kg.core.namespaces import GK, RDF, bind_prefixes
from guideline_kg.core.project import Project
from guideline_kg.core.rdfio import FORMATS, read_graph

__all__ = ["EXPECTED_SUFFIX", "Case", "case_files", "case_name", "load_cases"]

#: Sidecar files holding a case's expected results; never read as cases.
EXPECTED_SUFFIX = ".expected.json"


def case_files(paths: list[Path], errors: list[InputError] | None = None) -> list[Path]:
    """Expand folders into the case files they hold (sorted); files are kept as given. A path that does not
    exist is an InputError, or, with ``errors``, recorded there."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.is_file() and not f.name.endswith(EXPECTED_SUFFIX)
                          and f.suffix.lower() in FORMATS and not f.name.startswith("."))
        elif not p.exists():
            error = InputError("no such file or folder", path=str(p))
            if errors is None:
                raise error
            errors.append(error)
        else:
            out.append(p)
    return out


def case_name(path: Path) -> str:
    """The name of the case a file holds: the file name without its case suffix (``.fhir.json``, ``.ttl``...);
    bytes of a file name that are not UTF-8 are shown as escapes (``\\xff``), so the name can be written."""
    return printable(_raw_case_name(path))


def _raw_case_name(path: Path) -> str:
    """:func:`case_name` as the file system has it (bytes that are not UTF-8 as surrogates): the name that a FHIR
    case's IRIs are minted from (escaped by ``rdfio.iri_segment``, so they give back the file's bytes)."""
    name = path.name
    for suffix in (".fhir.json", ".jsonld", ".json", ".ttl", ".nt", ".rdf", ".owl", ".n3", ".trig", ".xml"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _load_file(path: Path, project: Project | None = None) -> list[Case]:
    if path.suffix.lower() == ".json":
        data = load_json(read_input_text(path), path)
        if isinstance(data, dict) and data.get("resourceType") is not None:
            return [fhir_in.bundle_to_case(data, _raw_case_name(path), source=path, project=project)]
    graph = read_graph(path, bind_prefixes(Graph()))
    patients = sorted({URIRef(str(p)) for p in graph.subjects(RDF.type, GK.Patient)})
    if not patients:
        raise InputError("no gk:Patient in the file (a case needs one node typed "
                         f"<{GK.Patient}>)", path=str(path))
    name = case_name(path)
    return [Case(name if len(patients) == 1 else f"{name}#{p.fragment or str(p).rsplit('/', 1)[-1]}",
                 path, graph, p) for p in patients]


def load_cases(paths: list[Path], project: Project | None = None, *,
               errors: list[InputError] | None = None) -> list[Case]:
    """Every case in the given files and folders, in a stable order. The first file that cannot be read is an
    InputError; with ``errors`` (a list), every such file's InputError is appended there instead and the other
    files are still read."""
    cases: list[Case] = []
    for f in case_files(paths, errors):
        try:
            cases += _load_file(f, project)
        except InputError as exc:
            if errors is None:
                raise
            errors.append(exc)
    return cases
