"""The patient result (issue 12): conflicts, urgency, scope said once, explanations in labels and values with
the thresholds that decided them, missing data computed from the conditions' structure, options named without
content, the `explain` command. Expectations are written by reading the example cases and the definitions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rdflib import Graph, Literal

from conftest import REPO
from guideline_kg.cases.reader import load_cases
from guideline_kg.cli.main import main
from guideline_kg.core.namespaces import GK, RDF, SH
from guideline_kg.core.project import Project
from guideline_kg.knowledge.graph import load_knowledge
from guideline_kg.reasoning.derive import Evaluator, results_graph

PROJECT = Project.at(REPO)
CASES = PROJECT.require("cases", "the example cases")
PLBP = "https://w3id.org/guideline-kg/plbp/"


def _case(stem: str) -> str:
    (path,) = [p for p in CASES.iterdir() if p.name.startswith(stem + "-") and not p.name.endswith(".expected.json")]
    return str(path)


def _json(capsys, *args: str) -> dict:
    capsys.readouterr()
    code = main(["recommend", *args, "--format", "json"])
    assert code == 0
    return json.loads(capsys.readouterr().out)["cases"][0]


def _rec(doc: dict, sid: str) -> dict:
    return next(r for r in doc["recommendations"] if r["id"] == PLBP + sid)


def test_conflict_is_carried_in_json_text_and_turtle(capsys) -> None:
    # c06: failed first-line care (L16 applies) and a 6-week opioid trial with 10% relief (L19 applies)
    doc = _json(capsys, _case("c06"))
    assert [(c["for"], c["against"]) for c in doc["conflicts"]] == [(PLBP + "L16", PLBP + "L19")]
    conflict = doc["conflicts"][0]
    assert conflict["for_text"].startswith("Extended-release oral opioids may be used")
    assert conflict["against_text"].startswith("Patients who do not experience meaningful pain relief")
    assert conflict["resolution"], "the graph records what would resolve it (plbp:conflict-L16-L19)"
    assert _rec(doc, "L16")["conflicts_with"] == [PLBP + "L19"]
    assert main(["recommend", _case("c06")]) == 0
    text = capsys.readouterr().out
    assert "!!! CONFLICT: L16 advises for and L19 advises against" in text
    assert main(["recommend", _case("c06"), "--format", "turtle"]) == 0
    g = Graph().parse(data=capsys.readouterr().out, format="turtle")
    (conflict_node,) = list(g.subjects(RDF.type, GK.PatientConflict))
    for_result = g.value(conflict_node, GK.conflictFor)
    assert g.value(for_result, GK.forStatement) is not None and str(g.value(for_result, GK.forStatement)) == PLBP + "L16"
    assert str(g.value(g.value(conflict_node, GK.conflictAgainst), GK.forStatement)) == PLBP + "L19"


def test_no_conflict_when_only_one_side_applies(capsys) -> None:
    # n05: first-line care failed (L16 applies) but the patient never took opioids (L19 not applicable)
    doc = _json(capsys, _case("n05"))
    assert _rec(doc, "L16")["status"] == "applicable" and _rec(doc, "L19")["status"] == "not-applicable"
    assert doc["conflicts"] == []


def test_urgency_is_a_field_with_its_finding_and_action(capsys) -> None:
    # c04: a progressive neurological deficit assessed present
    doc = _json(capsys, _case("c04"))
    (urgent,) = doc["urgent"]
    assert urgent["statement"] == PLBP + "L05-urgent"
    assert "progressive neurological deficit" in urgent["finding"]
    assert "surgical" in urgent["action"]
    assert _rec(doc, "L05-urgent")["urgent"] is True and _rec(doc, "L10")["urgent"] is False
    assert doc["recommendations"][0]["id"] == PLBP + "L05-urgent"
    g = results_graph([_evaluate("c04")])
    flagged = {str(g.value(n, GK.forStatement)) for n in g.subjects(GK.isUrgent, Literal(True))}
    assert flagged == {PLBP + "L05-urgent"}


def _evaluate(stem: str):
    (case,) = load_cases([Path(_case(stem))], PROJECT)
    return Evaluator(load_knowledge(PROJECT), PROJECT).evaluate(case)


def test_scope_is_said_once_per_case(capsys) -> None:
    doc = _json(capsys, _case("c06"))
    assert doc["scope"]["status"] == "in"
    assert any("laminectomy" in r for r in doc["scope"]["reasons"])
    assert not any("laminectomy" in b for r in doc["recommendations"] for b in r["because"])
    assert main(["recommend", _case("c06")]) == 0
    assert capsys.readouterr().out.count("index surgery was a laminectomy or foraminotomy") == 1


def test_out_of_scope_reason_does_not_contradict_itself(capsys) -> None:
    # n01: the patient has had no spine surgery: evaluated, out of scope (not invalid)
    doc = _json(capsys, _case("n01"))
    assert doc["scope"]["status"] == "out" and doc["in_scope"] is False
    assert doc["scope"]["reasons"] and "undetermined" not in doc["scope_reason"]
    assert all(r["status"] == "not-applicable" for r in doc["recommendations"])


def test_applicable_only_shows_only_applicable_statements(capsys) -> None:
    assert main(["recommend", _case("c05"), "--applicable-only"]) == 0
    out = capsys.readouterr().out
    marks = {line[:4] for line in out.splitlines() if re.match(r"\[.\] ", line)}
    assert marks == {"[x] "}


def test_explanations_name_things_by_label_never_by_node_id(capsys) -> None:
    for stem in ("c06", "c09", "c11", "n09"):
        doc = _json(capsys, _case(stem))
        texts = [t for r in doc["recommendations"] for t in r["because"] + r["missing"]] + doc["scope"]["reasons"]
        assert texts
        node_ids = [t for t in texts if re.search(rf"\b{stem}(-[a-z0-9]+)?\b", t)]
        assert node_ids == [], node_ids


def test_thresholds_that_decided_a_result_are_shown_with_where_they_are_defined(capsys) -> None:
    # c06: the opioid trial lasted 6 weeks (>= 4, the one-month trial) with 10% relief (< 30, not meaningful)
    l19 = _rec(_json(capsys, _case("c06")), "L19")
    assert any("10" in b and "< 30" in b for b in l19["because"])
    names = {t["name"] for t in l19["thresholds"]}
    assert len(names) == 2 and all(n.startswith(PLBP) for n in names)
    assert {t["value"] for t in l19["thresholds"]} == {"≥ 4", "< 30"}


def test_missing_data_asks_only_what_is_absent(capsys) -> None:
    # n08: physical therapy of unspecified type and non-opioid medication, both without adequate response
    l16 = _rec(_json(capsys, _case("n08")), "L16")
    assert l16["status"] == "undetermined"
    (question,) = l16["missing"]
    assert question.startswith("Was the physical therapy active physical therapy?")
    assert "non-opioid" not in question, "the non-opioid trial is recorded; only the type of PT is missing"


def test_a_patient_who_never_took_opioids_is_not_asked_about_opioid_relief(capsys) -> None:
    doc = _json(capsys, _case("n05"))
    assert not any("relief" in m.lower() for r in doc["recommendations"] for m in r["missing"])


def test_options_named_without_content_are_reported_to_patients_they_concern(capsys) -> None:
    # n09: a failed epidural steroid injection (line 26); c09: facet joint involvement (line 27)
    n09 = _json(capsys, _case("n09"))
    assert [o["id"] for o in n09["unspecified_options"]] == [PLBP + "L26"]
    assert n09["unspecified_options"][0]["note"] == "the guideline names this option without saying more"
    assert PLBP + "L27" in [o["id"] for o in _json(capsys, _case("c09"))["unspecified_options"]]
    assert _json(capsys, _case("c01"))["unspecified_options"] == []
    assert all(r["id"] not in (PLBP + "L26", PLBP + "L27") for r in n09["recommendations"])


def test_divergent_repetition_says_why(capsys) -> None:
    # n11: stage III chronicity (L41 applies), conservative management has not failed (L31 does not)
    doc = _json(capsys, _case("n11"))
    l31, l41 = _rec(doc, "L31"), _rec(doc, "L41")
    assert l41["status"] == "applicable" and l31["status"] == "not-applicable"
    assert l31["note"] and "L41" in l31["note"]


def test_explain_text_and_json(capsys) -> None:
    capsys.readouterr()
    assert main(["explain", _case("n08"), "L16"]) == 0
    out = capsys.readouterr().out
    assert "UNDETERMINED" in out and "What would change it" in out and "to APPLICABLE" in out
    assert main(["explain", _case("c06"), "plbp:L19", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "applicable" and doc["conflicts_with"] == [PLBP + "L16"]
    (change,) = doc["would_change"]
    assert change["to"] == "not-applicable" and change["any_of"]
    # the smallest flips come first, and each is a list of facts with a kind
    assert len(change["any_of"][0]) == 1 and change["any_of"][0][0]["kind"] in ("record", "refine", "change")


@pytest.mark.parametrize("argv, code", [(["L99"], 2), (["L16", "--format", "json"], 0)])
def test_explain_exit_codes(capsys, argv, code) -> None:
    assert main(["explain", _case("c05"), *argv]) == code
    if code == 2:
        assert "no statement 'L99'" in capsys.readouterr().err


def test_invalid_case_in_turtle_is_its_shacl_report_with_every_violation(capsys) -> None:
    invalid = REPO / "tests" / "data" / "invalid-cases" / "age-out-of-range.ttl"  # gk:ageYears 130
    capsys.readouterr()
    assert main(["recommend", str(invalid), "--format", "turtle"]) == 1
    g = Graph().parse(data=capsys.readouterr().out, format="turtle")
    (report,) = list(g.subjects(RDF.type, SH.ValidationReport))
    assert g.value(report, SH.conforms) == Literal(False)
    (result,) = list(g.objects(report, SH.result))
    assert g.value(result, SH.resultPath) == GK.ageYears and g.value(result, SH.value).toPython() == 130
    assert not list(g.subjects(RDF.type, GK.RecommendationResult))


def test_json_case_carries_the_readers_notes(capsys) -> None:
    doc = _json(capsys, _case("fhir-c06"))
    assert isinstance(doc["input_notes"], list)
    assert all(set(n) == {"place", "message"} for n in doc["input_notes"])
