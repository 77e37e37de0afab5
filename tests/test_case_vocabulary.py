"""The case vocabulary of issue 12 and its case shapes (guidelines/plbp/shapes/case-shapes.ttl), on both validation
engines: pySHACL (the reference) and the shapes compiled to SPARQL (what the gate runs).

Each expectation is written from the shapes: a patient needs gk:hadIndexSurgery, or gk:hadSpinalSurgery false, or
gk:painIsPostoperative false; the contradictions (no spine surgery with an index surgery or with post-operative pain;
not treated with an action and an episode of it or of a narrower action; not treated with opioid therapy or a broader
action while taking opioids) are violations; long-term opioids both considered and planned is a warning, and so is a
missing post-operative pain unless a false statement already puts the case out of scope."""

from __future__ import annotations

from pathlib import Path

import pytest
from rdflib import Graph

from guideline_kg.cases.reader import load_cases
from guideline_kg.checks.gate import Gate
from guideline_kg.checks.validate import validate_case
from guideline_kg.core.project import Project
from guideline_kg.core.rdfio import read_graph
from guideline_kg.knowledge.graph import load_knowledge

PROJECT = Project.at()
# pySHACL takes about a second a case: its runs are slow tests (make test-fast runs the compiled engine)
ENGINES = [pytest.param("pyshacl", marks=pytest.mark.slow), "compiled"]

PREFIXES = """@prefix gk:   <https://w3id.org/guideline-kg/ontology#> .
@prefix case: <https://w3id.org/guideline-kg/case/> .
@prefix xsd:  <http://www.w3.org/2001/XMLSchema#> .
"""
# a patient with the required date and nothing else; each test adds its facts
PATIENT = 'case:p a gk:Patient ; gk:assessmentDate "2026-03-02"^^xsd:date '
SURGERY = 'case:p-s a gk:Laminectomy ; gk:performedOn "2025-01-10"^^xsd:date .\n'
PAIN = "case:p-pain a gk:PostoperativePain ; gk:painDurationMonths 14 .\n"
IN_SCOPE = "; gk:hadIndexSurgery case:p-s ; gk:hasPostoperativePain case:p-pain "


def graph(facts: str, nodes: str = "") -> Graph:
    return Graph().parse(data=PREFIXES + PATIENT + facts + " .\n" + nodes, format="turtle")


def found(g: Graph, engine: str) -> list[tuple[str, str]]:
    """(severity, message) of every finding on the patient case:p."""
    return sorted((f.severity, f.message) for f in validate_case(g, PROJECT, engine=engine) if f.focus == "case:p")


def severities(g: Graph, engine: str) -> list[str]:
    return [s for s, _ in found(g, engine)]


# ---- the index surgery or a statement that puts the case out of scope --------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("facts", ["; gk:hadSpinalSurgery false", "; gk:painIsPostoperative false",
                                   "; gk:hadSpinalSurgery false ; gk:painIsPostoperative false",
                                   "; gk:hadSpinalSurgery true ; gk:painIsPostoperative false"])
def test_an_out_of_scope_statement_replaces_the_index_surgery_and_the_pain(engine: str, facts: str) -> None:
    # valid, and without the "no post-operative pain" warning: the case is out of scope, not undetermined
    assert found(graph(facts), engine) == []


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("facts", ["", "; gk:hadSpinalSurgery true", "; gk:painIsPostoperative true",
                                   "; gk:hadSpinalSurgery true ; gk:painIsPostoperative true"])
def test_without_surgery_or_out_of_scope_statement_the_case_is_invalid_naming_the_three_facts(engine: str,
                                                                                             facts: str) -> None:
    result = found(graph(facts), engine)
    violations = [m for s, m in result if s == "Violation"]
    assert len(violations) == 1
    assert all(term in violations[0] for term in
               ("gk:hadIndexSurgery", "gk:hadSpinalSurgery false", "gk:painIsPostoperative false"))
    # the pain is missing too, and nothing says the case is out of scope: the warning stays
    assert [s for s, m in result if "records no post-operative pain" in m] == ["Warning"]


