"""Tests of validation: the shapes (valid and invalid snippets), the consistency checks (fixtures where each must
fire and where it must not), the guideline's own findings against the source, the invalid-case folder, and the
`validate` command (formats, exit codes, unchanged inputs)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from pyshacl import validate as shacl_validate
from rdflib import Graph, Literal, URIRef

from guideline_kg.cases.reader import load_cases
from guideline_kg.checks.validate import (
    case_report,
    check_case_results,
    check_queries,
    contradiction_findings,
    inline_number_findings,
    negation_extra,
    negation_findings,
    query_kind,
    query_severity,
    repetition_status_findings,
    run_checks,
    run_shapes,
    shape_files,
    validate_case,
    validate_knowledge,
)
from guideline_kg.cli.main import main
from guideline_kg.core.errors import InputError
from guideline_kg.core.namespaces import RDF, SH, bind_prefixes
from guideline_kg.core.project import Project
from guideline_kg.core.queries import load_query
from guideline_kg.core.rdfio import read_graphs
from guideline_kg.reasoning.hermit import ReasonerResult, run_hermit
from guideline_kg.store.stores import EmbeddedStore

ROOT = Path(__file__).resolve().parents[1]
INVALID = ROOT / "tests" / "data" / "invalid-cases"
CHECKS = ROOT / "queries" / "checks"
PREFIXES = """@prefix gk: <https://w3id.org/guideline-kg/ontology#> .
@prefix plbp: <https://w3id.org/guideline-kg/plbp/> .
@prefix case: <https://w3id.org/guideline-kg/case/> .
@prefix result: <https://w3id.org/guideline-kg/result/> .
@prefix owl: <http://www.w3.org/2002/07/owl#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix skos: <http://www.w3.org/2004/02/skos/core#> .
@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .
"""


@pytest.fixture(scope="session")
def ontology(project: Project) -> Graph:
    return read_graphs(project.vocabulary_files())  # the generic ontology and the package's patient vocabulary


@pytest.fixture(scope="session")
def guideline_result(knowledge: Graph, project: Project):
    """The one HermiT-backed validation of the real guideline, shared by the tests below."""
    return validate_knowledge(knowledge, project)


def turtle(text: str) -> Graph:
    return bind_prefixes(Graph()).parse(data=PREFIXES + text, format="turtle")


# ------------------------------------------------------------------ the shapes graphs themselves

SHAPE_FILES = [ROOT / "shapes" / "guideline-shapes.ttl", ROOT / "guidelines" / "plbp" / "shapes" / "case-shapes.ttl"]


@pytest.mark.parametrize("path", SHAPE_FILES, ids=[p.name for p in SHAPE_FILES])
@pytest.mark.slow
def test_shapes_graph_conforms_to_shacl_for_shacl(path: Path) -> None:
    shapes = Graph().parse(path)
    meta = Graph().parse(ROOT / "shapes" / "shacl-shacl.ttl")
    conforms, _, text = shacl_validate(shapes, shacl_graph=meta)
    assert conforms, text


def test_shacl_for_shacl_rejects_a_broken_shape() -> None:
    meta = Graph().parse(ROOT / "shapes" / "shacl-shacl.ttl")
    broken = Graph().parse(data="""@prefix sh: <http://www.w3.org/ns/shacl#> .
        <urn:s> a sh:NodeShape ; sh:minCount "one" .""", format="turtle")
    assert not shacl_validate(broken, shacl_graph=meta)[0]


def test_shape_files_are_the_applied_ones(project: Project) -> None:
    assert [p.relative_to(ROOT).as_posix() for p in shape_files(project)] == [
        "shapes/guideline-shapes.ttl", "guidelines/plbp/shapes/case-shapes.ttl"]


def test_every_constraint_has_a_message() -> None:
    for path in SHAPE_FILES:
        g, name = Graph().parse(path), path.name
        for prop in g.objects(None, SH.property):
            assert g.value(prop, SH.message) is not None, f"{name}: property shape on {g.value(prop, SH.path)}"
        for sparql in g.objects(None, SH.sparql):
            assert g.value(sparql, SH.message) is not None, f"{name}: SPARQL constraint without sh:message"
        for sparql in g.objects(None, SH.sparql):  # severity belongs to shapes, not to constraints
            assert g.value(sparql, SH.severity) is None, f"{name}: sh:severity on a SPARQL constraint"
        for shape in g.subjects(RDF.type, SH.NodeShape):
            # SPARQL constraints are violations, except in a shape of warnings only (no property shapes to demote)
            warnings_only = g.value(shape, SH.severity) == SH.Warning and g.value(shape, SH.property) is None
            assert g.value(shape, SH.sparql) is None or g.value(shape, SH.severity) in (None, SH.Violation) \
                or warnings_only, shape


# ------------------------------------------------------------------ guideline shapes: valid and invalid snippets

GUIDELINE_OK = """
plbp:t-guideline a gk:Guideline . plbp:t-sec a gk:Section .
plbp:T1 a gk:RecommendationFor ; gk:sourceLine 3 ; gk:verbatimText "Obtain imaging" ;
    gk:inSection plbp:t-sec ; gk:partOfGuideline plbp:t-guideline ;
    gk:recommendsAction gk:Imaging ; gk:direction gk:For ; gk:strength gk:Should ; gk:lineOfTherapy gk:FirstLine ;
    gk:population plbp:t-P ; gk:cites plbp:t-ref ; gk:quantity plbp:t-Q1, plbp:t-Q2 .
