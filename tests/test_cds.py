"""CDS Hooks cards drawn from the one patient result (outputs.cds_cards): urgency first naming the implied action,
one card per conflict, one per other actionable statement, evidence folded in, summaries under 140 characters cut
at a word, stable uuids; the expectations are the guideline's (guidelines/plbp/source/guideline.txt)."""

from __future__ import annotations

import json

import pytest
from rdflib import Graph

from guideline_kg.cases.reader import load_cases
from guideline_kg.cli.main import main
from guideline_kg.core.project import Project
from guideline_kg.outputs.cds_cards import SUMMARY_LIMIT, cards_for, refusal_cards, summary
from guideline_kg.reasoning.derive import CaseResult, Evaluator

PROJECT = Project.at()
CASES = ["c01-first-visit.ttl", "c02-out-of-scope-discectomy.ttl", "c04-urgent-deficit.ttl",
         "c06-opioid-no-relief.ttl", "c13-routine-repeat-imaging.ttl"]


@pytest.fixture(scope="module")
def results(knowledge: Graph) -> dict[str, CaseResult]:
    evaluator = Evaluator(knowledge, PROJECT)
    return {c.name: evaluator.evaluate(c) for c in load_cases([PROJECT.cases_dir / n for n in CASES])}


def _cards(results: dict[str, CaseResult], knowledge: Graph, case: str) -> list[dict]:
    return cards_for(results[case], knowledge)["cards"]


def _of(cards: list[dict], statement: str) -> list[dict]:
    return [c for c in cards if c["source"].get("url", "").endswith("/" + statement)]


@pytest.mark.parametrize("case", [n.rsplit(".", 1)[0] for n in CASES])
def test_cards_stay_within_the_cds_hooks_limits(case: str, results, knowledge) -> None:
    cards = _cards(results, knowledge, case)
    assert cards
    for card in cards:
        assert 0 < len(card["summary"]) < SUMMARY_LIMIT
        assert card["indicator"] in {"info", "warning", "critical"}
        assert card["source"]["label"].startswith("Management of Persistent Chronic Lower Back Pain")
    assert len({c["uuid"] for c in cards}) == len(cards)
    assert len({c["summary"] for c in cards}) == len(cards)


def test_one_card_per_actionable_applicable_statement(results, knowledge) -> None:
    # c13: routine repeat imaging without indication; every applicable statement naming an action has its card
    cards = _cards(results, knowledge, "c13-routine-repeat-imaging")
    actionable = [r["id"].rsplit("/", 1)[-1] for r in results["c13-routine-repeat-imaging"].to_json()["recommendations"]
                  if r["status"] == "applicable" and r["action"]]
    for statement in actionable:
        assert len(_of(cards, statement)) == 1, statement
    # evidence (line 12, physical therapy relief) has no card of its own: it is in the detail of line 10's card
    assert not _of(cards, "L12")
    assert "Physical therapy has demonstrated effective low back pain relief" in _of(cards, "L10")[0]["detail"]


def test_urgent_finding_is_critical_first_and_names_the_action(results, knowledge) -> None:
    cards = _cards(results, knowledge, "c04-urgent-deficit")
    assert cards[0]["indicator"] == "critical" and cards[0]["source"]["url"].endswith("/L05-urgent")
    assert "prompt surgical evaluation" in cards[0]["summary"] and "line 5" in cards[0]["summary"]
    assert "progressive neurological deficit" in cards[0]["detail"]
    assert not _of(cards, "L05")  # the assessment of line 5 is said in the urgent card, not twice
    assert _of(cards, "L02")[0]["indicator"] == "info"


def test_conflict_is_one_card_and_advice_against_is_a_warning(results, knowledge) -> None:
    cards = _cards(results, knowledge, "c06-opioid-no-relief")
    [conflict] = [c for c in cards if c["summary"].startswith("Conflict")]
    assert conflict["indicator"] == "warning" and len(conflict["links"]) == 2
    assert not _of(cards, "L19") and not _of(cards, "L18")  # in the conflict card (L18: its caution, folded)
    assert "opioid tolerance and opioid-induced hyperalgesia" in conflict["detail"]
    cards13 = _cards(results, knowledge, "c13-routine-repeat-imaging")
    assert _of(cards13, "L37")[0]["indicator"] == "warning"  # avoid routine imaging
    [action] = _of(cards13, "L37")[0]["suggestions"][0]["actions"]
    assert action["resource"]["doNotPerform"] is True and action["resource"]["resourceType"] == "ServiceRequest"


def test_out_of_scope_patient_gets_one_card_saying_so(results, knowledge) -> None:
    cards = _cards(results, knowledge, "c02-out-of-scope-discectomy")
    assert [c["summary"].split(":")[0] for c in cards] == ["Outside the guideline's population"]
    assert "laminectomy" in cards[0]["detail"]


def test_summary_is_cut_at_a_word_with_an_ellipsis() -> None:
    text = "word " * 40
    cut = summary(text)
    assert len(cut) < SUMMARY_LIMIT and cut.endswith("word\u2026")
    assert summary("short text:") == "short text:" and len(summary("x" * 200)) < SUMMARY_LIMIT


def test_long_statement_is_cut_to_the_limit_with_an_ellipsis(results, knowledge) -> None:
    card = _of(_cards(results, knowledge, "c01-first-visit"), "L02")[0]
    assert len(card["summary"]) < SUMMARY_LIMIT and card["summary"].endswith("interventional\u2026")


def test_uuid_is_stable_per_case_and_statement(results, knowledge) -> None:
    first = cards_for(results["c04-urgent-deficit"], knowledge)
    again = cards_for(results["c04-urgent-deficit"].to_json(), knowledge)
    assert [c["uuid"] for c in first["cards"]] == [c["uuid"] for c in again["cards"]]
    other = {c["uuid"] for c in cards_for(results["c01-first-visit"], knowledge)["cards"]}
    assert not other & {c["uuid"] for c in first["cards"]}


def test_refusal_is_one_card_without_recommendations() -> None:
    doc = refusal_cards("x", [{"message": "The case needs exactly one assessment date", "path": "gk:assessmentDate"}],
                        "T")
    [card] = doc["cards"]
    assert card["indicator"] == "warning" and "fails 1 check" in card["summary"] and "suggestions" not in card


def test_export_command_writes_the_cards_document(capsys) -> None:
    code = main(["export", "--format", "cds-cards", "--case", str(PROJECT.cases_dir / "c04-urgent-deficit.ttl")])
    out, _ = capsys.readouterr()
    assert code == 0 and json.loads(out)["cards"][0]["indicator"] == "critical"
