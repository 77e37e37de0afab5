"""FHIR R4 Bundles in: each mapping rule, unmapped codes, malformed bundles, the SSSOM set, and the FHIR twins."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import pytest
from rdflib import Graph, Literal, URIRef

from guideline_kg.cases.fhir_in import BundleDefects, bundle_to_case, is_fhir_bundle, load_rules, read_sssom
from guideline_kg.cases.model import InputNote
from guideline_kg.cases.reader import Case, load_cases
from guideline_kg.core.errors import InputError
from guideline_kg.core.namespaces import CASE, GK, RDF, RDFS, SKOS, XSD
from guideline_kg.core.project import Project
from guideline_kg.knowledge.graph import load_knowledge
from guideline_kg.reasoning.derive import Evaluator

PROJECT = Project.at()
SCT, ICD, LOINC = "http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10-cm", "http://loinc.org"
RX, GKC = "http://www.nlm.nih.gov/research/umls/rxnorm", "https://w3id.org/guideline-kg/codes"
#: The codes seen in public sources, as the package names them (guideline.toml [parts] terminology_codes).
CODES_TSV = PROJECT.require("terminology_codes", "the terminology tests")
TWINS = sorted(PROJECT.cases_dir.glob("fhir-*.fhir.json"))
#: Facts a FHIR twin may add to its Turtle twin (the bundle carries them; the Turtle cases leave them out).
EXTRA_FHIR_FACTS = {GK.birthDate, GK.startDate, GK.medicationCode, RDFS.label}


def cc(system: str, code: str) -> dict:
    return {"coding": [{"system": system, "code": code}]}


def bundle(*resources: dict, timestamp: str = "2026-03-10T09:00:00Z") -> dict:
    entries = [{"resource": {"resourceType": "Patient", "id": "p", "birthDate": "1967-08-20"}}]
    entries += [{"resource": r} for r in resources]
    return {"resourceType": "Bundle", "type": "collection", "timestamp": timestamp, "entry": entries}


def node(name: str) -> URIRef:
    return URIRef(f"{CASE}t-{name}")


def mapped(*resources: dict, **kw) -> Case:
    return bundle_to_case(bundle(*resources, **kw), "t")


SURGERY = {"resourceType": "Procedure", "id": "s", "status": "completed", "code": cc(SCT, "387731002"),
           "performedDateTime": "2025-06-10", "bodySite": [{"text": "L4-L5"}]}
MRI = {"resourceType": "DiagnosticReport", "id": "mri", "status": "final", "code": cc(LOINC, "30679-5"),
       "effectiveDateTime": "2025-10-01"}
CBT = {"coding": [{"system": SCT, "code": "75516001"}, {"system": GKC, "code": "cognitive-behavioral-therapy"}]}

# (rule, resources, triples that must be in the case graph) - one row per mapping rule of fhir-case-mapping.json
RULE_CASES = [
    ("index-surgery", [SURGERY],
     [(CASE.t, GK.hadIndexSurgery, node("surgery")), (node("surgery"), RDF.type, GK.Laminectomy),
      (node("surgery"), GK.performedOn, Literal("2025-06-10", datatype=XSD.date)),
      (node("surgery"), GK.spinalLevel, Literal("L4-L5"))]),
    ("index-surgery: laminectomy and foraminotomy make one node of both classes",
     [SURGERY, dict(SURGERY, id="f", code=cc(GKC, "foraminotomy"))],
     [(node("surgery"), RDF.type, GK.Laminectomy), (node("surgery"), RDF.type, GK.Foraminotomy)]),
    ("postoperative-pain", [{"resourceType": "Condition", "id": "c", "code": cc(ICD, "M96.1"),
                             "onsetDateTime": "2025-07-01"}],
     [(CASE.t, GK.hasPostoperativePain, node("pain")), (node("pain"), RDF.type, GK.PostoperativePain),
      (node("pain"), GK.onsetDate, Literal("2025-07-01", datatype=XSD.date)),
      (node("pain"), GK.painDurationMonths, Literal("8.3", datatype=XSD.decimal))]),
    ("pain-character", [{"resourceType": "Condition", "id": "n", "code": cc(SCT, "247398009")}],
     [(node("pain"), GK.painCharacter, GK.NeuropathicPain)]),
    ("pain-score", [{"resourceType": "Observation", "id": "o", "status": "final", "code": cc(LOINC, "72514-3"),
                     "valueQuantity": {"value": 7}}],
     [(node("pain"), GK.painScore, Literal("7", datatype=XSD.decimal))]),
    ("postoperative-imaging", [SURGERY, MRI],
     [(CASE.t, GK.hasPostoperativeImaging, node("diagnosticreport-mri")),
      (node("diagnosticreport-mri"), RDF.type, GK.MRIStudy), (CASE.t, GK.postoperativeImagingObtained, Literal(True)),
      (node("diagnosticreport-mri"), GK.performedOn, Literal("2025-10-01", datatype=XSD.date))]),
    ("finding: Observation.valueBoolean false is absent",
     [{"resourceType": "Observation", "id": "f", "status": "final", "code": cc(GKC, "progressive-neurological-deficit"),
       "effectiveDateTime": "2026-03-10", "valueBoolean": False}],
     [(CASE.t, GK.hasFinding, node("observation-f")),
      (node("observation-f"), RDF.type, GK.ProgressiveNeurologicalDeficit),
      (node("observation-f"), GK.assessmentStatus, GK.AssessedAbsent),
      (node("observation-f"), GK.assessedOn, Literal("2026-03-10", datatype=XSD.date))]),
    ("finding: Observation.valueCodeableConcept present, based on imaging",
     [MRI, {"resourceType": "Observation", "id": "f", "status": "final", "code": cc(GKC, "recurrent-disc-herniation"),
            "valueCodeableConcept": cc(GKC, "present"), "derivedFrom": [{"reference": "DiagnosticReport/mri"}]}],
     [(node("observation-f"), GK.assessmentStatus, GK.AssessedPresent),
      (node("observation-f"), GK.basedOnImaging, node("diagnosticreport-mri"))]),
    ("finding: Condition refuted is absent",
     [{"resourceType": "Condition", "id": "f", "code": cc(SCT, "247369005"),
       "verificationStatus": cc("http://terminology.hl7.org/CodeSystem/condition-ver-status", "refuted")}],
     [(node("condition-f"), RDF.type, GK.FacetJointInvolvement),
      (node("condition-f"), GK.assessmentStatus, GK.AssessedAbsent)]),
    ("finding: Condition without verificationStatus is present",
     [{"resourceType": "Condition", "id": "f", "code": cc(SCT, "192970008")}],
     [(node("condition-f"), RDF.type, GK.SeriousUnderlyingConditionSign),
      (node("condition-f"), GK.assessmentStatus, GK.AssessedPresent)]),
    ("medication: active opioid, extended release by a local coding, response and relief by Observations",
     [{"resourceType": "MedicationStatement", "id": "m", "status": "active",
       "medicationCodeableConcept": {"coding": [{"system": RX, "code": "7804"},
                                                {"system": GKC, "code": "extended-release-oral-opioid-therapy"}]},
       "effectivePeriod": {"start": "2026-01-27"}},
      {"resourceType": "Observation", "id": "r", "status": "final", "code": cc(GKC, "treatment-response"),
       "partOf": [{"reference": "MedicationStatement/m"}], "valueCodeableConcept": cc(GKC, "no-adequate-response")},
      {"resourceType": "Observation", "id": "q", "status": "final", "code": cc(GKC, "pain-relief-percent"),
       "partOf": [{"reference": "MedicationStatement/m"}], "valueQuantity": {"value": 10}}],
     [(CASE.t, GK.hadTreatment, node("medicationstatement-m")), (CASE.t, GK.receivesOpioidTherapy, Literal(True)),
      (node("medicationstatement-m"), RDF.type, GK.TreatmentEpisode),
      (node("medicationstatement-m"), GK.careAction, GK.ExtendedReleaseOralOpioidTherapy),
      (node("medicationstatement-m"), GK.durationWeeks, Literal("6.0", datatype=XSD.decimal)),
      (node("medicationstatement-m"), GK.medicationCode, Literal("7804")),
      (node("medicationstatement-m"), GK.response, GK.NoAdequateResponse),
      (node("medicationstatement-m"), GK.painReliefPercent, Literal("10", datatype=XSD.decimal))]),
    ("medication: a completed non-opioid course",
     [{"resourceType": "MedicationStatement", "id": "m", "status": "completed",
       "medicationCodeableConcept": cc(RX, "187832"),
       "effectivePeriod": {"start": "2025-12-20", "end": "2026-01-31"}}],
     [(node("medicationstatement-m"), GK.careAction, GK.NonOpioidPharmacotherapy),
      (node("medicationstatement-m"), GK.durationWeeks, Literal("6.0", datatype=XSD.decimal))]),
    ("therapy-procedure",
     [{"resourceType": "Procedure", "id": "t", "status": "completed", "code": CBT,
       "performedPeriod": {"start": "2025-11-01", "end": "2026-01-10"}, "outcome": cc(GKC, "adequate-response")}],
     [(node("procedure-t"), GK.careAction, GK.CognitiveBehavioralTherapy),
      (node("procedure-t"), GK.durationWeeks, Literal("10.0", datatype=XSD.decimal)),
      (node("procedure-t"), GK.response, GK.AdequateResponse)]),
    ("treatment-outcome: an Observation partOf a Procedure gives the episode its response",
     [{"resourceType": "Procedure", "id": "t", "status": "in-progress", "code": CBT,
       "performedPeriod": {"start": "2026-02-17"}},
      {"resourceType": "Observation", "id": "r", "status": "final", "code": cc(GKC, "treatment-response"),
       "partOf": [{"reference": "Procedure/t"}], "valueCodeableConcept": cc(GKC, "response-not-assessed")}],
     [(node("procedure-t"), GK.response, GK.ResponseNotAssessed),
      (node("procedure-t"), GK.durationWeeks, Literal("3.0", datatype=XSD.decimal))]),
    ("therapy-procedure: an epidural steroid injection without adequate response",
     [{"resourceType": "Procedure", "id": "esi", "status": "completed", "code": cc(GKC, "epidural-steroid-injection"),
       "performedDateTime": "2026-01-15", "outcome": cc(GKC, "no-adequate-response")}],
     [(CASE.t, GK.hadTreatment, node("procedure-esi")),
      (node("procedure-esi"), GK.careAction, GK.EpiduralSteroidInjection),
      (node("procedure-esi"), GK.response, GK.NoAdequateResponse)]),
    ("therapy-procedure: a facet joint intervention and neuromodulation",
     [{"resourceType": "Procedure", "id": "fj", "status": "completed", "code": cc(GKC, "facet-joint-intervention"),
       "performedDateTime": "2025-12-01", "outcome": cc(GKC, "adequate-response")},
      {"resourceType": "Procedure", "id": "nm", "status": "in-progress", "code": cc(GKC, "neuromodulation"),
       "performedPeriod": {"start": "2026-02-01"}}],
     [(node("procedure-fj"), GK.careAction, GK.FacetJointIntervention),
      (node("procedure-fj"), GK.response, GK.AdequateResponse),
      (node("procedure-nm"), GK.careAction, GK.Neuromodulation)]),
    ("therapy-procedure: physical therapy of unspecified type stays gk:PhysicalTherapy",
     [{"resourceType": "Procedure", "id": "pt", "status": "completed", "code": cc(SCT, "91251008"),
       "performedPeriod": {"start": "2025-09-01", "end": "2025-10-27"}, "outcome": cc(GKC, "no-adequate-response")}],
     [(node("procedure-pt"), GK.careAction, GK.PhysicalTherapy),
      (node("procedure-pt"), GK.response, GK.NoAdequateResponse)]),
    ("not-treated: a Procedure not-done and a MedicationStatement not-taken",
     [{"resourceType": "Procedure", "id": "pt", "status": "not-done", "code": cc(SCT, "91251008")},
      {"resourceType": "MedicationStatement", "id": "op", "status": "not-taken",
       "medicationCodeableConcept": cc(GKC, "opioid-therapy")}],
     [(CASE.t, GK.notTreatedWith, GK.PhysicalTherapy), (CASE.t, GK.notTreatedWith, GK.OpioidTherapy)]),
    ("finding: the clinician's finding of failed conservative management",
     [{"resourceType": "Observation", "id": "cmf", "status": "final",
       "code": cc(GKC, "conservative-management-failure"), "valueBoolean": True}],
     [(CASE.t, GK.hasFinding, node("observation-cmf")),
      (node("observation-cmf"), RDF.type, GK.ConservativeManagementFailure),
      (node("observation-cmf"), GK.assessmentStatus, GK.AssessedPresent)]),
    ("long-term-opioid-use", [{"resourceType": "Condition", "id": "z", "code": cc(ICD, "Z79.891")}],
     [(CASE.t, GK.receivesOpioidTherapy, Literal(True))]),
    ("patient-facts",
     [{"resourceType": "Observation", "id": "a", "status": "final", "code": cc(GKC, "opioid-monitoring-plan-in-place"),
       "valueBoolean": False},
      {"resourceType": "Observation", "id": "b", "status": "final", "code": cc(GKC, "chronicity-stage"),
       "valueInteger": 3}],
     [(CASE.t, GK.opioidMonitoringPlanInPlace, Literal(False)), (CASE.t, GK.chronicityStage, Literal(3))]),
    ("patient-facts: no spine surgery, pain not post-operative, long-term opioids considered",
     [{"resourceType": "Observation", "id": "a", "status": "final", "code": cc(GKC, "had-spinal-surgery"),
       "valueBoolean": False},
      {"resourceType": "Observation", "id": "b", "status": "final", "code": cc(GKC, "pain-is-postoperative"),
       "valueBoolean": False},
      {"resourceType": "Observation", "id": "c", "status": "final",
       "code": cc(GKC, "long-term-opioid-therapy-considered"), "valueBoolean": True}],
     [(CASE.t, GK.hadSpinalSurgery, Literal(False)), (CASE.t, GK.painIsPostoperative, Literal(False)),
      (CASE.t, GK.longTermOpioidTherapyConsidered, Literal(True))]),
    ("patient", [],
     [(CASE.t, RDF.type, GK.Patient), (CASE.t, GK.ageYears, Literal(58)),
      (CASE.t, GK.assessmentDate, Literal("2026-03-10", datatype=XSD.date)),
      (CASE.t, GK.birthDate, Literal("1967-08-20", datatype=XSD.date))]),
]


@pytest.mark.parametrize("resources,triples", [(r, t) for _, r, t in RULE_CASES], ids=[i for i, _, _ in RULE_CASES])
def test_mapping_rule_gives_its_case_facts(resources: list[dict], triples: list) -> None:
    case = mapped(*resources)
    missing = [t for t in triples if t not in case.graph]
    assert not missing, case.graph.serialize(format="turtle")
    assert case.notes == []


def test_every_rule_of_the_rules_file_has_a_test_row() -> None:
    rules = load_rules(PROJECT.require("fhir_case_mapping", "this test"))
    tested = {row[0].split(":")[0] for row in RULE_CASES}
    assert {r["id"] for r in rules.rules} <= tested


def test_unmapped_code_is_reported_not_dropped() -> None:
    case = mapped({"resourceType": "Condition", "id": "abc", "code": cc(SCT, "12345")})
    assert case.notes == ["Condition/abc .code: code http://snomed.info/sct|12345 is not in the mapping; not recorded"]
    assert case.notes[0].to_json() == {"place": "Condition/abc .code",
                                       "message": "code http://snomed.info/sct|12345 is not in the mapping; not recorded"}


def test_narrow_match_is_not_used_to_recognise_data_and_says_so() -> None:
    case = mapped({"resourceType": "Condition", "id": "d", "code": cc(SCT, "202708005")})
    assert not list(case.graph.subjects(RDF.type, GK.RecurrentDiscHerniation))
    assert any("only by skos:narrowMatch" in n and "Condition/d" in n for n in case.notes)


def test_refuted_narrower_code_does_not_deny_the_broader_finding() -> None:
    """Cauda equina syndrome refuted does not show that no serious underlying condition is present."""
    case = mapped({"resourceType": "Condition", "id": "ces", "code": cc(SCT, "192970008"),
                   "verificationStatus": cc("http://terminology.hl7.org/CodeSystem/condition-ver-status", "refuted")})
    assert (None, GK.assessmentStatus, GK.AssessedAbsent) not in case.graph
    assert any("Condition/ces" in n and "does not show the absence" in n for n in case.notes)


def test_resource_type_without_rule_and_skipped_status_are_reported() -> None:
    case = mapped({"resourceType": "Encounter", "id": "e", "status": "finished"},
                  dict(SURGERY, id="x", status="entered-in-error"))
    assert "Encounter/e: no mapping rule for Encounter resources; not recorded" in case.notes
    assert "Procedure/x .status: 'entered-in-error'; not recorded" in case.notes
    assert (CASE.t, GK.hadIndexSurgery, None) not in case.graph


def test_imaging_before_the_index_surgery_is_not_postoperative() -> None:
    case = mapped(SURGERY, dict(MRI, effectiveDateTime="2025-01-05"))
    assert (CASE.t, GK.hasPostoperativeImaging, None) not in case.graph
    assert any(n.startswith("DiagnosticReport/mri .effectiveDateTime: dated 2025-01-05, not after") for n in case.notes)


def test_conflicting_patient_facts_are_reported() -> None:
    case = mapped({"resourceType": "Observation", "id": "a", "status": "final",
                   "code": cc(GKC, "receives-opioid-therapy"), "valueBoolean": False},
                  {"resourceType": "Condition", "id": "z", "code": cc(ICD, "Z79.891")})
    assert any("conflicting values for gk:receivesOpioidTherapy" in n for n in case.notes)


def test_reference_to_a_resource_not_in_the_bundle_is_reported() -> None:
    case = mapped({"resourceType": "Observation", "id": "r", "status": "final", "code": cc(GKC, "treatment-response"),
                   "partOf": [{"reference": "MedicationStatement/nope"}],
                   "valueCodeableConcept": cc(GKC, "adequate-response")})
    assert (None, GK.response, None) not in case.graph
    assert any("'MedicationStatement/nope'" in n for n in case.notes)


def test_partial_date_is_noted_not_guessed() -> None:
    case = mapped(dict(SURGERY, performedDateTime="2025-06"))
    assert (node("surgery"), GK.performedOn, None) not in case.graph
    assert any("partial date '2025-06'" in n for n in case.notes)


def _docs_bundles() -> dict[str, dict]:
    """The JSON examples of docs/cases-fhir.md, by Bundle id."""
    text = (PROJECT.home / "docs" / "cases-fhir.md").read_text()
    blocks = [json.loads(b.split("```", 1)[0]) for b in text.split("```json\n")[1:]]
    return {b["id"]: b for b in blocks}


def test_the_vocabulary_example_of_the_docs_maps_as_documented() -> None:
    case = bundle_to_case(_docs_bundles()["vocabulary"], "vocabulary")
    assert case.notes == ["Procedure/p3 .code: text 'physio' has no coding the mapping knows (text is not matched "
                          "to codes); not recorded"]
    patient, cmf, esi = CASE.vocabulary, CASE["vocabulary-observation-cmf"], CASE["vocabulary-procedure-esi"]
    for triple in [(patient, GK.hadSpinalSurgery, Literal(False)), (patient, GK.notTreatedWith, GK.PhysicalTherapy),
                   (patient, GK.notTreatedWith, GK.OpioidTherapy), (patient, GK.longTermOpioidTherapyConsidered,
                                                                     Literal(True)),
                   (patient, GK.hasFinding, cmf), (cmf, RDF.type, GK.ConservativeManagementFailure),
                   (cmf, GK.assessmentStatus, GK.AssessedPresent), (patient, GK.hadTreatment, esi),
                   (esi, GK.careAction, GK.EpiduralSteroidInjection), (esi, GK.response, GK.NoAdequateResponse)]:
        assert triple in case.graph, triple


def test_the_example_bundle_of_the_docs_maps_as_documented() -> None:
    case = bundle_to_case(_docs_bundles()["example"], "example")
    assert case.notes == ["Condition/other .code: code http://snomed.info/sct|12345 is not in the mapping; not recorded"]
    assert (CASE["example-medicationstatement-opioid"], GK.careAction, GK.ExtendedReleaseOralOpioidTherapy) in case.graph
    assert (CASE["example-pain"], GK.painDurationMonths, Literal("9.0", datatype=XSD.decimal)) in case.graph


# --- nothing dropped silently: every element, code or resource not recorded is a note with its place ----------

def test_procedure_with_text_and_no_coding_is_reported_with_its_place() -> None:
    case = mapped({"resourceType": "Procedure", "id": "p3", "status": "completed", "code": {"text": "physio"}})
    assert (CASE.t, GK.hadTreatment, None) not in case.graph
    assert case.notes == ["Procedure/p3 .code: text 'physio' has no coding the mapping knows (text is not matched "
                          "to codes); not recorded"]
    assert case.notes[0].place == "Procedure/p3 .code"


def test_text_beside_unknown_codings_is_reported_too() -> None:
    case = mapped({"resourceType": "Procedure", "id": "p", "status": "completed",
                   "code": {"coding": [{"system": SCT, "code": "999"}], "text": "back school"}})
    assert set(case.notes) == {
        "Procedure/p .code: text 'back school' has no coding the mapping knows; not recorded",
        "Procedure/p .code: code http://snomed.info/sct|999 is not in the mapping; not recorded"}


def test_unknown_and_unmapped_elements_are_reported_once_per_resource_type() -> None:
    pt = {"resourceType": "Procedure", "status": "completed", "code": cc(SCT, "91251008"),
          "performedPeriod": {"start": "2025-09-01", "end": "2025-10-27"}}
    case = mapped(dict(pt, id="a", perfomedDateTime="2025-09-01", note=[{"text": "core strengthening"}]),
                  dict(pt, id="b", perfomedDateTime="2025-09-02", note=[{"text": "mostly massage"}]))
    assert sorted(case.notes) == [
        "Procedure/a .note: no rule maps this element; not recorded (said once per Procedure)",
        "Procedure/a .perfomedDateTime: not an element of a FHIR R4 Procedure; not read (said once per Procedure)"]


def test_elements_that_hold_no_case_fact_are_not_reported() -> None:
    """subject, identifier, recorder and the Patient's name are in notCaseFacts of the rules file."""
    case = bundle_to_case({"resourceType": "Bundle", "type": "collection", "timestamp": "2026-03-10T09:00:00Z",
                           "entry": [{"resource": {"resourceType": "Patient", "id": "p", "name": [{"family": "X"}],
                                                   "birthDate": "1967-08-20"}},
                                     {"resource": dict(SURGERY, subject={"reference": "Patient/p"},
                                                       identifier=[{"value": "1"}])}]}, "t")
    assert case.notes == []