plbp:t-ref a gk:Reference ; gk:referenceNumber 1 .
plbp:t-P a owl:Class ; owl:equivalentClass [ a owl:Class ; owl:intersectionOf ( plbp:t-C plbp:t-D ) ] .
plbp:t-C a owl:Class ; gk:negation plbp:t-notC ; gk:missingData "whether C" .
plbp:t-D a owl:Class ; gk:negation plbp:t-notD ; gk:missingData "whether D" .
plbp:t-Q1 a gk:Percentage ; gk:numericValue 32.0 ; gk:unit "%" ; gk:quantityText "32%" .
plbp:t-Q2 a gk:DurationRange ; gk:lowerBound 4.0 ; gk:lowerBoundUnit "wk" ; gk:upperBound 2.0 ; gk:upperBoundUnit "a" ;
    gk:quantityText "4 weeks to 2 years" .
"""

# (rule, text replaced, replacement, focus, severity, fragment of the message)
GUIDELINE_DEFECTS = [
    ("statement-needs-source-line", "gk:sourceLine 3 ;", "", "plbp:T1", "Violation", "gk:sourceLine"),
    ("source-line-positive", "gk:sourceLine 3 ;", "gk:sourceLine 0 ;", "plbp:T1", "Violation", "gk:sourceLine"),
    ("statement-needs-text", '"Obtain imaging"', '""', "plbp:T1", "Violation", "gk:verbatimText"),
    ("statement-needs-section", "gk:inSection plbp:t-sec ;", "", "plbp:T1", "Violation", "gk:inSection"),
    ("statement-needs-kind", "plbp:T1 a gk:RecommendationFor", "plbp:T1 a gk:Statement", "plbp:T1", "Violation",
     "no kind"),
    ("recommendation-needs-action", "gk:recommendsAction gk:Imaging ;", "", "plbp:T1", "Violation",
     "gk:recommendsAction"),
    ("action-must-exist", "gk:recommendsAction gk:Imaging", "gk:recommendsAction gk:Levitation", "plbp:T1",
     "Violation", "gk:recommendsAction"),
    ("direction-matches-class", "gk:direction gk:For", "gk:direction gk:Against", "plbp:T1", "Violation",
     "disagree"),
    ("recommendation-needs-strength", "gk:strength gk:Should ;", "", "plbp:T1", "Violation", "gk:strength"),
    ("recommendation-needs-line", "gk:lineOfTherapy gk:FirstLine ;", "", "plbp:T1", "Violation",
     "gk:lineOfTherapy"),
    ("recommendation-needs-population", "gk:population plbp:t-P ;", "", "plbp:T1", "Violation", "gk:population"),
    ("recommendation-needs-citation-or-reason", "gk:cites plbp:t-ref ;", "", "plbp:T1", "Warning",
     "cites no reference"),
    ("percent-in-range", "32.0 ; gk:unit", "132.0 ; gk:unit", "plbp:t-Q1", "Violation", "between 0 and 100"),
    ("value-typed", "gk:numericValue 32.0", 'gk:numericValue "32"', "plbp:t-Q1", "Violation", "xsd:decimal"),
    ("unit-ucum", 'gk:unit "%"', 'gk:unit "percent"', "plbp:t-Q1", "Violation", "UCUM"),
    ("lower-not-above-upper", 'gk:upperBound 2.0 ; gk:upperBoundUnit "a"', 'gk:upperBound 2.0 ; gk:upperBoundUnit "d"',
     "plbp:t-Q2", "Violation", "lower bound is greater"),
    ("reference-needs-number", "plbp:t-ref a gk:Reference ; gk:referenceNumber 1 .", "plbp:t-ref a gk:Reference .",
     "plbp:t-ref", "Violation", "gk:referenceNumber"),
    ("cited-reference-exists", "gk:cites plbp:t-ref", "gk:cites plbp:t-nowhere", "plbp:t-nowhere", "Violation",
     "not a gk:Reference"),
    ("condition-needs-negation", 'gk:negation plbp:t-notC ; gk:missingData "whether C"',
     'gk:missingData "whether C"', "plbp:t-P", "Violation", "gk:negation"),
    ("condition-needs-missing-data", 'gk:negation plbp:t-notD ; gk:missingData "whether D"',
     "gk:negation plbp:t-notD", "plbp:t-P", "Violation", "gk:missingData"),
]


@pytest.fixture(scope="module")
def guideline_shapes() -> Graph:
    return Graph().parse(ROOT / "shapes" / "guideline-shapes.ttl")


@pytest.mark.slow
def test_guideline_snippet_valid(guideline_shapes: Graph, ontology: Graph) -> None:
    findings, _ = run_shapes(turtle(GUIDELINE_OK), guideline_shapes, ontology)
    assert findings == []


@pytest.mark.parametrize("rule,old,new,focus,severity,fragment", GUIDELINE_DEFECTS,
                         ids=[d[0] for d in GUIDELINE_DEFECTS])
@pytest.mark.slow
def test_guideline_snippet_invalid(guideline_shapes: Graph, ontology: Graph, rule: str, old: str, new: str,
                                   focus: str, severity: str, fragment: str) -> None:
    assert old in GUIDELINE_OK
    findings, _ = run_shapes(turtle(GUIDELINE_OK.replace(old, new)), guideline_shapes, ontology)
    hits = [f for f in findings if f.focus == focus and fragment in f.message]
    assert len(hits) == 1, [(f.focus, f.message) for f in findings]
    assert hits[0].severity == severity and hits[0].kind == "shape"


def test_guideline_shape_finding_carries_source_line(guideline_shapes: Graph, ontology: Graph) -> None:
    findings, _ = run_shapes(turtle(GUIDELINE_OK.replace("gk:strength gk:Should ;", "")), guideline_shapes, ontology)
    assert [f.source_lines for f in findings] == [(3,)]


# ------------------------------------------------------------------ case shapes: example cases valid, invalid folder

EXAMPLE_CASES = sorted(p for p in (ROOT / "guidelines" / "plbp" / "cases").iterdir() if p.suffix in (".ttl", ".jsonld"))


@pytest.mark.parametrize("path", EXAMPLE_CASES, ids=[p.name for p in EXAMPLE_CASES])
@pytest.mark.slow
def test_example_case_is_valid(path: Path, project: Project) -> None:
    case = load_cases([path])[0]
    assert [f for f in validate_case(case.graph, project) if f.severity == "Violation"] == []


INVALID_CASES = sorted(p for p in INVALID.iterdir() if not p.name.endswith(".expected.json"))


def _expected(path: Path) -> dict:
    stem = path.name.removesuffix(".fhir.json") if path.name.endswith(".fhir.json") else path.name.rsplit(".", 1)[0]
    return json.loads((INVALID / (stem + ".expected.json")).read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", INVALID_CASES, ids=[p.stem for p in INVALID_CASES])
@pytest.mark.slow
def test_invalid_case_gives_its_expected_finding(path: Path, project: Project) -> None:
    expected = _expected(path)
    if expected["exit_code"] == 2:
        with pytest.raises(InputError) as err:
            load_cases([path])
        assert err.value.path and err.value.path.endswith(expected["error"]["file"])
        assert err.value.line == expected["error"]["line"]
        if "column" in expected["error"]:
            assert err.value.column == expected["error"]["column"]
        return
    case = load_cases([path])[0]
    got = [{"kind": f.kind, "severity": f.severity, "focus": f.focus,
            "property": f.message.split(": ", 1)[0] if f.message.startswith("gk:") else None}
           for f in case_report(case.graph, project).findings]
    assert got == expected["findings"]


def test_every_invalid_case_has_an_expectation() -> None:
    for path in INVALID_CASES:
        assert _expected(path)["exit_code"] in (1, 2)


def test_case_finding_names_the_value(project: Project) -> None:
    case = load_cases([INVALID / "age-out-of-range.ttl"])[0]
    (finding,) = validate_case(case.graph, project)
    assert finding.message.startswith("gk:ageYears:") and "(value: 130)" in finding.message


# ------------------------------------------------------------------ check queries on fixtures

def run_check(name: str, data: str, ontology: Graph):
    query = load_query(CHECKS, name)
    store = EmbeddedStore.from_graph(ontology + turtle(data))
    return run_checks(store, [query])


STATEMENTS = """
plbp:A a gk:Caution ; gk:sourceLine 10 ; gk:about plbp:t-topic .
plbp:B a gk:Caution ; gk:sourceLine 20 ; gk:about plbp:t-topic .
"""

CHECK_FIXTURES = [
    # (query, fixture where it fires, expected source lines, fixture where it must not fire)
    ("repetition-warning", STATEMENTS, [(10, 20)],
     STATEMENTS.replace("plbp:B a gk:Caution", "plbp:B a gk:EvidenceStatement")),
    ("repetition-warning", """