@pytest.mark.parametrize("engine", ENGINES)
def test_an_in_scope_patient_with_the_new_facts_is_valid(engine: str) -> None:
    g = graph(IN_SCOPE + "; gk:hadSpinalSurgery true ; gk:painIsPostoperative true ; gk:longTermOpioidTherapyConsidered true"
              " ; gk:opioidMonitoringPlanInPlace false ; gk:receivesOpioidTherapy false"
              " ; gk:notTreatedWith gk:OpioidTherapy, gk:ActivePhysicalTherapy ; gk:hadTreatment case:p-pt, case:p-esi"
              " ; gk:hasFinding case:p-cmf",
              SURGERY + PAIN
              # physical therapy of unspecified type does not contradict "not treated with active physical therapy"
              + "case:p-pt a gk:TreatmentEpisode ; gk:careAction gk:PhysicalTherapy ; gk:response gk:NoAdequateResponse .\n"
              + "case:p-esi a gk:TreatmentEpisode ; gk:careAction gk:EpiduralSteroidInjection ; gk:response gk:NoAdequateResponse .\n"
              + "case:p-cmf a gk:ConservativeManagementFailure ; gk:assessmentStatus gk:AssessedPresent .\n")
    assert validate_case(g, PROJECT, engine=engine) == []


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("action", ["gk:PhysicalTherapy", "gk:EpiduralSteroidInjection", "gk:FacetJointIntervention",
                                    "gk:Neuromodulation"])
def test_the_procedures_the_source_names_are_care_actions_of_a_treatment_episode(engine: str, action: str) -> None:
    g = graph(IN_SCOPE + "; gk:hadTreatment case:p-t", SURGERY + PAIN +
              f"case:p-t a gk:TreatmentEpisode ; gk:careAction {action} ; gk:response gk:NoAdequateResponse .\n")
    assert validate_case(g, PROJECT, engine=engine) == []


# ---- contradictions ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_no_spine_surgery_with_an_index_surgery_is_a_violation(engine: str) -> None:
    result = found(graph(IN_SCOPE + "; gk:hadSpinalSurgery false", SURGERY + PAIN), engine)
    assert [s for s, _ in result] == ["Violation"]
    assert "had no spine surgery" in result[0][1] and "index surgery" in result[0][1]


@pytest.mark.parametrize("engine", ENGINES)
def test_no_spine_surgery_with_post_operative_pain_is_a_violation(engine: str) -> None:
    result = found(graph("; gk:hadSpinalSurgery false ; gk:painIsPostoperative true"), engine)
    assert [s for s, _ in result] == ["Violation"]
    assert "pain cannot follow an operation that did not happen" in result[0][1]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("absent", "given", "contradiction"), [
    ("gk:PhysicalTherapy", "gk:PhysicalTherapy", True),  # the same action
    ("gk:PhysicalTherapy", "gk:ActivePhysicalTherapy", True),  # a narrower one (skos:broader)
    ("gk:InterventionalProcedure", "gk:EpiduralSteroidInjection", True),
    ("gk:PharmacologicTherapy", "gk:ExtendedReleaseOralOpioidTherapy", True),  # two steps down
    ("gk:ActivePhysicalTherapy", "gk:PhysicalTherapy", False),  # a broader one: it may have been passive
    ("gk:OpioidTherapy", "gk:NonOpioidPharmacotherapy", False),  # a sibling
])
def test_not_treated_with_an_action_and_an_episode_of_it(engine: str, absent: str, given: str,
                                                         contradiction: bool) -> None:
    g = graph(IN_SCOPE + f"; gk:notTreatedWith {absent} ; gk:hadTreatment case:p-t", SURGERY + PAIN +
              f"case:p-t a gk:TreatmentEpisode ; gk:careAction {given} .\n")
    result = found(g, engine)
    assert [s for s, _ in result] == (["Violation"] if contradiction else [])
    assert all("also records a treatment episode of it or of a narrower care action" in m for _, m in result)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("absent", "opioids", "contradiction"), [
    ("gk:OpioidTherapy", "true", True),
    ("gk:PharmacologicTherapy", "true", True),  # broader than opioid therapy
    ("gk:OpioidTherapy", "false", False),
    ("gk:LongTermOpioidTherapy", "true", False),  # narrower: short-term opioids now are no contradiction
    ("gk:NonOpioidPharmacotherapy", "true", False),
])
def test_not_treated_with_opioids_while_taking_them(engine: str, absent: str, opioids: str,
                                                    contradiction: bool) -> None:
    result = found(graph(IN_SCOPE + f"; gk:notTreatedWith {absent} ; gk:receivesOpioidTherapy {opioids}",
                         SURGERY + PAIN), engine)
    assert [s for s, _ in result] == (["Violation"] if contradiction else [])
    assert all("takes opioids now" in m for _, m in result)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("considered", "planned", "warned"), [
    ("true", "true", True), ("true", "false", False), ("false", "true", False), ("false", "false", False)])