def test_modifier_extension_keeps_the_resource_out_with_a_note() -> None:
    case = mapped(dict(SURGERY, modifierExtension=[{"url": "https://example.invalid/x", "valueBoolean": True}]))
    assert (CASE.t, GK.hadIndexSurgery, None) not in case.graph
    assert any(n.startswith("Procedure/s .modifierExtension: ") for n in case.notes)


def test_an_ingredient_not_taken_does_not_deny_opioid_therapy() -> None:
    case = mapped({"resourceType": "MedicationStatement", "id": "m", "status": "not-taken",
                   "medicationCodeableConcept": cc(RX, "7052")})
    assert (CASE.t, GK.notTreatedWith, None) not in case.graph
    assert any(n.startswith("MedicationStatement/m: the absence of a code mapped by skos:broadMatch does not show "
                            "the absence of gk:OpioidTherapy") for n in case.notes)


def test_a_spinal_operation_not_done_is_reported_not_taken_as_no_surgery() -> None:
    """not-done says a planned operation did not happen, not that the patient never had spine surgery."""
    case = mapped(dict(SURGERY, status="not-done"))
    assert (CASE.t, GK.hadIndexSurgery, None) not in case.graph and (CASE.t, GK.hadSpinalSurgery, None) not in case.graph
    assert "Procedure/s: status 'not-done' is not one of completed (rule index-surgery); not recorded" in case.notes