plbp:A a gk:RecommendationFor ; gk:sourceLine 6 ; gk:about plbp:t-topic ; gk:quantity [ gk:numericValue 32.0 ; gk:unit "%" ] .
plbp:B a gk:EvidenceStatement ; gk:sourceLine 39 ; gk:about plbp:t-topic ; gk:quantity [ gk:numericValue 32.0 ; gk:unit "%" ] .
""", [(6, 39)], """
plbp:A a gk:RecommendationFor ; gk:sourceLine 6 ; gk:about plbp:t-topic ; gk:quantity [ gk:numericValue 32.0 ; gk:unit "%" ] .
plbp:B a gk:EvidenceStatement ; gk:sourceLine 39 ; gk:about plbp:t-topic ; gk:quantity [ gk:numericValue 40.0 ; gk:unit "%" ] .
"""),
    ("repetition-warning", STATEMENTS, [(10, 20)],
     STATEMENTS.replace("a gk:Caution", "a gk:UnspecifiedHeading")),
    ("content-gap-warning", 'plbp:H a gk:UnspecifiedHeading ; gk:sourceLine 26 ; gk:verbatimText "Injections:" ; '
     "gk:contentStatus gk:ContentUnspecified .", [(26,)],
     'plbp:H a gk:Heading ; gk:sourceLine 26 ; gk:verbatimText "Injections" .'),
    ("unsupported-warning", "plbp:R gk:sourceLine 14 ; gk:recommendsAction gk:Imaging .", [(14,)],
     "plbp:R gk:sourceLine 14 ; gk:recommendsAction gk:Imaging ; gk:cites plbp:r1 .\n"
     "plbp:r1 a gk:Reference ; gk:referenceNumber 1 ."),
    ("dangling-reference-violation", "plbp:R gk:sourceLine 5 ; gk:cites plbp:r9 .", [(5,)],
     "plbp:R gk:sourceLine 5 ; gk:cites plbp:r9 . plbp:r9 a gk:Reference ; gk:referenceNumber 9 ."),
    ("unreachable-warning", """
