"""CDS Hooks 2.0 conformance of the service (issue 14, point 2): every request and response of these tests is
validated against the JSON Schemas in tests/schemas/cds-hooks-2.0/, written from the 2.0 specification; the
cards say what the guideline says for the example patients (guidelines/plbp/source/guideline.txt)."""

from __future__ import annotations

import copy
import json
import logging
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B import get_fhir_model_class
from rdflib import Graph

from guideline_kg.core.project import Project
from guideline_kg.service.app import ServerConfig, create_app
from guideline_kg.service.cds import CDS_SERVICE_ID, ORDER_SERVICE_ID
from guideline_kg.store.results import QueryResult

SCHEMAS = Path(__file__).parent / "schemas" / "cds-hooks-2.0"
PROJECT = Project.at()
EXAMPLES = sorted(PROJECT.cases_dir.glob("fhir-*.fhir.json"))
INVALID = sorted((Path(__file__).parent / "data" / "invalid-cases").glob("fhir-*.fhir.json"))
INSTANCE = "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
#: Codes a prescriber's EHR sends (guidelines/plbp/mappings/order-codes.sssom.tsv names their sources).
RXNORM, LOINC = "http://www.nlm.nih.gov/research/umls/rxnorm", "http://loinc.org"


def _schema(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


DISCOVERY, REQUEST, RESPONSE, FEEDBACK = (_schema(n) for n in ("discovery-response", "request", "response",
                                                                   "feedback"))


def _unused(query: str, timeout: float, limit: int | None) -> QueryResult:
    raise AssertionError("the CDS endpoints run no SPARQL")


@pytest.fixture(scope="module")
def client(knowledge: Graph, project: Project) -> TestClient:
    return TestClient(create_app(ServerConfig(project, knowledge, _unused)), base_url="http://127.0.0.1:8000")


def bundle(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def hook_request(prefetch: dict[str, Any] | None, hook: str = "patient-view", **context: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"hook": hook, "hookInstance": INSTANCE,
                            "context": {"userId": "Practitioner/1", "patientId": "p", **context}}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def call(client: TestClient, body: dict[str, Any], service: str = CDS_SERVICE_ID) -> Any:
    """POST a request that the request schema accepts; a 200 answer must pass the response schema too."""
    REQUEST.validate(body)
    resp = client.post(f"/cds-services/{service}", json=body)
    if resp.status_code == 200:
        RESPONSE.validate(resp.json())
        _card_rules(resp.json()["cards"])
    return resp


def _card_rules(cards: list[dict[str, Any]]) -> None:
    """What every answer keeps: summaries under 140 characters, cut at a word; no two cards or suggestions with
    the same uuid; no two cards with the same summary; urgent cards first."""
    for card in cards:
        assert len(card["summary"]) < 140
        if card["summary"].endswith("\u2026"):
            assert card["summary"][-2] != " "
        assert not card["summary"].endswith(":")
    assert len({c["uuid"] for c in cards}) == len(cards)
    assert len({c["summary"] for c in cards}) == len(cards)
    uuids = [s["uuid"] for c in cards for s in c.get("suggestions", [])]
    assert len(set(uuids)) == len(uuids)
    order = {"critical": 0, "warning": 1, "info": 2}
    assert [order[c["indicator"]] for c in cards] == sorted(order[c["indicator"]] for c in cards)


def cards_of(client: TestClient, path: Path) -> list[dict[str, Any]]:
    resp = call(client, hook_request({"bundle": bundle(path)}))
    assert resp.status_code == 200, resp.text
    return resp.json()["cards"]


def by_line(cards: list[dict[str, Any]], line: int) -> list[dict[str, Any]]:
    """The cards whose source names this line of the guideline."""
    return [c for c in cards if re.search(rf"\blines? (?:\d+, )*{line}\b", c["source"]["label"])
            or f"line {line} " in c["source"]["label"] + " "]


def resources(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [a["resource"] for s in card.get("suggestions", []) for a in s.get("actions", [])]


# -- discovery ---------------------------------------------------------------------------------------------------

def test_discovery_offers_both_hooks_with_read_and_search_templates(client: TestClient) -> None:
    doc = client.get("/cds-services").json()
    DISCOVERY.validate(doc)
    hooks = {s["hook"]: s for s in doc["services"]}
    assert set(hooks) == {"patient-view", "order-select"}
    assert hooks["patient-view"]["id"] == CDS_SERVICE_ID and hooks["order-select"]["id"] == ORDER_SERVICE_ID
    templates = hooks["patient-view"]["prefetch"]
    assert templates["patient"] == "Patient/{{context.patientId}}"
    for t in templates.values():
        assert "$" not in t  # no operation such as $everything (Prefetch query restrictions)
    # the resource types the FHIR case mapping reads (guidelines/plbp/mappings/fhir-case-mapping.json)
    for rtype in ("Condition", "Observation", "Procedure", "MedicationStatement", "MedicationRequest",
                  "DiagnosticReport", "ImagingStudy"):
        assert f"{rtype}?patient={{{{context.patientId}}}}" in templates.values()


def test_the_template_schema_refuses_an_operation() -> None:
    bad = {"services": [{"hook": "patient-view", "id": "x", "description": "d",
                         "prefetch": {"bundle": "Patient/{{context.patientId}}/$everything"}}]}
    assert not DISCOVERY.is_valid(bad)


# -- patient-view on every example -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_gets_conformant_cards(client: TestClient, path: Path) -> None:
    cards = cards_of(client, path)
    assert cards
    for card in cards:
        assert card["source"]["label"].startswith("Management of Persistent Chronic Lower Back Pain")
        for link in card.get("links", []):
            assert link["url"].startswith("http://127.0.0.1:8000/resource?iri=https%3A%2F%2Fw3id.org%2F")
        for res in resources(card):
            assert res["resourceType"] in ("ServiceRequest", "MedicationRequest")
            assert res["subject"] == {"reference": "Patient/p"} and res["intent"] == "proposal"
            get_fhir_model_class(res["resourceType"]).model_validate(res)  # a valid FHIR R4(B) resource


def test_c06_conflict_is_one_warning_card_naming_lines_16_and_19(client: TestClient) -> None:
    # c06: first-line care failed (line 16 applies) and a month of opioids gave 10 % relief (line 19 applies)
    cards = cards_of(client, PROJECT.cases_dir / "fhir-c06-opioid-no-relief.fhir.json")
    conflicts = [c for c in cards if c["summary"].startswith("Conflict")]
    assert len(conflicts) == 1
    [card] = conflicts
    assert card["indicator"] == "warning" and "line 16" in card["summary"] and "line 19" in card["summary"]
    assert "Extended-release oral opioids may be used" in card["detail"]
    assert "meaningful pain relief within 1 month" in card["detail"]
    assert card["selectionBehavior"] == "at-most-one"
    for_, against = resources(card)
    assert for_["resourceType"] == against["resourceType"] == "MedicationRequest"
    assert "doNotPerform" not in for_ and against["doNotPerform"] is True
    assert {link["url"].rsplit("%2F", 1)[-1] for link in card["links"]} == {"L16", "L19"}
    # no card of its own for either side, and the caution of line 18 is folded into the conflict card
    assert [c for c in cards if c["source"].get("url", "").endswith(("/L16", "/L19"))] == [card]
    assert "opioid-induced hyperalgesia" in card["detail"]
    assert not any("hyperalgesia may develop" in c["summary"] for c in cards)


def test_c06_advice_against_routine_imaging_is_a_do_not_perform_suggestion(client: TestClient) -> None:
    cards = cards_of(client, PROJECT.cases_dir / "fhir-c06-opioid-no-relief.fhir.json")
    [card] = [c for c in cards if c["summary"].startswith("Avoid routine imaging")]
    assert card["indicator"] == "warning"
    [res] = resources(card)
    assert res["resourceType"] == "ServiceRequest" and res["doNotPerform"] is True


def test_c06_lead_in_heading_is_not_a_card_with_a_colon(client: TestClient) -> None:
    # line 14 "Non-opioid medications should be tried first:" is an action; the card drops the colon
    cards = cards_of(client, PROJECT.cases_dir / "fhir-c06-opioid-no-relief.fhir.json")
    assert [c["summary"] for c in cards if c["source"].get("url", "").endswith("/L14")] == [
        "Non-opioid medications should be tried first"]
    assert not any(c["summary"].endswith(":") for c in cards)


def test_c04_urgency_comes_first_and_names_the_implied_action(client: TestClient) -> None:
    cards = cards_of(client, PROJECT.cases_dir / "fhir-c04-urgent-deficit.fhir.json")
    first = cards[0]
    assert first["indicator"] == "critical" and [c["indicator"] for c in cards].count("critical") == 1
    # line 5: deficits "that would require prompt surgical intervention": the action, not the assessment
    assert first["summary"].startswith("URGENT: prompt surgical evaluation (line 5)")
    [res] = resources(first)
    assert res["resourceType"] == "ServiceRequest" and "doNotPerform" not in res
    # line 5's own text is said once, inside the urgent card, not again as an info card
    assert not any(c["summary"].startswith("Assess for progressive neurological deficits") for c in cards)


def test_long_summaries_are_cut_at_a_word(client: TestClient) -> None:
    cards = cards_of(client, PROJECT.cases_dir / "fhir-c01-first-visit.fhir.json")
    [card] = [c for c in cards if c["source"].get("url", "").endswith("/L02")]
    # line 2 has 253 characters: the summary ends on a whole word and an ellipsis
    assert card["summary"].endswith("\u2026") and len(card["summary"]) < 140
    words = card["summary"][:-1].split()
    assert all(w.strip(",") in PROJECT_SOURCE_LINE_2 for w in words)


PROJECT_SOURCE_LINE_2 = (PROJECT.require("source", "line 2").read_text(encoding="utf-8").splitlines()[1])


def test_missing_data_gets_a_card_with_the_questions(client: TestClient) -> None:
    cards = cards_of(client, PROJECT.cases_dir / "fhir-c01-first-visit.fhir.json")
    missing = [c for c in cards if c["summary"].startswith("Data missing")]
    assert len(missing) == 1 and "- [ ] " in missing[0]["detail"]


def test_a_patient_only_bundle_gets_a_card_saying_what_is_missing(client: TestClient) -> None:
    full = bundle(PROJECT.cases_dir / "fhir-c06-opioid-no-relief.fhir.json")
    only = {**full, "entry": [e for e in full["entry"] if e["resource"]["resourceType"] == "Patient"]}
    cards = cards_of_body(client, hook_request({"bundle": only}))
    assert len(cards) == 1 and cards[0]["indicator"] == "warning" and "suggestions" not in cards[0]
    assert "index surgery" in cards[0]["detail"]  # the case shapes: the operation after which the pain persists


def cards_of_body(client: TestClient, body: dict[str, Any], service: str = CDS_SERVICE_ID) -> list[dict[str, Any]]:
    resp = call(client, body, service)
    assert resp.status_code == 200, resp.text
    return resp.json()["cards"]


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_an_invalid_case_gets_one_card_saying_why_and_no_recommendation(client: TestClient, path: Path) -> None:
    expected = json.loads(path.with_name(path.name.replace(".fhir.json", ".expected.json")).read_text())
    cards = cards_of_body(client, hook_request({"bundle": bundle(path)}))
    assert len(cards) == 1
    [card] = cards
    assert card["indicator"] == "warning" and "suggestions" not in card and "links" not in card
    n = len(expected["findings"])
    assert f"fails {n} check{'s' if n != 1 else ''}" in card["summary"]
    for finding in expected["findings"]:
        assert f"(`{finding['property']}`)" in card["detail"]


# -- prefetch by template, and 412 -------------------------------------------------------------------------------

def server_form(full: dict[str, Any]) -> dict[str, Any]:
    """The example bundle as a FHIR server holds it: every reference to an entry's ``urn:uuid`` fullUrl becomes
    the relative reference ``Type/id`` that a server's reads and searches return."""
    refs = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in full["entry"]}
    text = json.dumps(full)
    for url, ref in refs.items():
        text = text.replace(f'"reference": "{url}"', f'"reference": "{ref}"')
    out = json.loads(text)
    for e in out["entry"]:
        del e["fullUrl"]
    return out


def split_by_template(full: dict[str, Any], templates: dict[str, str]) -> dict[str, Any]:
    """The example bundle as a client answers the templates: the Patient read, one searchset Bundle per type
    (null when the patient has none), with references as a server holds them."""
    full = server_form(full)
    prefetch: dict[str, Any] = {}
    for key, template in templates.items():
        rtype = template.split("/")[0].split("?")[0]
        found = [copy.deepcopy(e) for e in full["entry"] if e["resource"]["resourceType"] == rtype]
        if "?" not in template:
            prefetch[key] = found[0]["resource"] if found else None
        else:
            prefetch[key] = {"resourceType": "Bundle", "type": "searchset", "timestamp": full["timestamp"],
                             "total": len(found), "entry": found} if found else None
    return prefetch


@pytest.mark.parametrize("name", ["fhir-c04-urgent-deficit", "fhir-c06-opioid-no-relief"])
def test_prefetch_by_template_gives_the_same_cards_as_one_bundle(client: TestClient, name: str) -> None:
    full = bundle(PROJECT.cases_dir / f"{name}.fhir.json")
    templates = client.get("/cds-services").json()["services"][0]["prefetch"]
    split = cards_of_body(client, hook_request(split_by_template(full, templates)))
    assert split == cards_of_body(client, hook_request({"bundle": full}))


def test_no_prefetch_and_no_fhir_server_is_412(client: TestClient) -> None:
    resp = call(client, hook_request(None))
    assert resp.status_code == 412 and "fhirServer" in resp.text


def test_incomplete_prefetch_without_fhir_server_is_412_naming_what_lacks(client: TestClient) -> None:
    full = bundle(PROJECT.cases_dir / "fhir-c06-opioid-no-relief.fhir.json")
    resp = call(client, hook_request({"patient": full["entry"][0]["resource"]}))
    assert resp.status_code == 412 and "condition" in resp.text and "observation" in resp.text


def test_a_bundle_without_the_patient_is_412(client: TestClient) -> None:
    full = bundle(PROJECT.cases_dir / "fhir-c06-opioid-no-relief.fhir.json")
    resp = call(client, hook_request({"bundle": {**full, "entry": full["entry"][1:]}}))
    assert resp.status_code == 412 and "no Patient resource" in resp.text


# -- order-select ------------------------------------------------------------------------------------------------

def draft(rtype: str, rid: str, system: str, code: str, display: str) -> dict[str, Any]:
    element = "medicationCodeableConcept" if rtype == "MedicationRequest" else "code"
    return {"resource": {"resourceType": rtype, "id": rid, "status": "draft", "intent": "order",
                         "subject": {"reference": "Patient/p"},
                         element: {"coding": [{"system": system, "code": code, "display": display}]}}}


OXYCODONE = draft("MedicationRequest", "rx1", RXNORM, "7804", "oxycodone")
LUMBAR_MRI = draft("ServiceRequest", "img1", LOINC, "30679-5", "MR Lumbar spine WO contrast")
UNMAPPED = draft("ServiceRequest", "lab1", LOINC, "2345-7", "Glucose [Mass/volume] in Serum or Plasma")


def order_select(client: TestClient, case: str, orders: list[dict[str, Any]], selections: list[str]) -> Any:
    body = hook_request({"bundle": bundle(PROJECT.cases_dir / f"{case}.fhir.json")}, "order-select",
                        selections=selections,
                        draftOrders={"resourceType": "Bundle", "type": "collection", "entry": orders})
    return call(client, body, ORDER_SERVICE_ID)


def test_an_opioid_order_gets_the_conflict_card_and_nothing_off_topic(client: TestClient) -> None:
    resp = order_select(client, "fhir-c06-opioid-no-relief", [OXYCODONE], ["MedicationRequest/rx1"])
    cards = resp.json()["cards"]
    assert [c["summary"] for c in cards if c["indicator"] == "warning"] == [
        "Conflict on extended-release oral opioid therapy: line 16 for, line 19 against"]
    assert not any(c["source"].get("url", "").endswith(("/L10", "/L11", "/L37", "/L02")) for c in cards)


def test_an_imaging_order_gets_the_advice_against_routine_imaging(client: TestClient) -> None:
    resp = order_select(client, "fhir-c06-opioid-no-relief", [LUMBAR_MRI], ["ServiceRequest/img1"])
    cards = resp.json()["cards"]
    assert [c["source"].get("url", "").rsplit("/", 1)[-1] for c in cards if c["indicator"] != "info"] == ["L37"]
    assert not any(c["summary"].startswith("Conflict") for c in cards)


def test_selections_are_honoured(client: TestClient) -> None:
    resp = order_select(client, "fhir-c06-opioid-no-relief", [OXYCODONE, LUMBAR_MRI], ["ServiceRequest/img1"])
    assert not any(c["summary"].startswith("Conflict") for c in resp.json()["cards"])
    both = order_select(client, "fhir-c06-opioid-no-relief", [OXYCODONE, LUMBAR_MRI],
                        ["ServiceRequest/img1", "MedicationRequest/rx1"]).json()["cards"]
    assert any(c["summary"].startswith("Conflict") for c in both) and any(
        c["summary"].startswith("Avoid routine imaging") for c in both)


def test_an_order_the_guideline_says_nothing_about_gets_no_cards(client: TestClient) -> None:
    resp = order_select(client, "fhir-c06-opioid-no-relief", [UNMAPPED], ["ServiceRequest/lab1"])
    assert resp.status_code == 200 and resp.json() == {"cards": []}


def test_a_selection_not_in_the_draft_orders_is_400(client: TestClient) -> None:
    resp = order_select(client, "fhir-c06-opioid-no-relief", [OXYCODONE], ["MedicationRequest/other"])
    assert resp.status_code == 400 and "not in context.draftOrders" in resp.text


def test_an_urgent_patient_gets_the_urgent_card_with_an_order(client: TestClient) -> None:
    cards = order_select(client, "fhir-c04-urgent-deficit", [OXYCODONE], ["MedicationRequest/rx1"]).json()["cards"]
    assert cards[0]["indicator"] == "critical" and "prompt surgical evaluation" in cards[0]["summary"]


# -- feedback ----------------------------------------------------------------------------------------------------

GOOD_FEEDBACK = [
    {"feedback": [{"card": "4e0a3a1e-3283-4575-ab82-028d55fe2719", "outcome": "accepted",
                   "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
                   "outcomeTimestamp": "2026-03-10T10:05:31Z"}]},
    {"feedback": [{"card": "f6b95768-b1c8-40dc-8385-bf3504b82ffb", "outcome": "overridden",
                   "outcomeTimestamp": "2026-03-10T00:00:00Z"}]},
    {"feedback": [{"card": "9368d37b-283f-44a0-93ea-547cebab93ed", "outcome": "overridden",
                   "overrideReason": {"reason": {"code": "d7ecf885", "system": "https://example.com/override"},
                                      "userComment": "A comment entered by the clinician."},
                   "outcomeTimestamp": "2026-03-10T00:00:00.52+01:00"}]},
]
BAD_FEEDBACK = [
    ({"feedback": []}, "non-empty array"),
    ({"feedback": [{"card": "x", "outcome": "rejected", "outcomeTimestamp": "2026-03-10T00:00:00Z"}]},
     "outcome must be"),
    ({"feedback": [{"card": "x", "outcome": "accepted", "outcomeTimestamp": "2026-03-10T00:00:00Z"}]},
     "acceptedSuggestions is required"),
    ({"feedback": [{"card": "x", "outcome": "overridden", "outcomeTimestamp": "yesterday"}]},
     "outcomeTimestamp must be"),
    ({"feedback": [{"outcome": "overridden", "outcomeTimestamp": "2026-03-10T00:00:00Z"}]}, "card must be"),
    ({"feedback": [{"card": "x", "outcome": "overridden", "overrideReason": {"reason": {"code": "c"}},
                    "outcomeTimestamp": "2026-03-10T00:00:00Z"}]}, "Coding with code and system"),
]


@pytest.mark.parametrize("body", GOOD_FEEDBACK, ids=["accepted", "overridden", "override-reason"])
def test_feedback_is_accepted_and_logged(client: TestClient, body: dict[str, Any],
                                         caplog: pytest.LogCaptureFixture) -> None:
    FEEDBACK.validate(body)
    with caplog.at_level(logging.INFO, logger="guideline_kg.server"):
        resp = client.post(f"/cds-services/{CDS_SERVICE_ID}/feedback", json=body)
    assert resp.status_code == 200 and resp.json() == {"recorded": 1}
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cds feedback ")]
    logged = json.loads(line.removeprefix("cds feedback "))
    item = body["feedback"][0]
    assert logged["card"] == item["card"] and logged["outcome"] == item["outcome"]
    assert "A comment" not in line  # the clinician's words are not logged, only their length


@pytest.mark.parametrize("body,reason", BAD_FEEDBACK, ids=[r for _, r in BAD_FEEDBACK])
def test_bad_feedback_is_400_and_the_schema_agrees(client: TestClient, body: dict[str, Any], reason: str) -> None:
    assert not FEEDBACK.is_valid(body)
    resp = client.post(f"/cds-services/{ORDER_SERVICE_ID}/feedback", json=body)
    assert resp.status_code == 400 and reason in resp.text


def test_feedback_for_an_unknown_service_is_404(client: TestClient) -> None:
    assert client.post("/cds-services/nope/feedback", json=GOOD_FEEDBACK[1]).status_code == 404
    assert client.post(f"/cds-services/{CDS_SERVICE_ID}/feedback", content=b"{x").status_code == 400