def test_a_refuted_postoperative_pain_is_not_the_case_s_pain() -> None:
    case = mapped({"resourceType": "Condition", "id": "c", "code": cc(ICD, "M96.1"), "onsetDateTime": "2025-07-01",
                   "verificationStatus": cc("http://terminology.hl7.org/CodeSystem/condition-ver-status", "refuted")})
    assert (CASE.t, GK.hasPostoperativePain, None) not in case.graph
    assert "Condition/c: verificationStatus.coding.code is 'refuted' (rule postoperative-pain); not recorded" \
        in case.notes


def test_a_fullurl_that_is_not_a_uuid_is_noted() -> None:
    data = bundle(SURGERY)
    data["entry"][1]["fullUrl"] = "urn:uuid:surgery-1"
    case = bundle_to_case(data, "t")
    assert case.notes == ["entry 1 (Procedure/s) .fullUrl: 'urn:uuid:surgery-1' is not a urn:uuid with a UUID; "
                          "references to it may not resolve elsewhere"]


def test_all_defects_of_a_bundle_are_reported_in_one_run(tmp_path: Path) -> None:
    data = bundle(dict(SURGERY, performedDateTime="last summer"),
                  {"resourceType": "Observation", "id": "o", "status": "final",
                   "code": cc(GKC, "opioid-monitoring-plan-in-place"), "valueBoolean": "yes"},
                  {"resourceType": "Condition", "id": "c", "code": "M96.1"},
                  {"id": "x"})
    f = tmp_path / "four.fhir.json"
    f.write_text(json.dumps(data))
    with pytest.raises(BundleDefects) as err:
        load_cases([f])
    assert [str(d) for d in err.value.defects] == [
        'entry 1 (Procedure/s): performedDateTime: expected a date (YYYY-MM-DD), got "last summer"',
        'entry 2 (Observation/o): valueBoolean: expected true or false, got "yes"',
        'entry 3 (Condition/c): code: expected a CodeableConcept object, got "M96.1"',
        "entry 4: resource without resourceType"]
    text = str(err.value)
    assert text.startswith(f"{f}: 4 defects in the bundle:") and text.count("\n  - ") == 4