plbp:g a gk:Guideline ; gk:entryPoint plbp:s1 .
plbp:s1 a gk:AlgorithmStep . plbp:s2 a gk:AlgorithmStep . plbp:s3 a gk:AlgorithmStep ; gk:headingStatement plbp:h3 .
plbp:h3 gk:sourceLine 29 .
plbp:t1 a gk:Transition ; gk:fromNode plbp:s1 ; gk:toNode plbp:s2 .
""", [(29,)], """
plbp:g a gk:Guideline ; gk:entryPoint plbp:s1 .
plbp:s1 a gk:AlgorithmStep . plbp:s2 a gk:AlgorithmStep . plbp:s3 a gk:AlgorithmStep .
plbp:t1 a gk:Transition ; gk:fromNode plbp:s1 ; gk:toNode plbp:s2 .
plbp:t2 a gk:Transition ; gk:fromNode plbp:s2 ; gk:toNode plbp:s3 .
"""),
    ("unreachable-warning", """
plbp:g a gk:Guideline ; gk:entryPoint plbp:s1 .
plbp:s1 a gk:AlgorithmStep . plbp:s2 a gk:AlgorithmStep .
plbp:t1 a gk:Transition ; gk:fromNode plbp:s2 ; gk:toNode plbp:s1 .
""", [()], """
plbp:g a gk:Guideline ; gk:entryPoint plbp:s1 .
plbp:s1 a gk:AlgorithmStep . plbp:s2 a gk:AlgorithmStep .
"""),
]


@pytest.mark.parametrize("name,fires,lines,quiet", CHECK_FIXTURES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CHECK_FIXTURES)])
def test_check_fires_and_stays_quiet(ontology: Graph, name: str, fires: str, lines: list, quiet: str) -> None:
    found = run_check(name, fires, ontology)
    assert [f.source_lines for f in found] == lines
    assert all(f.severity == query_severity(load_query(CHECKS, name)) for f in found)
    assert run_check(name, quiet, ontology) == []


PAIR = """
plbp:F a gk:RecommendationFor ; gk:sourceLine 4 ; gk:direction gk:For ; gk:recommendsAction gk:MRIImaging ;
    gk:population plbp:PF .
