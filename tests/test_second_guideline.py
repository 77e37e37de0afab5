"""A second guideline through every command, with no Python written for it.

`tests/fixtures/mini-guideline/` is a FICTIONAL, test-only guideline package (ankle sprain; IRIs under
https://w3id.org/guideline-kg/test/mini/): five source lines, three recommendations, two populations, an algorithm,
example cases with expected results, a FHIR case mapping, a JSON-LD context, a cohort profile and competency
questions, named by its manifest. Every command below runs on it through `--kg`, exactly as a user would. The
expected values are read from the package's own files (source.txt, definitions.ttl, algorithm.ttl, the
*.expected.json and *.expected.tsv written from them), never produced by the code under test.
"""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pyoxigraph as ox
import pytest
import uvicorn
from fastapi.testclient import TestClient
from rdflib import Graph, Literal, URIRef

from conftest import MINI_HOME, free_port
from guideline_kg.cli.main import main
from guideline_kg.service.app import CDS_SERVICE_ID

MINI = "https://w3id.org/guideline-kg/test/mini/"
GK = "https://w3id.org/guideline-kg/ontology#"
CASES = MINI_HOME / "cases"
CQ = MINI_HOME / "queries" / "cq"
#: The example cases with their expected results (Turtle and FHIR).
EXAMPLES = sorted(p for p in CASES.iterdir() if p.suffix in (".ttl", ".json") and not p.name.endswith(".expected.json"))
#: The action statements of source.txt (lines 2-4) and the algorithm's nodes and edges (algorithm.ttl).
ACTIONS = {"L2", "L3", "L4"}
ALGORITHM_NODES = {"sec-main", "L2", "L3", "L4", "dp-ottawa"}
ALGORITHM_EDGES = {("sec-main", "L2"), ("L2", "dp-ottawa"), ("dp-ottawa", "L3"), ("sec-main", "L4")}


def run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    """`guideline-kg --kg <mini> ARGV...` in-process: exit code, stdout, stderr."""
    code = main(["--kg", str(MINI_HOME), *[str(a) for a in argv]])
    out, err = capsys.readouterr()
    return code, out, err


def expected_of(path: Path) -> dict[str, Any]:
    name = path.name.removesuffix(".fhir.json").removesuffix(".ttl")
    return json.loads((CASES / f"{name}.expected.json").read_text(encoding="utf-8"))


def local(iri: str) -> str:
    return iri.rsplit("/", 1)[-1].rsplit("#", 1)[-1]


# ---- the package ------------------------------------------------------------------------------------------------

def test_the_package_is_complete_and_every_case_has_its_expected_result() -> None:
    for part in ("guideline.toml", "source.txt", "guideline.ttl", "definitions.ttl", "vocabulary.ttl", "algorithm.ttl",
                 "fhir-cpg-mapping.ttl", "context.jsonld", "cohort-profile.json", "shapes/case-shapes.ttl",
                 "mappings/fhir-case-mapping.json", "mappings/codes.sssom.tsv"):
        assert (MINI_HOME / part).is_file(), part
    assert len(EXAMPLES) >= 7 and any(p.name.endswith(".fhir.json") for p in EXAMPLES)
    for path in EXAMPLES:
        assert set(expected_of(path)["statuses"]) == ACTIONS, path.name
    assert sorted(CQ.glob("*.rq")) and all(p.with_suffix(".expected.tsv").is_file() for p in CQ.glob("*.rq"))


# ---- build, statements, validate --------------------------------------------------------------------------------