def test_is_fhir_bundle() -> None:
    assert is_fhir_bundle({"resourceType": "Bundle"})
    assert not is_fhir_bundle({"resourceType": "Patient"}) and not is_fhir_bundle([]) and not is_fhir_bundle(None)


MALFORMED = [
    ("not a Bundle", {"resourceType": "Patient", "id": "p"}, "not a FHIR Bundle"),
    ("entry without resourceType", {"resourceType": "Bundle", "entry": [{"resource": {"id": "x"}}]},
     "entry 0: resource without resourceType"),
    ("entry without resource", {"resourceType": "Bundle", "entry": [{"fullUrl": "urn:uuid:1"}]},
     "entry 0: no resource object"),
    ("entry not a list", {"resourceType": "Bundle", "entry": {}}, "Bundle .entry: must be a list"),
    ("a string for a date", bundle(dict(SURGERY, performedDateTime="last summer")),
     "entry 1 (Procedure/s): performedDateTime: expected a date (YYYY-MM-DD), got \"last summer\""),
    ("a string for a boolean", bundle({"resourceType": "Observation", "id": "o", "status": "final",
                                       "code": cc(GKC, "opioid-monitoring-plan-in-place"), "valueBoolean": "yes"}),
     "entry 1 (Observation/o): valueBoolean: expected true or false"),
    ("a string for a number", bundle({"resourceType": "Observation", "id": "o", "status": "final",
                                      "code": cc(LOINC, "72514-3"), "valueQuantity": {"value": "6"}}),
     "valueQuantity.value: expected a number"),
    ("a code that is not a CodeableConcept", bundle({"resourceType": "Condition", "id": "c", "code": "M96.1"}),
     "entry 1 (Condition/c): code: expected a CodeableConcept"),
]