plbp:X a gk:RecommendationAgainst ; gk:sourceLine 37 ; gk:direction gk:Against ; gk:recommendsAction gk:Imaging ;
    gk:population plbp:PX .
plbp:PF a owl:Class . plbp:PX a owl:Class .
"""


def _fake_reasoner(unsatisfiable: list[str]):
    def reasoner(graph: Graph, extra: Graph | None = None, **_: object) -> ReasonerResult:
        return ReasonerResult(consistent=True, unsatisfiable=unsatisfiable if extra is not None else [])
    return reasoner


@pytest.mark.parametrize("unsat,severity,word", [(True, "Info", "resolved"), (False, "Warning", "true conflict")])
def test_contradiction_decided_by_reasoner(ontology: Graph, unsat: bool, severity: str, word: str) -> None:
    graph = ontology + turtle(PAIR)
    store = EmbeddedStore.from_graph(graph)
    overlap = "https://w3id.org/guideline-kg/result/consistency/overlap-F-X"
    (finding,) = contradiction_findings(graph, store, [load_query(CHECKS, "contradiction-candidates")],
                                        reasoner=_fake_reasoner([overlap] if unsat else []))
    assert (finding.kind, finding.severity, finding.source_lines) == ("contradiction", severity, (4, 37))
    assert word in finding.message


def test_contradiction_for_the_same_action(ontology: Graph) -> None:
    graph = ontology + turtle(PAIR.replace("gk:MRIImaging", "gk:Imaging"))
    store = EmbeddedStore.from_graph(graph)
    (finding,) = contradiction_findings(graph, store, [load_query(CHECKS, "contradiction-candidates")],
                                        reasoner=_fake_reasoner([]))
    assert "the same action" in finding.message and finding.severity == "Warning"


def test_no_contradiction_for_unrelated_actions(ontology: Graph) -> None:
    graph = ontology + turtle(PAIR.replace("gk:MRIImaging", "gk:BedRest"))
    store = EmbeddedStore.from_graph(graph)
    assert contradiction_findings(graph, store, [load_query(CHECKS, "contradiction-candidates")],
                                  reasoner=_fake_reasoner([])) == []


RESULTS = """
result:r1 a gk:RecommendationResult ; gk:forCase case:x ; gk:forStatement plbp:L16 ; gk:status gk:Applicable .
result:r2 a gk:RecommendationResult ; gk:forCase case:x ; gk:forStatement plbp:L19 ; gk:status gk:Applicable .
"""


def test_case_conflict_fires_on_opposite_applicable(knowledge: Graph, project: Project) -> None:
    (finding,) = check_case_results(knowledge, turtle(RESULTS), project)
    assert (finding.kind, finding.severity, finding.focus, finding.source_lines) == \
        ("case-conflict", "Warning", "case:x", (16, 19))


def test_case_conflict_quiet_when_one_does_not_apply(knowledge: Graph, project: Project) -> None:
    results = turtle(RESULTS.replace("plbp:L19 ; gk:status gk:Applicable", "plbp:L19 ; gk:status gk:NotApplicable"))
    assert check_case_results(knowledge, results, project) == []


def test_check_query_names_give_kind_and_severity(project: Project) -> None:
    for query in check_queries(project) + check_queries(project, case_level=True):
        assert query.purpose, f"{query.path}: first comment line must state the purpose"
        kind = query_kind(query)
        if not query.name.endswith("-candidates"):
            assert query_severity(query) in ("Violation", "Warning", "Info"), kind


# ------------------------------------------------------------------ the real guideline against its source

def _by_kind(result, kind: str) -> dict[tuple[int, ...], str]:
    return {f.source_lines: f.severity for f in result.findings if f.kind == kind}


@pytest.mark.hermit
@pytest.mark.slow
def test_guideline_conforms(guideline_result) -> None:
    assert guideline_result.conforms, [f.message for f in guideline_result.findings if f.severity == "Violation"]


@pytest.mark.hermit
@pytest.mark.slow
def test_guideline_contradictions(guideline_result) -> None:
    assert _by_kind(guideline_result, "contradiction") == {(4, 37): "Info", (16, 19): "Warning"}


@pytest.mark.hermit
@pytest.mark.slow
def test_guideline_repetitions(guideline_result) -> None:
    assert set(_by_kind(guideline_result, "repetition")) == {(6, 39), (18, 40), (31, 41)}


@pytest.mark.hermit
@pytest.mark.slow
def test_guideline_content_gaps(guideline_result) -> None:
    assert set(_by_kind(guideline_result, "content-gap")) == {(14,), (26,), (27,), (28,), (34,), (35,)}


@pytest.mark.hermit
@pytest.mark.slow
def test_guideline_unsupported(guideline_result) -> None:
    assert set(_by_kind(guideline_result, "unsupported")) == {(14,)}


@pytest.mark.hermit
@pytest.mark.slow
def test_guideline_no_dangling_references_or_unreachable_steps(guideline_result) -> None:
    assert _by_kind(guideline_result, "dangling-reference") == {}
    assert _by_kind(guideline_result, "unreachable") == {}


@pytest.mark.hermit
@pytest.mark.slow
def test_guideline_shapes_find_nothing(guideline_result) -> None:
    assert [f.message for f in guideline_result.findings if f.kind == "shape"] == []


# ------------------------------------------------------------------ the command

def _digest(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


@pytest.mark.slow
def test_command_json_invalid_case_exit_1_inputs_unchanged(capsys, project: Project) -> None:
    inputs = [INVALID / "age-out-of-range.ttl", ROOT / "guidelines" / "plbp" / "cases" / "c06-opioid-no-relief.ttl"]
    before = _digest(inputs + sorted((ROOT / "guidelines" / "plbp").glob("*.ttl")) + shape_files(project))
    code = main(["validate", "--no-reasoner", "--format", "json", *map(str, inputs)])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["conforms"] is False
    assert set(doc) == {"conforms", "findings"}
    assert all(set(f) == {"kind", "severity", "source_lines", "focus", "message"} for f in doc["findings"])
    assert {(f["kind"], f["focus"]) for f in doc["findings"] if f["severity"] == "Violation"} == {("shape", "case:inv01")}
    assert {"kind": "case-conflict", "severity": "Warning", "focus": "case:c06", "source_lines": [16, 19]}.items() \
        <= next(f for f in doc["findings"] if f["kind"] == "case-conflict").items()
    assert _digest(inputs + sorted((ROOT / "guidelines" / "plbp").glob("*.ttl")) + shape_files(project)) == before


@pytest.mark.slow
def test_command_text_groups_by_severity(capsys) -> None:
    code = main(["validate", "--no-reasoner", str(INVALID / "unknown-property.ttl")])
    out = capsys.readouterr().out
    assert code == 1
    assert out.index("\nViolation (1)") < out.index("\nWarning (")
    assert "[shape] case:inv15" in out and "gk:weightKg" in out


@pytest.mark.parametrize("name", ["malformed-turtle.ttl", "malformed-jsonld.jsonld"])
def test_command_malformed_input_exit_2(capsys, name: str) -> None:
    expected = _expected(INVALID / name)["error"]
    code = main(["validate", "--no-reasoner", str(INVALID / name)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{name}:{expected['line']}:" in err and "Traceback" not in err


@pytest.mark.slow
def test_command_turtle_is_a_validation_report(capsys) -> None:
    code = main(["validate", "--no-reasoner", "--format", "turtle"])
    graph = Graph().parse(data=capsys.readouterr().out, format="turtle")
    (report,) = list(graph.subjects(RDF.type, SH.ValidationReport))
    assert code == 0 and graph.value(report, SH.conforms) == Literal(True)
    kinds = {str(graph.value(r, Graph().namespace_manager.expand_curie("dcterms:type")))
             for r in graph.objects(report, SH.result)}
    assert {"repetition", "content-gap", "unsupported", "contradiction"} <= kinds


# ------------------------------------------------------------------ named definitions (issue 12)

DEFINITIONS = """
:dur a owl:DatatypeProperty, owl:FunctionalProperty ; rdfs:range xsd:decimal .
:Chronic3 a rdfs:Datatype ; owl:equivalentClass
    [ a rdfs:Datatype ; owl:onDatatype xsd:decimal ; owl:withRestrictions ( [ xsd:minInclusive 3.0 ] ) ] .