@pytest.mark.hermit
@pytest.mark.slow
def test_build(capsys, tmp_path: Path) -> None:
    code, out, err = run(capsys, "build", "--out", tmp_path, "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert report["guideline"] == MINI + "guideline"
    assert report["consistent"] is True and report["unsatisfiable_classes"] == []
    assert report["statements"] == 5 and report["source_lines"] == 5 and report["references"] == 2
    assert report["populations"] == 2  # definitions.ttl: the guideline's and line 3's
    merged = Graph().parse(tmp_path / "merged.ttl")
    assert (URIRef(MINI + "L3"), URIRef(GK + "verbatimText"),
            Literal("Avoid routine radiography when the Ottawa ankle rules are negative")) in merged


def test_statements(capsys, mini_expected_lines) -> None:
    code, out, _ = run(capsys, "statements", "--format", "json")
    assert code == 0
    records = json.loads(out)
    assert {line: (r["text"], r["citations"]) for r in records for line in r["source_lines"]} == mini_expected_lines
    by_id = {local(r["id"]): r for r in records}
    assert by_id["L3"]["direction"] == "against" and by_id["L3"]["action"] == [MINI + "AnkleRadiography"]
    assert by_id["L2"]["direction"] == by_id["L4"]["direction"] == "for"


@pytest.mark.hermit  # the contradiction analysis of `validate` runs the reasoner
def test_validate_the_guideline_and_its_cases(capsys) -> None:
    code, out, err = run(capsys, "validate", CASES)
    assert code == 0, out + err
    assert "CONFORMS" in out and f"{len(EXAMPLES)} cases" in out
    assert "content-gap" in out  # line 5, "Return to sport:", announces content the source does not give


@pytest.mark.hermit
def test_validate_refuses_a_case_that_breaks_the_packages_own_shapes(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ttl"
    bad.write_text((CASES / "m01-sprain-rules-negative.ttl").read_text().replace("gk:ageYears 34", "gk:ageYears 130"))
    code, out, err = run(capsys, "validate", bad)
    assert code == 1
    assert "The age must be one whole number of years from 0 to 120" in out + err  # shapes/case-shapes.ttl


# ---- recommend on both paths ------------------------------------------------------------------------------------

def _recommend(capsys, reasoner: str) -> dict[str, dict[str, Any]]:
    code, out, err = run(capsys, "recommend", CASES, "--reasoner", reasoner, "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    return {d["case"]: d for d in (data if isinstance(data, list) else data["cases"])}


def _assert_expected(results: dict[str, dict[str, Any]]) -> None:
    assert len(results) == len(EXAMPLES)
    for path in EXAMPLES:
        expected = expected_of(path)
        got = results[expected["case"]]
        assert got["in_scope"] == expected["in_scope"], expected["case"]
        assert {local(r["id"]): r["status"] for r in got["recommendations"]} == expected["statuses"], expected["case"]


def test_recommend_fast_path_gives_the_expected_results(capsys) -> None:
    _assert_expected(_recommend(capsys, "fast"))


@pytest.mark.hermit
@pytest.mark.slow
def test_recommend_hermit_path_gives_the_expected_results(capsys) -> None:
    _assert_expected(_recommend(capsys, "hermit"))


def test_recommend_explains_with_the_packages_definitions(capsys) -> None:
    results = _recommend(capsys, "fast")
    [l3] = [r for r in results["m06-rules-not-applied"]["recommendations"] if local(r["id"]) == "L3"]
    # computed from mini:OttawaRulesNegative's structure (hasValue on mini:ottawaRulesResult, which has no
    # gk:question, so the generic question made of the property's label is asked)
    assert l3["missing"] == ["What is the Ottawa ankle rules result? (decides: Ottawa ankle rules negative)"]
    assert results["m03-minor"]["scope_reason"]  # out of scope, and says why


# ---- render -----------------------------------------------------------------------------------------------------

def test_render_svg_and_a_case_overlay(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "render", "--out", tmp_path / "a.svg")
    assert code == 0, err
    svg = (tmp_path / "a.svg").read_text(encoding="utf-8")
    assert svg.lstrip().startswith(("<?xml", "<svg"))
    for text in ("Assessment and treatment", "negative?", "Functional support should be"):  # algorithm.ttl, lines
        assert text in svg, text
    code, _, err = run(capsys, "render", "--case", CASES / "m01-sprain-rules-negative.ttl", "--out", tmp_path / "c.svg")
    assert code == 0, err
    assert "<svg" in (tmp_path / "c.svg").read_text(encoding="utf-8")


def _graphml_graph(path: Path) -> tuple[set[str], set[tuple[str, str]]]:
    ns = {"g": "http://graphml.graphdrawing.org/xmlns"}
    root = ET.parse(path).getroot()
    nodes = {local(n.get("id", "")) for n in root.iterfind(".//g:node", ns)}
    edges = {(local(e.get("source", "")), local(e.get("target", ""))) for e in root.iterfind(".//g:edge", ns)}
    return nodes, edges


def test_render_graphml(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "render", "--format", "graphml", "--out", tmp_path / "a.graphml")
    assert code == 0, err
    assert _graphml_graph(tmp_path / "a.graphml") == (ALGORITHM_NODES, ALGORITHM_EDGES)


# ---- every export format ------------------------------------------------------------------------------------------

def test_export_fhir_cpg(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "export", "--format", "fhir", "--out", tmp_path / "cpg.json")
    assert code == 0, err
    bundle = json.loads((tmp_path / "cpg.json").read_text(encoding="utf-8"))
    ids = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]}
    assert {("PlanDefinition", f"mini-{s}") for s in ACTIONS} <= ids  # ids namespaced by the package id
    assert {("ActivityDefinition", f"mini-{a}") for a in ("OttawaAnkleRules", "AnkleRadiography-donotperform",
                                                          "FunctionalSupport")} <= ids
    assert all(e["resource"]["url"].startswith(MINI) for e in bundle["entry"])


@pytest.mark.parametrize("fmt,rdf_format", [("turtle", "turtle"), ("ntriples", "nt"), ("rdfxml", "xml"),
                                            ("jsonld", "json-ld")])
def test_export_rdf(capsys, tmp_path: Path, fmt: str, rdf_format: str) -> None:
    out = tmp_path / f"kg.{fmt}"
    code, _, err = run(capsys, "export", "--format", fmt, "--out", out)
    assert code == 0, err
    graph = Graph().parse(out, format=rdf_format)
    assert (URIRef(MINI + "L4"), URIRef(GK + "verbatimText"),
            Literal("Functional support should be used rather than immobilisation")) in graph
    if fmt == "jsonld":
        context = json.loads(out.read_text(encoding="utf-8"))["@context"]
        assert (context.get("mini") if isinstance(context, dict) else None) == MINI  # the package's context.jsonld


@pytest.mark.parametrize("fmt", ["graphml", "cytoscape"])
def test_export_algorithm_graph(capsys, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"algorithm.{fmt}"
    code, _, err = run(capsys, "export", "--format", fmt, "--out", out)
    assert code == 0, err
    if fmt == "graphml":
        assert _graphml_graph(out) == (ALGORITHM_NODES, ALGORITHM_EDGES)
    else:
        elements = json.loads(out.read_text(encoding="utf-8"))["elements"]
        assert {local(n["data"]["id"]) for n in elements["nodes"]} == ALGORITHM_NODES
        assert {(local(e["data"]["source"]), local(e["data"]["target"])) for e in elements["edges"]} == ALGORITHM_EDGES


def test_export_csv(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "export", "--format", "csv", "--out", tmp_path / "csv")
    assert code == 0, err
    nodes = list(csv.DictReader(io.StringIO((tmp_path / "csv" / "nodes.csv").read_text(encoding="utf-8"))))
    edges = list(csv.DictReader(io.StringIO((tmp_path / "csv" / "edges.csv").read_text(encoding="utf-8"))))
    assert {MINI + s for s in ACTIONS} <= {n["iri:ID"] for n in nodes}
    assert any(e[":START_ID"] == MINI + "L3" and e[":END_ID"] == MINI + "AnkleRadiography" for e in edges)


@pytest.mark.parametrize("fmt", ["careplan", "cds-cards"])
def test_export_for_a_case(capsys, tmp_path: Path, fmt: str) -> None:
    """m01: adult, sprain, rules negative: L2, L3 (against) and L4 apply (m01...expected.json)."""
    out = tmp_path / f"m01.{fmt}.json"
    code, _, err = run(capsys, "export", "--format", fmt, "--case", CASES / "m01-sprain-rules-negative.ttl", "--out", out)
    assert code == 0, err
    data = json.loads(out.read_text(encoding="utf-8"))
    if fmt == "careplan":
        activities = {local(a["detail"]["instantiatesCanonical"][0]): a["detail"]["doNotPerform"]
                      for a in data["activity"]}
        assert activities == {"mini-L2": False, "mini-L3": True, "mini-L4": False}
    else:
        assert sorted(c["summary"] for c in data["cards"]) == sorted([
            "Apply the Ottawa ankle rules to decide whether radiography is needed",
            "Avoid routine radiography when the Ottawa ankle rules are negative",
            "Functional support should be used rather than immobilisation"])


# ---- query: the package's competency questions ----------------------------------------------------------------------

@pytest.mark.parametrize("question", sorted(CQ.glob("*.rq")), ids=lambda p: p.stem)
def test_query_a_competency_question(capsys, question: Path) -> None:
    code, out, err = run(capsys, "query", question, CASES, "--results", "--format", "tsv")
    assert code == 0, err
    expected = question.with_suffix(".expected.tsv").read_text(encoding="utf-8")
    assert _tsv_rows(out) == _tsv_rows(expected), question.stem
    assert _tsv_rows(expected)  # the question has an answer


def _tsv_rows(text: str) -> set[tuple[str, ...]]:
    """SPARQL TSV results as a set of rows of terms (oxigraph's parser, so "2" and "2"^^xsd:integer are one)."""
    solutions = ox.parse_query_results(text.encode("utf-8"), ox.QueryResultsFormat.TSV)
    names = [v.value for v in solutions.variables]
    return {tuple("" if s[n] is None else str(s[n]) for n in names) for s in solutions}


# ---- serve ------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served() -> dict[str, Any]:
    """`guideline-kg --kg <mini> serve CASES`, with uvicorn.run replaced so that the very app the command builds
    is driven by FastAPI's TestClient."""
    captured: dict[str, Any] = {}
    fhir_case = CASES / "fhir-m02-sprain-rules-positive.fhir.json"

    def fake_run(app: Any, **_: Any) -> None:
        with TestClient(app, base_url="http://127.0.0.1:8000") as client:  # serve checks the Host header
            captured["health"] = client.get("/health")
            captured["sparql"] = client.get("/sparql", params={"query": (
                f"SELECT ?s WHERE {{ ?r <{GK}forCase> <https://w3id.org/guideline-kg/case/m02> ; "
                f"<{GK}status> <{GK}Applicable> ; <{GK}forStatement> ?s . ?s <{GK}recommendsAction> [] }}")},
                headers={"accept": "application/sparql-results+json"})
            captured["discovery"] = client.get("/cds-services")
            body = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                    "context": {"patientId": "fhir-m02", "userId": "Practitioner/1"},
                    "prefetch": {"bundle": json.loads(fhir_case.read_text(encoding="utf-8"))}}
            captured["cards"] = client.post(f"/cds-services/{CDS_SERVICE_ID}", json=body)

    mp = pytest.MonkeyPatch()
    mp.setattr(uvicorn, "run", fake_run)
    try:
        captured["code"] = main(["--kg", str(MINI_HOME), "serve", "--port", str(free_port()), str(CASES)])
    finally:
        mp.undo()
    return captured


@pytest.mark.slow
def test_serve_health_sparql_and_cds_hooks(served: dict[str, Any]) -> None:
    assert served["code"] == 0
    assert served["health"].status_code == 200
    assert served["sparql"].status_code == 200
    bindings = served["sparql"].json()["results"]["bindings"]
    assert {local(b["s"]["value"]) for b in bindings} == {"L2", "L4"}  # m02-sprain-rules-positive.expected.json
    assert served["discovery"].status_code == 200
    assert [s["id"] for s in served["discovery"].json()["services"]] == [CDS_SERVICE_ID]
    assert served["cards"].status_code == 200
    assert sorted(c["summary"] for c in served["cards"].json()["cards"]) == sorted([
        "Apply the Ottawa ankle rules to decide whether radiography is needed",
        "Functional support should be used rather than immobilisation"])


# ---- cohort generate and evaluate ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,suffix", [("turtle", "ttl"), ("fhir-ndjson", "ndjson")])
@pytest.mark.slow
def test_cohort_generate_then_evaluate(capsys, tmp_path: Path, fmt: str, suffix: str) -> None:
    cohort = tmp_path / f"cohort.{suffix}"
    code, _, err = run(capsys, "cohort", "generate", "--n", "400", "--seed", "2", "--format", fmt, "--out", cohort)
    assert code == 0, err
    results = tmp_path / "results.jsonl"
    code, _, err = run(capsys, "cohort", "evaluate", cohort, "--out", results, "--summary", "--summary-format", "json")
    lines = [json.loads(x) for x in results.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 400 and len({d["case"] for d in lines}) == 400
    invalid = [d for d in lines if d.get("invalid")]
    assert code == (1 if invalid else 0), err
    valid = [d for d in lines if not d.get("invalid")]
    statuses = {local(r["id"]): set() for r in valid[0]["recommendations"]}
    for d in valid:
        for r in d["recommendations"]:
            statuses[local(r["id"])].add(r["status"])
    # the profile draws minors and adults, sprains and other injuries, rules positive, negative and not applied
    assert set(statuses) == ACTIONS
    assert all(s == {"applicable", "not-applicable", "undetermined"} for s in statuses.values()), statuses
    assert {d["in_scope"] for d in valid} == {True, False}


def test_cohort_profile_defects_are_found_invalid(capsys, tmp_path: Path) -> None:
    """The profile's planted defects (age 130, two injuries, a result that is no result) break the case shapes."""
    profile = json.loads((MINI_HOME / "cohort-profile.json").read_text(encoding="utf-8"))
    profile["invalid"]["rate"] = 1.0
    path = tmp_path / "always-invalid.json"
    path.write_text(json.dumps(profile), encoding="utf-8")
    cohort = tmp_path / "bad.ttl"
    code, _, err = run(capsys, "cohort", "generate", "--n", "30", "--profile", path, "--out", cohort)
    assert code == 0, err
    results = tmp_path / "r.jsonl"
    code, _, _ = run(capsys, "cohort", "evaluate", cohort, "--out", results)
    lines = [json.loads(x) for x in results.read_text(encoding="utf-8").splitlines()]
    assert code == 1 and len(lines) == 30 and all(d.get("invalid") for d in lines)