@pytest.mark.parametrize("data,message", [(d, m) for _, d, m in MALFORMED], ids=[i for i, _, _ in MALFORMED])
def test_malformed_bundle_is_rejected_naming_file_entry_and_defect(tmp_path: Path, data: dict, message: str) -> None:
    f = tmp_path / "bad.fhir.json"
    f.write_text(json.dumps(data))
    with pytest.raises(InputError) as err:
        load_cases([f])
    assert str(err.value).startswith(f"{f}: ") and message in str(err.value)


def test_more_than_one_patient_is_rejected(tmp_path: Path) -> None:
    data = {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient", "id": "a"}},
                                                {"resource": {"resourceType": "Patient", "id": "b"}}]}
    with pytest.raises(InputError, match="more than one Patient"):
        bundle_to_case(data, "x", tmp_path / "x.fhir.json")


# --- the SSSOM mapping set and the terminology bindings -------------------------------------------------------

@pytest.fixture(scope="module")
def sssom() -> tuple[dict[str, str], list[dict[str, str]]]:
    return read_sssom(PROJECT.kg_dir / "mappings" / "codes.sssom.tsv")


def test_sssom_header_has_the_required_metadata() -> None:
    text = (PROJECT.kg_dir / "mappings" / "codes.sssom.tsv").read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    keys = {line[1:].split(":")[0].strip() for line in header if not line.startswith("#  ")}
    assert {"curie_map", "mapping_set_id", "license", "mapping_date"} <= keys