:Below3 a rdfs:Datatype ; owl:equivalentClass
    [ a rdfs:Datatype ; owl:intersectionOf ( xsd:decimal [ a rdfs:Datatype ; owl:datatypeComplementOf :Chronic3 ] ) ] .
:Chronic a owl:Class ; gk:negation :NotChronic ;
    owl:equivalentClass [ a owl:Restriction ; owl:onProperty :dur ; owl:someValuesFrom :Chronic3 ] .
:NotChronic a owl:Class ; gk:negation :Chronic ;
    owl:equivalentClass [ a owl:Restriction ; owl:onProperty :dur ; owl:someValuesFrom :Below3 ] .
:Flag a owl:Class ; gk:negation :NoFlag ;
    owl:equivalentClass [ a owl:Restriction ; owl:onProperty :flag ; owl:someValuesFrom :Marker ] .
:NoFlag a owl:Class ; gk:negation :Flag ;
    owl:equivalentClass [ a owl:Restriction ; owl:onProperty :flag ; owl:someValuesFrom :Other ] .
:flag a owl:ObjectProperty . :Marker a owl:Class . :Other a owl:Class .
"""
DEFINITION_PREFIXES = "@prefix : <https://w3id.org/guideline-kg/test/d#> .\n"


def definitions(text: str) -> Graph:
    return turtle(DEFINITION_PREFIXES + text)


@pytest.mark.hermit
@pytest.mark.parametrize("change, expected", [
    # named threshold and its named complement: the pair agrees on the data; :Flag/:NoFlag may overlap (nothing
    # makes :Marker and :Other disjoint) and the graph says nothing about why
    ({}, {("Violation", ":Flag", "belong to both")}),
    # the overlap of :Flag and :NoFlag is stated to come only from contradicting records: Info with the reason
    ({":Flag a owl:Class ;": ':Flag a owl:Class ; gk:negationOverlapReason "two records" ;'},
     {("Info", ":Flag", "two records")}),
    # the negation written with its own number, one that overlaps the threshold (4 > 3): the data ranges overlap
    ({":someValuesFrom :Below3": ":someValuesFrom [ a rdfs:Datatype ; owl:onDatatype xsd:decimal ; "
      "owl:withRestrictions ( [ xsd:maxExclusive 4.0 ] ) ]"},
     {("Violation", ":Flag", "belong to both"), ("Violation", ":Chronic", "meet both"),
      ("Violation", ":Chronic", "belong to both")}),
    # ... or that leaves a gap (2.5 < 3): a recorded 2.7 would decide neither (a false "missing data")
    ({":someValuesFrom :Below3": ":someValuesFrom [ a rdfs:Datatype ; owl:onDatatype xsd:decimal ; "
      "owl:withRestrictions ( [ xsd:maxExclusive 2.5 ] ) ]"},
     {("Violation", ":Flag", "belong to both"), ("Violation", ":Chronic", "meet neither")}),
])
def test_definition_and_negation_must_agree(change: dict[str, str], expected: set) -> None:
    text = DEFINITIONS
    for old, new in change.items():
        text = text.replace(old.replace(":someValuesFrom", "owl:someValuesFrom"),
                            new.replace(":someValuesFrom", "owl:someValuesFrom"))
    graph = definitions(text)
    verdict = run_hermit(graph, extra=negation_extra(graph))
    found = {(f.severity, f.focus, next(w for w in ("belong to both", "meet both", "meet neither", "two records")
                                         if w in f.message)) for f in negation_findings(graph, verdict)}
    names = {(sev, focus.replace("<https://w3id.org/guideline-kg/test/d#", ":").rstrip(">") if focus else focus, w)
             for sev, focus, w in found}
    assert names == expected


def test_negation_check_not_decided_without_reasoner() -> None:
    (finding,) = negation_findings(definitions(DEFINITIONS), None)
    assert (finding.kind, finding.severity) == ("definition", "Warning") and "not run" in finding.message


def test_inline_number_in_a_condition_is_a_warning() -> None:
    graph = definitions(DEFINITIONS.replace("owl:someValuesFrom :Below3", "owl:someValuesFrom [ a rdfs:Datatype ; "
                                            "owl:onDatatype xsd:decimal ; owl:withRestrictions ( [ xsd:maxExclusive "
                                            "3.0 ] ) ]"))
    (finding,) = inline_number_findings(graph)
    assert (finding.kind, finding.severity) == ("definition", "Warning")
    assert "NotChronic" in (finding.focus or "") and "3.0" in finding.message
    assert inline_number_findings(definitions(DEFINITIONS)) == []  # by IRI: no finding


def test_the_shipped_definitions_write_no_number_in_place(knowledge: Graph) -> None:
    assert inline_number_findings(knowledge) == []


STATEMENTS = """
plbp:S1 a gk:EvidenceStatement ; gk:sourceLine 12 ; gk:aboutAction gk:PhysicalTherapy .
plbp:S2 a gk:UnspecifiedHeading ; gk:sourceLine 26 ; gk:aboutAction gk:EpiduralSteroidInjection ;
    gk:noPopulationBecause "named without content" .
