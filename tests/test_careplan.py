"""A case's result as a CarePlan (issue 14, point 3): the input Patient as subject, urgency and conflicts as
DetectedIssues, advice against as doNotPerform activities, each activity linked to its recommendation.

Expectations from the source: c04 has a progressive neurological deficit, which line 5 says "would require prompt
surgical intervention" (urgent); c06 took opioids for a month without meaningful relief after failed first-line
care, so line 16 (extended-release opioids may be used) and line 19 (unlikely to benefit from longer-term use)
both apply and conflict; c13 asks for routine repeat imaging without an indication, which line 37 advises against.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guideline_kg.cases.reader import load_cases
from guideline_kg.cli.main import main
from guideline_kg.core.project import Project
from guideline_kg.outputs.fhir_cpg import Pathway, careplan, input_patient, pathway_bundle, read_pathway
from guideline_kg.reasoning.derive import Evaluator
from guideline_kg.store.stores import EmbeddedStore

FHIR = "https://w3id.org/guideline-kg/plbp/fhir/PlanDefinition/"


@pytest.fixture(scope="module")
def pathway(knowledge, project: Project) -> Pathway:
    return read_pathway(EmbeddedStore.from_graph(knowledge), project)


@pytest.fixture(scope="module")
def evaluator(knowledge, project: Project) -> Evaluator:
    return Evaluator(knowledge, project)


def plan_for(name: str, project: Project, evaluator: Evaluator, pathway: Pathway) -> dict:
    [case] = load_cases([project.cases_dir / name])
    return careplan(evaluator.evaluate(case), pathway)


def activities(plan: dict) -> dict[str, bool]:
    """Recommendation id (the PlanDefinition's) -> doNotPerform, for every activity."""
    return {a["detail"]["instantiatesCanonical"][0].removeprefix(FHIR): a["detail"]["doNotPerform"]
            for a in plan.get("activity", [])}


def contained(plan: dict, resource_type: str) -> list[dict]:
    return [c for c in plan.get("contained", []) if c["resourceType"] == resource_type]


def test_turtle_case_subject_is_a_contained_patient_carrying_the_case_iri(project, evaluator, pathway) -> None:
    plan = plan_for("c06-opioid-no-relief.ttl", project, evaluator, pathway)
    [patient] = contained(plan, "Patient")
    assert plan["subject"]["reference"] == f"#{patient['id']}"
    assert patient["identifier"] == [{"system": "urn:ietf:rfc:3986", "value": "https://w3id.org/guideline-kg/case/c06"}]


def test_conflict_is_a_detected_issue_naming_both_recommendations(project, evaluator, pathway) -> None:
    plan = plan_for("c06-opioid-no-relief.ttl", project, evaluator, pathway)
    [issue] = contained(plan, "DetectedIssue")
    assert issue["severity"] == "moderate" and issue["code"]["text"] == "conflicting recommendations"
    assert {i["reference"] for i in issue["implicated"]} == {FHIR + "plbp-L16", FHIR + "plbp-L19"}
    assert "line 16 (for) and line 19 (against)" in issue["detail"]
    assert {"reference": f"#{issue['id']}"}.items() <= plan["supportingInfo"][0].items()
    acts = activities(plan)
    assert acts["plbp-L16"] is False and acts["plbp-L19"] is True  # line 19 advises against: doNotPerform
    linked = [a for a in plan["activity"] if a["detail"]["instantiatesCanonical"][0] in
              (FHIR + "plbp-L16", FHIR + "plbp-L19")]
    assert all(any(f"#{issue['id']}" in p["text"] for p in a["progress"]) for a in linked)
    assert plan["note"][0]["text"].startswith("CONFLICT: ")


def test_urgency_is_a_high_severity_issue_and_the_first_activity(project, evaluator, pathway) -> None:
    plan = plan_for("c04-urgent-deficit.ttl", project, evaluator, pathway)
    [issue] = contained(plan, "DetectedIssue")
    assert issue["severity"] == "high" and issue["code"]["text"] == "urgent finding"
    assert "prompt surgical evaluation" in issue["detail"] and "line 5" in issue["detail"]
    assert issue["implicated"] == [{"reference": FHIR + "plbp-L05-urgent"}]
    first = plan["activity"][0]["detail"]
    assert first["instantiatesCanonical"] == [FHIR + "plbp-L05-urgent"]
    assert first["code"]["text"] == "prompt surgical evaluation"
    assert plan["note"][0]["text"].startswith("URGENT (line 5)")


def test_advice_against_is_do_not_perform(project, evaluator, pathway) -> None:
    acts = activities(plan_for("c13-routine-repeat-imaging.ttl", project, evaluator, pathway))
    assert acts["plbp-L37"] is True
    assert not any(v for k, v in acts.items() if k not in {"plbp-L37", "plbp-L19"})


def test_every_activity_instantiates_a_recommendation_of_the_exported_pathway(
        knowledge, project, evaluator, pathway) -> None:
    bundle = pathway_bundle(EmbeddedStore.from_graph(knowledge), project)
    recommendations = {e["resource"]["url"] for e in bundle["entry"]
                       if e["resource"]["meta"]["profile"][0].endswith("cpg-recommendationdefinition")}
    pathway_url = next(e["resource"]["url"] for e in bundle["entry"]
                       if e["resource"]["meta"]["profile"][0].endswith("cpg-pathwaydefinition"))
    for name in ("c04-urgent-deficit.ttl", "c06-opioid-no-relief.ttl"):
        plan = plan_for(name, project, evaluator, pathway)
        assert plan["instantiatesCanonical"] == [pathway_url]
        for a in plan["activity"]:
            assert a["detail"]["instantiatesCanonical"][0] in recommendations
            assert a["detail"]["status"] == "not-started"
        assert plan["status"] == "draft" and plan["intent"] == "proposal"


def test_input_patient_is_the_fullurl_or_the_id() -> None:
    assert input_patient({"resourceType": "Bundle", "entry": [
        {"fullUrl": "urn:uuid:0b5a1b0c-9c1e-4bbf-a4c4-6b8a6a3c2f10", "resource": {"resourceType": "Patient"}}]}) \
        == {"reference": "urn:uuid:0b5a1b0c-9c1e-4bbf-a4c4-6b8a6a3c2f10"}
    assert input_patient({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient",
                                                                             "id": "p1"}}]}) == {"reference": "Patient/p1"}
    assert input_patient({"resourceType": "Bundle", "entry": []}) is None


@pytest.mark.slow
def test_command_fhir_case_careplan_references_the_input_patient(capsys, project: Project, tmp_path: Path) -> None:
    source = project.cases_dir / "fhir-c06-opioid-no-relief.fhir.json"
    out = tmp_path / "c06.careplan.json"
    code = main(["export", "--format", "careplan", "--case", str(source), "--out", str(out)])
    capsys.readouterr()
    assert code == 0
    plan = json.loads(out.read_text(encoding="utf-8"))
    bundle = json.loads(source.read_text(encoding="utf-8"))
    [patient_entry] = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert plan["subject"]["reference"] == patient_entry["fullUrl"]
    assert not contained(plan, "Patient")
    [issue] = contained(plan, "DetectedIssue")
    assert issue["patient"]["reference"] == patient_entry["fullUrl"]
    # the FHIR twin of c06 gets the same plan as the Turtle case (fhir-c06...expected.json)
    expected = json.loads((project.cases_dir / "fhir-c06-opioid-no-relief.expected.json").read_text())
    applicable = {f"plbp-{k}" for k, v in expected["statuses"].items() if v == "applicable"}
    assert set(activities(plan)) <= applicable and {"plbp-L16", "plbp-L19", "plbp-L37"} <= set(activities(plan))