def test_every_standard_code_is_one_of_the_verified_codes_and_cites_where_it_was_seen(sssom) -> None:
    _curie_map, rows = sssom
    rules = load_rules(PROJECT.require("fhir_case_mapping", "this test"))
    prefix_of = {system: prefix for system, prefix in rules.code_systems.items()}
    with CODES_TSV.open() as f:
        verified = {(f"{prefix_of[r['system']]}:{r['code']}", r["seen_in"]) for r in csv.DictReader(f, delimiter="\t")}
    for row in rows:
        if row["subject_id"].startswith("GKCODE:"):
            assert "local code of https://w3id.org/guideline-kg/codes" in row["comment"], row["subject_id"]
            continue
        seen = {s for code, s in verified if code == row["subject_id"]}
        assert seen, f"{row['subject_id']} is not in codes.tsv"
        assert any(f"seen in: {s}" in row["comment"] for s in seen), row["subject_id"]
        assert row["mapping_justification"] == "semapv:ManualMappingCuration"


def test_every_mapped_term_is_declared_in_the_ontology(sssom) -> None:
    curie_map, rows = sssom
    ontology = Graph()
    for path in PROJECT.vocabulary_files():  # the ontology and the package's patient vocabulary
        ontology.parse(path)
    for row in rows:
        prefix, _, local = row["object_id"].partition(":")
        assert (URIRef(curie_map[prefix] + local), RDF.type, None) in ontology, row["object_id"]


