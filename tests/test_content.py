"""The guideline content (kg/): every source line covered verbatim with its citations, conditions with explicit
negations, interpretations explained, terminology codes verified, no example.org anywhere in shipped data."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import pytest
from rdflib import Graph, Literal, URIRef
from rdflib.collection import Collection

from conftest import REPO
from guideline_kg.core.namespaces import GK, OWL, RDF, RDFS
from guideline_kg.core.project import Project
from guideline_kg.core.rdfio import read_graph
from guideline_kg.knowledge.graph import load_knowledge

#: The codes seen in public sources, as the package names them (guideline.toml [parts] terminology_codes).
CODES_TSV = Project.at(REPO).require("terminology_codes", "the terminology tests")
#: Code systems of codes.tsv whose codes appear in the graph as IRIs <system>/<code>.
CODE_SYSTEMS = ("http://snomed.info/sct", "http://loinc.org", "http://hl7.org/fhir/sid/icd-10-cm",
                "http://www.nlm.nih.gov/research/umls/rxnorm")
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def statements_by_line(graph: Graph) -> dict[int, list[URIRef]]:
    """The statement nodes (instances of a subclass of gk:Statement) of each source line."""
    kinds = set(graph.transitive_subjects(RDFS.subClassOf, GK.Statement))
    out: dict[int, list[URIRef]] = defaultdict(list)
    for node, line in graph.subject_objects(GK.sourceLine):
        if kinds & set(graph.objects(node, RDF.type)):
            out[int(line)].append(node)
    return out


def citations(graph: Graph, statement: URIRef) -> list[int]:
    """The reference numbers a statement cites."""
    return sorted(int(n) for ref in graph.objects(statement, GK.cites) for n in graph.objects(ref, GK.referenceNumber))


def coverage_problems(graph: Graph, expected: dict[int, tuple[str, list[int]]]) -> list[str]:
    """Every way the graph's statements differ from the source's content lines."""
    problems = []
    nodes = statements_by_line(graph)
    for line, (text, refs) in expected.items():
        if not nodes.get(line):
            problems.append(f"line {line}: no statement")
        for node in nodes.get(line, []):
            texts = [str(t) for t in graph.objects(node, GK.verbatimText)]
            if texts != [text]:
                problems.append(f"line {line}: {node} text {texts!r} != {text!r}")
            if citations(graph, node) != refs:
                problems.append(f"line {line}: {node} cites {citations(graph, node)} != {refs}")
    for line in set(nodes) - set(expected):
        problems.append(f"line {line}: statement {nodes[line]} on a line with no content")
    return problems


# --- coverage of the source, for the guideline and for the tiny second guideline ----------------------------

def test_every_content_line_is_covered_verbatim_with_its_citations(knowledge: Graph, expected_lines) -> None:
    assert coverage_problems(knowledge, expected_lines) == []


def test_the_second_guideline_is_covered_by_the_same_rule(mini_project: Project, mini_expected_lines) -> None:
    assert coverage_problems(load_knowledge(mini_project), mini_expected_lines) == []


def test_coverage_check_catches_a_changed_word_a_lost_citation_and_a_missing_line(knowledge: Graph,
                                                                                    expected_lines) -> None:
    broken = dict(expected_lines)
    text, refs = broken[4]
    broken[4] = (text.replace("MRI", "MR"), refs)
    broken[6] = (broken[6][0], [2, 3])
    broken[99] = ("a line the graph does not have", [])
    problems = "\n".join(coverage_problems(knowledge, broken))
    assert "line 4:" in problems and "line 6:" in problems and "line 99: no statement" in problems


def test_source_has_the_41_lines_the_graph_was_made_from(expected_lines) -> None:
    assert sorted(expected_lines) == list(range(1, 42))


def test_every_source_line_reference_points_at_a_content_line(knowledge: Graph, expected_lines) -> None:
    dangling = sorted({(str(s), int(n)) for s, n in knowledge.subject_objects(GK.sourceLine)
                       if int(n) not in expected_lines})
    assert dangling == []


def test_quantities_are_typed_decimal_literals(knowledge: Graph) -> None:
    values = [o for p in (GK.numericValue, GK.lowerBound, GK.upperBound) for o in knowledge.objects(None, p)]
    assert values and all(isinstance(v, Literal) and v.datatype == URIRef("http://www.w3.org/2001/XMLSchema#decimal")
                          for v in values)


def test_every_action_statement_has_direction_strength_line_and_population(knowledge: Graph) -> None:
    missing = [(str(s), str(p)) for s in set(knowledge.subjects(GK.recommendsAction, None))
               for p in (GK.direction, GK.strength, GK.lineOfTherapy, GK.population)
               if knowledge.value(s, p) is None]
    assert missing == []


# --- definitions ----------------------------------------------------------------------------------------------

def _intersection_members(graph: Graph, cls: URIRef) -> list[URIRef]:
    members: list[URIRef] = []
    for eq in graph.objects(cls, OWL.equivalentClass):
        head = graph.value(eq, OWL.intersectionOf)
        if head is not None:
            members += [m for m in Collection(graph, head) if isinstance(m, URIRef)]
    return members


def conditions(graph: Graph) -> set[URIRef]:
    """The named classes populations are built from (a population inside a population is expanded)."""
    populations = set(graph.objects(None, GK.population))
    found: set[URIRef] = set()
    for pop in populations:
        for member in _intersection_members(graph, pop):
            if member in populations:
                continue
            if str(member).startswith(str(GK)):  # a gk: class such as gk:Patient is the universe, not a condition
                continue
            found.add(member)
    return found | {n for c in found for n in graph.objects(c, GK.negation)}


def test_populations_are_built_from_conditions(knowledge: Graph) -> None:
    assert len(conditions(knowledge)) >= 10


@pytest.mark.parametrize("prop", [GK.negation, GK.missingData, RDFS.label])
def test_every_condition_has_negation_missing_data_and_label(knowledge: Graph, prop: URIRef) -> None:
    lacking = sorted(str(c) for c in conditions(knowledge) if knowledge.value(c, prop) is None)
    assert lacking == []


def test_negations_are_mutual(knowledge: Graph) -> None:
    one_way = sorted(f"{a} -> {b}" for a, b in knowledge.subject_objects(GK.negation)
                     if (b, GK.negation, a) not in knowledge)
    assert one_way == []


def test_every_interpretation_says_why(knowledge: Graph) -> None:
    interpretations = set(knowledge.subjects(GK.isInterpretation, Literal(True)))
    assert interpretations, "the source forced interpretations; none are marked"
    silent = sorted(str(d) for d in interpretations if not str(knowledge.value(d, RDFS.comment) or "").strip())
    assert silent == []


# --- terminology and IRIs -------------------------------------------------------------------------------------

def _verified_codes() -> set[tuple[str, str]]:
    with CODES_TSV.open(encoding="utf-8") as f:
        return {(row["system"], row["code"]) for row in csv.DictReader(f, delimiter="\t")}


def _shipped_rdf() -> list[Path]:
    files = sorted((REPO / "ontology").rglob("*.ttl")) + sorted((REPO / "guidelines" / "plbp").rglob("*.ttl"))
    return files + sorted((REPO / "guidelines" / "plbp").rglob("*.jsonld"))


def _codes_in_json(data: object) -> list[tuple[str, str]]:
    """(system, code) of every FHIR Coding in a JSON document."""
    found: list[tuple[str, str]] = []
    if isinstance(data, dict):
        if isinstance(data.get("system"), str) and "code" in data and data["system"] in CODE_SYSTEMS:
            found.append((data["system"], str(data["code"])))
        for v in data.values():
            found += _codes_in_json(v)
    elif isinstance(data, list):
        for v in data:
            found += _codes_in_json(v)
    return found


def used_codes() -> dict[tuple[str, str], str]:
    """Every code of a known code system used in guidelines/plbp/ and ontology/, with the file that uses it."""
    used: dict[tuple[str, str], str] = {}
    for path in _shipped_rdf():
        graph = read_graph(path)
        for term in {t for triple in graph for t in triple if isinstance(t, URIRef)}:
            for system in CODE_SYSTEMS:
                if str(term).startswith(system + "/"):
                    used[(system, str(term)[len(system) + 1:])] = path.name
        for code in graph.objects(None, GK.medicationCode):
            used[(RXNORM, str(code))] = path.name
    for path in sorted((REPO / "guidelines" / "plbp").rglob("*.json")):
        if not path.name.endswith(".expected.json"):
            for key in _codes_in_json(json.loads(path.read_text(encoding="utf-8"))):
                used[key] = path.name
    return used


def test_terminology_codes_are_all_verified() -> None:
    used = used_codes()
    assert used, "the graph binds terms to SNOMED CT and LOINC; none found"
    unverified = sorted(f"{s} {c} ({f})" for (s, c), f in used.items() if (s, c) not in _verified_codes())
    assert unverified == []


@pytest.mark.parametrize("folder", ["ontology", "guidelines/plbp", "shapes", "queries"])
def test_no_example_org_in_shipped_data(folder: str) -> None:
    offenders = [str(p.relative_to(REPO)) for p in sorted((REPO / folder).rglob("*"))
                 if p.is_file() and "example.org" in p.read_text(encoding="utf-8", errors="replace").lower()]
    assert offenders == []