def test_long_term_opioids_considered_and_planned_is_a_warning(engine: str, considered: str, planned: str,
                                                               warned: bool) -> None:
    result = found(graph(IN_SCOPE + f"; gk:longTermOpioidTherapyConsidered {considered}"
                         f" ; gk:longTermOpioidTherapyPlanned {planned}", SURGERY + PAIN), engine)
    assert [s for s, _ in result] == (["Warning"] if warned else [])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("facts", ['; gk:hadSpinalSurgery "no"', "; gk:painIsPostoperative 0",
                                   '; gk:longTermOpioidTherapyConsidered "yes"',
                                   "; gk:hadSpinalSurgery true, false",
                                   '; gk:notTreatedWith gk:Aromatherapy', '; gk:notTreatedWith "physical therapy"'])
def test_ill_formed_values_of_the_new_properties_are_violations(engine: str, facts: str) -> None:
    assert "Violation" in severities(graph(IN_SCOPE + facts, SURGERY + PAIN), engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_the_clinicians_finding_present_and_absent_contradict(engine: str) -> None:
    g = graph(IN_SCOPE + "; gk:hasFinding case:p-a, case:p-b", SURGERY + PAIN +
              "case:p-a a gk:ConservativeManagementFailure ; gk:assessmentStatus gk:AssessedPresent .\n"
              "case:p-b a gk:ConservativeManagementFailure ; gk:assessmentStatus gk:AssessedAbsent .\n")
    assert severities(g, engine) == ["Violation"]


# ---- JSON-LD and the gate ------------------------------------------------------------------------------------------

def test_a_jsonld_case_says_the_new_facts_with_the_shipped_contexts_terms(tmp_path: Path) -> None:
    doc = tmp_path / "j.jsonld"
    doc.write_text("""{"@context": "https://w3id.org/guideline-kg/context.jsonld",
      "@id": "case:p", "@type": "gk:Patient",
      "gk:assessmentDate": {"@type": "xsd:date", "@value": "2026-03-02"},
      "hadSpinalSurgery": false, "painIsPostoperative": "false", "longTermOpioidTherapyConsidered": true,
      "notTreatedWith": ["gk:OpioidTherapy", "gk:PhysicalTherapy"],
      "gk:hasFinding": {"@id": "case:p-f", "@type": "ConservativeManagementFailure",
                        "gk:assessmentStatus": {"@id": "gk:AssessedAbsent"}}}""", encoding="utf-8")
    turtle = graph('; gk:hadSpinalSurgery false ; gk:painIsPostoperative false ; gk:longTermOpioidTherapyConsidered true'
                   ' ; gk:notTreatedWith gk:OpioidTherapy, gk:PhysicalTherapy ; gk:hasFinding case:p-f',
                   "case:p-f a gk:ConservativeManagementFailure ; gk:assessmentStatus gk:AssessedAbsent .\n")
    assert set(read_graph(doc)) == set(turtle)


@pytest.fixture(scope="module")
def gate() -> Gate:
    return Gate(load_knowledge(PROJECT), PROJECT)


def test_the_gate_admits_a_patient_without_spine_surgery(gate: Gate, tmp_path: Path) -> None:
    case = tmp_path / "no-surgery.ttl"
    case.write_text(PREFIXES + PATIENT + "; gk:ageYears 50 ; gk:hadSpinalSurgery false .\n", encoding="utf-8")
    (result,) = gate.admit(load_cases([case], PROJECT), derive=False)
    assert result.valid and result.violations == []


def test_the_gates_text_names_the_undefined_property_and_its_value(gate: Gate, tmp_path: Path) -> None:
    case = tmp_path / "undefined.ttl"
    case.write_text(PREFIXES + PATIENT + IN_SCOPE + '; gk:favouriteColour "blue" .\n' + SURGERY + PAIN,
                    encoding="utf-8")
    (result,) = gate.admit(load_cases([case], PROJECT), derive=False)
    (violation,) = result.violations
    assert violation.text().startswith("case:p gk:favouriteColour = blue: This property of the patient is not in the "
                                       "case vocabulary")
    assert violation.to_json()["path"] == "gk:favouriteColour" and violation.to_json()["value"] == "blue"


def test_the_gates_text_shows_no_value_that_is_only_the_patient(gate: Gate, tmp_path: Path) -> None:
    case = tmp_path / "nothing.ttl"
    case.write_text(PREFIXES + PATIENT + ".\n", encoding="utf-8")
    (result,) = gate.admit(load_cases([case], PROJECT), derive=False)
    (violation,) = result.violations
    assert violation.text().startswith("case:p gk:hadIndexSurgery: The case needs one of three facts")