def test_terminology_ttl_holds_the_standard_codes_of_the_sssom_set(sssom) -> None:
    curie_map, rows = sssom
    inverse = {"exactMatch": "exactMatch", "closeMatch": "closeMatch", "broadMatch": "narrowMatch",
               "narrowMatch": "broadMatch", "relatedMatch": "relatedMatch"}
    expected = set()
    for row in rows:
        prefix, _, code = row["subject_id"].partition(":")
        if prefix != "GKCODE":
            tp, _, tl = row["object_id"].partition(":")
            expected.add((URIRef(curie_map[tp] + tl), SKOS[inverse[row["predicate_id"].split(":")[1]]],
                          URIRef(curie_map[prefix] + code)))
    g = Graph().parse(PROJECT.kg_dir / "terminology.ttl")
    actual = {t for t in g if str(t[1]).startswith(str(SKOS)) and "Match" in str(t[1]) and t[1] != RDF.type}
    assert actual == expected


# --- the FHIR twins of the Turtle cases -----------------------------------------------------------------------

def _twin_of(path: Path) -> Path:
    return path.with_name(path.name[len("fhir-"):-len(".fhir.json")] + ".ttl")


def _normalised(case: Case) -> set[tuple]:
    """The case's facts with node IRIs replaced by the path from the patient, and numbers compared by value."""
    names: dict = {case.patient: "PATIENT"}
    for _s, p, o in sorted(case.graph.triples((case.patient, None, None))):
        if isinstance(o, URIRef) and str(o).startswith(str(CASE)):
            key = (str(p), tuple(sorted(str(t) for t in case.graph.objects(o, RDF.type))),
                   tuple(sorted(str(x) for x in case.graph.objects(o, GK.careAction))))
            names[o] = key
    def term(t):
        if t in names:
            return names[t]
        if isinstance(t, Literal) and isinstance(t.toPython(), (int, float, Decimal)) and not isinstance(t.toPython(), bool):
            return float(t.toPython())
        return str(t)
    return {(term(s), str(p), term(o)) for s, p, o in case.graph if p not in EXTRA_FHIR_FACTS}


def test_there_are_at_least_five_fhir_twins() -> None:
    assert len(TWINS) >= 5 and all(_twin_of(p).exists() for p in TWINS)


@pytest.mark.parametrize("path", TWINS, ids=lambda p: p.name)
def test_fhir_twin_maps_to_the_same_facts_as_its_turtle_twin(path: Path) -> None:
    fhir = load_cases([path])[0]
    turtle = load_cases([_twin_of(path)])[0]
    assert fhir.notes == []
    assert _normalised(fhir) == _normalised(turtle)


@pytest.mark.parametrize("path", TWINS, ids=lambda p: p.name)
def test_fhir_twin_expected_statuses_equal_its_turtle_twins(path: Path) -> None:
    mine = json.loads(path.with_name(path.name.replace(".fhir.json", ".expected.json")).read_text())
    theirs = json.loads(_twin_of(path).with_suffix(".expected.json").read_text())
    assert (mine["in_scope"], mine["statuses"]) == (theirs["in_scope"], theirs["statuses"])


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    return Evaluator(load_knowledge(PROJECT), PROJECT)


@pytest.mark.parametrize("path", TWINS, ids=lambda p: p.name)
def test_fhir_twin_derives_the_same_status_for_every_statement(evaluator: Evaluator, path: Path) -> None:
    fhir, turtle = (evaluator.evaluate(load_cases([p])[0]) for p in (path, _twin_of(path)))
    assert fhir.in_scope == turtle.in_scope
    assert {r.statement["id"]: r.status for r in fhir.results} == {r.statement["id"]: r.status for r in turtle.results}


# --- subject integrity: every resource is about the bundle's Patient (issue 13; docs/security.md) ---------------

URGENT_TWIN = PROJECT.cases_dir / "fhir-c04-urgent-deficit.fhir.json"