plbp:S3 a gk:RecommendationFor ; gk:sourceLine 10 ; gk:recommendsAction gk:ActivePhysicalTherapy ;
    gk:population plbp:GuidelinePopulation .
"""


def _population_findings(graph: Graph) -> set[tuple[str | None, str, tuple[int, ...]]]:
    queries = [load_query(CHECKS, "population-violation"), load_query(CHECKS, "population-info")]
    return {(f.focus, f.severity, f.source_lines) for f in run_checks(EmbeddedStore.from_graph(graph), queries)}


def test_a_statement_naming_a_care_action_needs_a_population_or_a_reason(ontology: Graph) -> None:
    found = _population_findings(ontology + turtle(STATEMENTS))
    assert found == {("plbp:S1", "Violation", (12,)), ("plbp:S2", "Info", (26,))}


def test_the_shipped_statements_have_populations_or_reasons(knowledge: Graph) -> None:
    assert _population_findings(knowledge) == {("plbp:L26", "Info", (26,)), ("plbp:L27", "Info", (27,)),
                                               ("plbp:L28", "Info", (28,))}


@pytest.mark.slow
def test_repetitions_must_agree_unless_the_graph_says_why(knowledge: Graph, project: Project) -> None:
    # lines 31 and 41 are a repetition whose statuses may differ (plbp:repetition-L31-L41); the example case n11
    # (higher chronicity, conservative management not failed) gets L41 applicable and L31 not: without the record
    # of why, the check names the pair and a case where they differ
    assert repetition_status_findings(knowledge, project) == []
    without = Graph()
    for t in knowledge:
        if t[0] != URIRef("https://w3id.org/guideline-kg/plbp/repetition-L31-L41"):
            without.add(t)
    findings = repetition_status_findings(without, project)
    assert [(f.kind, f.severity, f.source_lines) for f in findings] == [("repetition", "Violation", (31, 41))]
    assert "plbp:L31" in findings[0].message and "plbp:L41" in findings[0].message and "case " in findings[0].message
