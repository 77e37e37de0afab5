"""Exports: RDF round trips, JSON-LD context, CSV tables, the FHIR CPG Bundle and CarePlan, the export command."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from rdflib import Graph
from rdflib.compare import to_isomorphic

from conftest import PLBP
from guideline_kg.cases.reader import load_cases
from guideline_kg.cli.main import main
from guideline_kg.core.namespaces import GENERIC_PREFIXES
from guideline_kg.core.project import Project
from guideline_kg.core.rdfio import read_graph
from guideline_kg.knowledge.statements import list_statements
from guideline_kg.outputs.build import close_imports
from guideline_kg.outputs.export import RDF_FORMATS, csv_tables, jsonld_context, rdf_export
from guideline_kg.outputs.fhir_cpg import (
    CPG,
    FHIRPATH,
    INTERIM_EXPRESSION,
    STRENGTH_EXTENSION,
    careplan,
    compile_applicability,
    fhir_id,
    pathway_bundle,
    read_pathway,
    recommendations_from_bundle,
    validate_resource,
)
from guideline_kg.reasoning.derive import Evaluator
from guideline_kg.store.stores import EmbeddedStore

PROJECT = Project.at()
PARSERS = {"turtle": "turtle", "ntriples": "nt", "rdfxml": "xml", "jsonld": "json-ld"}


@pytest.fixture(scope="module")
def canonical(knowledge: Graph) -> int:
    """The source graph's blank-node-independent hash, computed once (the expensive half of an isomorphism test):
    the merge as one ontology, its imports closed (docs/export.md, RDF; tests/test_strict_export.py)."""
    return to_isomorphic(close_imports(knowledge)).internal_hash()


@pytest.fixture(scope="module")
def store(knowledge: Graph) -> EmbeddedStore:
    return EmbeddedStore.from_graph(knowledge)


@pytest.fixture(scope="module")
def bundle(store: EmbeddedStore) -> dict:
    return pathway_bundle(store, PROJECT)


@pytest.fixture(scope="module")
def evaluator(knowledge: Graph) -> Evaluator:
    return Evaluator(knowledge, PROJECT)


def _resources(bundle: dict, profile: str | None = None) -> list[dict]:
    out = [e["resource"] for e in bundle["entry"]]
    if profile:
        out = [r for r in out if r.get("meta", {}).get("profile", [""])[0] == CPG + profile]
    return out


# -- RDF -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", sorted(RDF_FORMATS))
@pytest.mark.slow
def test_rdf_export_reimports_isomorphic_to_the_source(fmt: str, knowledge: Graph,
                                                      canonical: int) -> None:
    text = rdf_export(knowledge, PROJECT, fmt)
    again = Graph().parse(data=text, format=PARSERS[fmt])
    assert len(again) == len(close_imports(knowledge))
    assert to_isomorphic(again).internal_hash() == canonical


@pytest.mark.slow
def test_jsonld_refers_to_the_published_context_by_url(knowledge: Graph, canonical: int,
                                                       tmp_path: Path) -> None:
    context_file = PROJECT.kg_dir / "context.jsonld"
    doc = json.loads(rdf_export(knowledge, PROJECT, "jsonld", context_url=context_file.as_uri()))
    assert doc["@context"] == context_file.as_uri()
    out = tmp_path / "kg.jsonld"
    out.write_text(json.dumps(doc))
    assert to_isomorphic(read_graph(out)).internal_hash() == canonical


def test_committed_context_declares_exactly_the_project_prefixes() -> None:
    """The generic prefixes and the guideline's own (from its manifest), nothing else; the other entries are
    terms of the case vocabulary (docs/cases.md), each naming an IRI by one of those prefixes."""
    assert PROJECT.namespace is not None
    prefix, namespace = PROJECT.namespace
    context = jsonld_context(PROJECT)
    prefixes = {k: v for k, v in context.items() if isinstance(v, str)}
    assert prefixes == {**{p: str(ns) for p, ns in GENERIC_PREFIXES.items()}, prefix: namespace}
    terms = {k: v for k, v in context.items() if not isinstance(v, str)}
    assert all(isinstance(t, dict) and t["@id"].split(":", 1)[0] in prefixes for t in terms.values())



def test_csv_tables_have_neo4j_headers_and_every_edge_ends_at_a_node(store: EmbeddedStore) -> None:
    tables = csv_tables(store, PROJECT)
    nodes = list(csv.DictReader(io.StringIO(tables["nodes.csv"])))
    edges = list(csv.DictReader(io.StringIO(tables["edges.csv"])))
    assert list(nodes[0]) == ["iri:ID", ":LABEL", "label", "text", "sourceLine:int", "notation"]
    assert list(edges[0]) == [":START_ID", ":END_ID", ":TYPE", "predicate"]
    ids = {n["iri:ID"] for n in nodes}
    assert len(ids) == len(nodes)
    assert all(e[":START_ID"] in ids and e[":END_ID"] in ids for e in edges)
    l04 = next(n for n in nodes if n["iri:ID"].endswith("/plbp/L04"))
    assert "RecommendationFor" in l04[":LABEL"].split(";") and l04["sourceLine:int"] == "4"
    assert any(e[":START_ID"] == l04["iri:ID"] and e[":TYPE"] == "recommendsAction" for e in edges)


# -- FHIR: the pathway -------------------------------------------------------------------------------------------

def test_every_resource_and_the_bundle_validate_against_fhir_r4b(bundle: dict) -> None:
    for resource in _resources(bundle):
        validate_resource(resource)
    validate_resource(bundle)
    assert bundle["type"] == "transaction"


def test_bundle_read_back_gives_the_recommendations_of_the_graph(bundle: dict, store: EmbeddedStore) -> None:
    expected = sorted(({"id": s["id"], "action": s["action"], "direction": s["direction"],
                        "strength": s["strength"], "citations": s["citations"]}
                       for s in list_statements(store, PROJECT) if s["action"]), key=lambda x: x["id"])
    populated = {str(r["statement"]) for r in store.select(
        "SELECT DISTINCT ?statement WHERE { ?statement gk:recommendsAction [] ; gk:population [] }").dicts()}
    assert recommendations_from_bundle(bundle) == [e for e in expected if e["id"] in populated]
    assert len(populated) >= 10


def test_ids_and_full_urls_are_stable_and_unique(bundle: dict, store: EmbeddedStore) -> None:
    again = pathway_bundle(store, PROJECT)
    assert json.dumps(again, sort_keys=True) == json.dumps(bundle, sort_keys=True)
    keys = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]]
    assert len(keys) == len(set(keys))
    for e in bundle["entry"]:
        r = e["resource"]
        assert e["request"] == {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}
        assert e["fullUrl"].endswith(e["request"]["url"]) and r.get("url", e["fullUrl"]) == e["fullUrl"]
        suffix = "-donotperform" if r.get("doNotPerform") else ""
        assert r["id"] == fhir_id(r["identifier"][0]["value"] + suffix, "plbp")
        assert r["id"].startswith("plbp-") and r["url"] == f"https://w3id.org/guideline-kg/plbp/fhir/{e['request']['url']}"


def test_pathway_points_to_its_steps_and_steps_to_their_recommendations(bundle: dict) -> None:
    [pathway] = _resources(bundle, "cpg-pathwaydefinition")
    strategies = _resources(bundle, "cpg-strategydefinition")
    recommendations = _resources(bundle, "cpg-recommendationdefinition")
    assert pathway["type"]["coding"][0]["code"] == "clinical-protocol"
    assert {s["type"]["coding"][0]["code"] for s in strategies} == {"workflow-definition"}
    # source order: the overarching statement (line 2), the four algorithm steps, the considerations (line 37)
    assert [s["title"] for s in strategies] == [
        "Preamble: title and overarching recommendation", "Initial Evaluation", "First-Line Approaches",
        "Second-Line Approaches", "Advanced Options for Refractory Cases", "Important Considerations and Pitfalls"]
    pointed = [a["definitionCanonical"] for a in pathway["action"]]
    assert pointed == [s["url"] for s in strategies]  # the pathway points at strategies only
    under = {a["definitionCanonical"] for s in strategies for a in s["action"]}
    assert {r["url"] for r in recommendations} == under
    by_title = {s["title"]: {a["definitionCanonical"].rsplit("/", 1)[-1] for a in s["action"]} for s in strategies}
    assert by_title["Preamble: title and overarching recommendation"] == {"plbp-L02"}
    assert by_title["Important Considerations and Pitfalls"] == {"plbp-L37"}
    assert by_title["Initial Evaluation"] == {"plbp-L04", "plbp-L05", "plbp-L05-urgent", "plbp-L06"}


def test_recommendation_carries_condition_strength_direction_and_citations(bundle: dict) -> None:
    recs = {r["id"]: r for r in _resources(bundle, "cpg-recommendationdefinition")}
    l37 = recs["plbp-L37"]
    assert l37["type"]["coding"][0]["code"] == "eca-rule"
    action = l37["action"][0]
    [cond] = action["condition"]
    # no compiled expression yet: the interim FHIRPath {} (empty, "not known"), never the OWL class IRI
    assert cond["kind"] == "applicability" and cond["expression"]["language"] == FHIRPATH
    assert cond["expression"]["expression"] == INTERIM_EXPRESSION
    assert "Conditions (all must hold)" in cond["expression"]["description"]
    ext = {e["url"]: e["valueCodeableConcept"] for e in action["extension"]}
    assert ext[CPG + "cpg-directionOfRecommendation"]["coding"][0]["code"] == "against"
    assert ext["http://hl7.org/fhir/StructureDefinition/cqf-strengthOfRecommendation"] == {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/recommendation-strength", "code": "strong"}],
        "text": "avoid"}
    # line 37 cites reference 1; the source has no reference list, so there is no bibliographic citation to give
    assert l37["relatedArtifact"] == [{
        "type": "citation", "label": "1",
        "display": "reference 1: Known only by its number: the source gives no reference list."}]
    activities = {r["url"]: r for r in _resources(bundle) if r["resourceType"] == "ActivityDefinition"}
    assert activities[action["definitionCanonical"]]["doNotPerform"] is True  # line 37: avoid routine imaging
    assert recs["plbp-L05-urgent"]["action"][0]["priority"] == "urgent"


def test_strength_codes_come_from_the_mapping_file(bundle: dict) -> None:
    codes = {}
    for r in _resources(bundle, "cpg-recommendationdefinition"):
        ext = next(e for e in r["action"][0]["extension"] if e["url"] == STRENGTH_EXTENSION)
        codes[ext["valueCodeableConcept"]["text"]] = ext["valueCodeableConcept"]["coding"][0]["code"]
    assert codes["may be considered"] == "weak" and codes["strongly recommended"] == "strong"
    assert set(codes.values()) == {"strong", "weak"}


def test_a_recommendation_with_alternatives_groups_one_sub_action_per_activity(bundle: dict) -> None:
    l23 = next(r for r in _resources(bundle) if r["id"] == "plbp-L23")["action"][0]
    assert l23["selectionBehavior"] == "any" and len(l23["action"]) == 3
    assert "definitionCanonical" not in l23


# -- FHIR: a case's CarePlan ------------------------------------------------------------------------------------

@pytest.mark.parametrize("case_file", ["c04-urgent-deficit.ttl", "c06-opioid-no-relief.ttl", "c05-sparse-data.ttl"])
def test_careplan_lists_exactly_the_applicable_recommendations_with_reasons(
        case_file: str, evaluator: Evaluator, store: EmbeddedStore) -> None:
    [case] = load_cases([PROJECT.cases_dir / case_file])
    result = evaluator.evaluate(case)
    plan = careplan(result, read_pathway(store, PROJECT))
    validate_resource(plan)
    pathway = read_pathway(store, PROJECT)
    applicable = {r["id"] for r in result.to_json()["recommendations"]
                  if r["status"] == "applicable" and any(p.iri == r["id"] for p in pathway.recommendations)}
    got = {a["detail"]["instantiatesCanonical"][0].rsplit("/", 1)[-1] for a in plan.get("activity", [])}
    assert got == {fhir_id(i, "plbp") for i in applicable}
    for activity in plan.get("activity", []):
        assert activity["progress"] and activity["progress"][0]["text"].startswith("Because: ")
    [patient] = [c for c in plan["contained"] if c["resourceType"] == "Patient"]
    assert plan["subject"]["reference"] == f"#{patient['id']}"
    assert patient["identifier"][0]["value"] == str(case.patient)


def test_careplan_marks_advice_against_as_do_not_perform(evaluator: Evaluator, store: EmbeddedStore) -> None:
    [case] = load_cases([PROJECT.cases_dir / "c13-routine-repeat-imaging.ttl"])
    plan = careplan(evaluator.evaluate(case), read_pathway(store, PROJECT))
    flags = {a["detail"]["instantiatesCanonical"][0].rsplit("/", 1)[-1]: a["detail"]["doNotPerform"]
             for a in plan["activity"]}
    assert flags.get("plbp-L37") is True and flags.get("plbp-L02") is False


# -- the command ------------------------------------------------------------------------------------------------

def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_command_fhir_to_stdout_is_a_transaction_bundle(capsys) -> None:
    code, out, _err = run(capsys, "export", "--format", "fhir")
    assert code == 0 and json.loads(out)["type"] == "transaction"


def test_exported_conditions_are_the_compiled_fhirpath_that_apply_runs(capsys, knowledge) -> None:
    """The written Bundle carries each recommendation's compiled FHIRPath (not the interim {}), the very
    expressions $apply evaluates: both come from compile_applicability."""
    code, out, err = run(capsys, "export", "--format", "fhir")
    assert code == 0 and "interim" not in err
    plans = {e["resource"]["id"]: e["resource"] for e in json.loads(out)["entry"]
             if e["resource"]["resourceType"] == "PlanDefinition"}
    pathway = read_pathway(EmbeddedStore.from_graph(knowledge), PROJECT)
    assert compile_applicability(pathway, knowledge, PROJECT) is None
    # L19 (line 19: opioids without meaningful relief within a month are unlikely to help): an applicability
    # condition, FHIRPath, the compiled expression of its statement
    # (the second applicability condition, text/cql naming the Library's define, is tested in test_cql_elm.py)
    [condition] = [c for a in plans["plbp-L19"]["action"] for c in a.get("condition", [])
                   if c["kind"] == "applicability" and c["expression"]["language"] != "text/cql"]
    assert condition["expression"]["language"] == "text/fhirpath"
    assert condition["expression"]["expression"] != "{}"
    assert condition["expression"]["expression"] == pathway.expressions[str(PLBP.L19)]


def test_command_fhir_package_writes_a_tgz(capsys, tmp_path: Path) -> None:
    code, out, err = run(capsys, "export", "--format", "fhir-package", "--out", str(tmp_path / "plbp.tgz"))
    assert code == 0 and out == "" and "plbp.tgz" in err
    with tarfile.open(tmp_path / "plbp.tgz") as tar:
        names = tar.getnames()
    assert "package/package.json" in names and "package/.index.json" in names
    assert "package/PlanDefinition-plbp-L04.json" in names


def test_command_csv_writes_two_tables_into_a_folder(capsys, tmp_path: Path) -> None:
    code, out, _err = run(capsys, "export", "--format", "csv", "--out", str(tmp_path / "csv"))
    assert code == 0 and out == ""
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == ["edges.csv", "nodes.csv"]


def test_command_graph_formats_reuse_the_algorithm_graph(capsys) -> None:
    code, out, _ = run(capsys, "export", "--format", "cytoscape")
    assert code == 0 and json.loads(out)["elements"]["nodes"]
    code, out, _ = run(capsys, "export", "--format", "graphml")
    assert code == 0 and out.lstrip().startswith("<?xml") and "graphml" in out


def test_command_careplan_for_several_cases_is_a_collection_bundle(capsys) -> None:
    files = [str(PROJECT.cases_dir / n) for n in ("c01-first-visit.ttl", "c04-urgent-deficit.ttl")]
    code, out, _ = run(capsys, "export", "--format", "careplan", "--case", files[0], "--case", files[1])
    doc = json.loads(out)
    assert code == 0 and doc["type"] == "collection"
    assert [e["resource"]["id"] for e in doc["entry"]] == ["careplan-c01-first-visit", "careplan-c04-urgent-deficit"]


@pytest.mark.parametrize("argv, message", [
    (["--format", "careplan"], "needs --case"),
    (["--format", "turtle", "--case", "guidelines/plbp/cases"], "--case applies to"),
    (["--format", "csv"], "give --out DIR"),
    (["--format", "fhir-package"], "give --out FILE.tgz"),
    (["--format", "fhir-package", "--out", "guidelines"], "give --out FILE.tgz"),
    (["--format", "turtle", "--jsonld-context", "https://w3id.org/x"], "jsonld only"),
])
def test_command_bad_arguments_exit_2_with_a_message(capsys, argv: list[str], message: str) -> None:
    code, out, err = run(capsys, "export", *argv)
    assert code == 2 and out == "" and message in err and "Traceback" not in err


def test_command_refuses_to_overwrite_its_input_and_leaves_it_alone(capsys, tmp_path: Path) -> None:
    case = tmp_path / "c.ttl"
    case.write_bytes((PROJECT.cases_dir / "c01-first-visit.ttl").read_bytes())
    before = hashlib.sha256(case.read_bytes()).hexdigest()
    code, _out, err = run(capsys, "export", "--format", "careplan", "--case", str(case), "--out", str(case))
    assert code == 2 and "inputs are never written" in err
    assert hashlib.sha256(case.read_bytes()).hexdigest() == before


def test_command_malformed_case_exits_2_and_writes_nothing(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ttl"
    bad.write_text("@prefix gk: <https://w3id.org/guideline-kg/ontology#> .\ngk:a gk:b .\n")
    target = tmp_path / "out.json"
    code, _out, err = run(capsys, "export", "--format", "cds-cards", "--case", str(bad), "--out", str(target))
    assert code == 2 and "bad.ttl" in err and not target.exists()


def test_a_compiled_expression_replaces_the_interim_condition(store: EmbeddedStore) -> None:
    """The compiler's hook: ``Pathway.expressions`` by statement (or population) IRI, a FHIRPath string or an
    Expression; the other recommendations keep the interim ``{}``."""
    pathway = read_pathway(store, PROJECT)
    plbp = "https://w3id.org/guideline-kg/plbp/"
    pathway.expressions[plbp + "L04"] = "Procedure.exists()"
    pathway.expressions[plbp + "Population-L37"] = {"language": "text/cql-identifier", "expression": "InL37",
                                                    "reference": "Library/plbp-applicability"}
    recs = {r["id"]: r for r in _resources(pathway_bundle(store, PROJECT, pathway), "cpg-recommendationdefinition")}
    cond = {rid: recs[rid]["action"][0]["condition"][0]["expression"] for rid in ("plbp-L04", "plbp-L37", "plbp-L06")}
    assert (cond["plbp-L04"]["language"], cond["plbp-L04"]["expression"]) == (FHIRPATH, "Procedure.exists()")
    assert (cond["plbp-L37"]["language"], cond["plbp-L37"]["expression"]) == ("text/cql-identifier", "InL37")
    assert cond["plbp-L06"]["expression"] == INTERIM_EXPRESSION
    assert all(c["description"].startswith("Applies to: ") for c in cond.values())