def _about(data: dict, ids: set[str], reference: object) -> dict:
    """``data`` with the subject of the resources ``ids`` replaced by ``reference`` (a dict, or removed if None)."""
    data = json.loads(json.dumps(data))
    for entry in data["entry"]:
        if entry["resource"].get("id") in ids:
            if reference is None:
                entry["resource"].pop("subject", None)
            else:
                entry["resource"]["subject"] = reference
    return data


def test_findings_about_someone_else_do_not_make_the_patient_urgent(evaluator: Evaluator) -> None:
    data = json.loads(URGENT_TWIN.read_text(encoding="utf-8"))
    findings = {"pnd", "serious", "new"}
    assert evaluator.evaluate(bundle_to_case(data, "p")).has_urgent()  # control: about p, they make p urgent
    case = bundle_to_case(_about(data, findings, {"reference": "Patient/someone-else"}), "p")
    assert not evaluator.evaluate(case).has_urgent()
    said = {n.place: n.message for n in case.notes if isinstance(n, InputNote) and n.place.endswith(".subject")}
    assert set(said) == {f"Condition/{i} .subject" for i in findings}
    assert all("'Patient/someone-else'" in m and "not recorded" in m for m in said.values())
    assert not any(str(s).endswith(("-pnd", "-serious", "-new")) for s in case.graph.subjects())
    assert (CASE.p, GK.hasFinding, CASE["p-condition-pnd"]) not in case.graph


@pytest.mark.parametrize("reference", [
    {"reference": "Patient/p"}, {"reference": "Patient/p/_history/3"},
    {"reference": "urn:uuid:17378429-eed3-51cb-9ac7-d1955f32007c", "display": "the patient"}, None])
def test_a_subject_naming_the_bundle_s_patient_is_accepted(reference: dict | None) -> None:
    data = _about(json.loads(URGENT_TWIN.read_text(encoding="utf-8")), {"pnd"}, reference)
    case = bundle_to_case(data, "p")
    assert not [n for n in case.notes if "subject" in n]
    assert (CASE.p, GK.hasFinding, CASE["p-condition-pnd"]) in case.graph


@pytest.mark.parametrize("reference,said", [
    ({"reference": "Patient/q"}, "refers to 'Patient/q'"),
    ({"reference": "urn:uuid:00000000-0000-0000-0000-000000000000"}, "refers to 'urn:uuid:0000"),
    ({"reference": "http://elsewhere.example/fhir/Patient/p"}, "refers to 'http://elsewhere.example/fhir/Patient/p'"),
    ({"display": "Jane"}, "does not refer to the bundle's Patient (Patient/p) by reference"),
    ({"reference": "Group/g"}, "refers to 'Group/g'"),
    ("Patient/p", "does not refer to the bundle's Patient"),
])
def test_a_subject_that_is_not_the_bundle_s_patient_is_noted_and_left_out(reference: object, said: str) -> None:
    one = bundle(dict(SURGERY, subject={"reference": "Patient/p"}), dict(MRI, subject=reference))
    case = bundle_to_case(one, "t")
    notes = [n for n in case.notes if isinstance(n, InputNote) and n.place == "DiagnosticReport/mri .subject"]
    assert len(notes) == 1 and said in notes[0].message and "not recorded" in notes[0].message
    assert (CASE.t, GK.hasPostoperativeImaging, None) not in case.graph  # the MRI is left out
    assert (CASE.t, GK.hadIndexSurgery, node("surgery")) in case.graph  # the surgery about p is kept


def test_resources_without_a_subject_in_a_one_patient_bundle_are_accepted() -> None:
    case = mapped(SURGERY, MRI)
    assert (CASE.t, GK.hasPostoperativeImaging, node("diagnosticreport-mri")) in case.graph
    assert not [n for n in case.notes if "subject" in n]


def test_duplicate_resource_ids_and_fullurls_are_defects(tmp_path: Path) -> None:
    with pytest.raises(BundleDefects) as err:
        bundle_to_case(bundle(SURGERY, dict(SURGERY, performedDateTime="2025-07-01")), "t", tmp_path / "t.fhir.json")
    assert [str(d) for d in err.value.defects] == [
        "entry 2 (Procedure/s) .id: duplicate resource id: entry 1 is Procedure/s too (the ids of a bundle's "
        "resources must be unique)"]
    data = bundle(SURGERY, MRI)
    data["entry"][1]["fullUrl"] = data["entry"][2]["fullUrl"] = "urn:uuid:a2f36862-2753-5a3d-bc6c-6372fc1ede0c"
    with pytest.raises(BundleDefects, match=r"entry 2 \(DiagnosticReport\) .fullUrl: duplicate fullUrl"):
        bundle_to_case(data, "t")
    # the same id under two resource types is no duplicate
    bundle_to_case(bundle(SURGERY, dict(MRI, id="s")), "t")


def test_a_bundle_without_a_patient_is_refused_from_a_file(tmp_path: Path) -> None:
    f = tmp_path / "nobody.fhir.json"
    f.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": SURGERY}]}))
    with pytest.raises(InputError) as err:
        load_cases([f])
    assert str(err.value) == (f"{f}: Bundle .entry: no Patient resource: a case is one patient's record, and every "
                              "other resource must name that patient as its subject")
