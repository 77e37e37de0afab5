"""CDS Hooks cards: one per applicable statement, 140-character summaries, indicators from the graph, stable uuids."""

from __future__ import annotations

import json

import pytest
from rdflib import Graph

from guideline_kg.cases.reader import load_cases
from guideline_kg.cli.main import main
from guideline_kg.core.project import Project
from guideline_kg.outputs.cds_cards import SUMMARY_LIMIT, cards_for
from guideline_kg.reasoning.derive import CaseResult, Evaluator

PROJECT = Project.at()
CASES = ["c01-first-visit.ttl", "c04-urgent-deficit.ttl", "c06-opioid-no-relief.ttl", "c13-routine-repeat-imaging.ttl"]


@pytest.fixture(scope="module")
def results(knowledge: Graph) -> dict[str, CaseResult]:
    evaluator = Evaluator(knowledge, PROJECT)
    return {c.name: evaluator.evaluate(c) for c in load_cases([PROJECT.cases_dir / n for n in CASES])}


def _by_statement(result: CaseResult, knowledge: Graph) -> dict[str, dict]:
    """Cards keyed by the statement id they were made for (matched on the verbatim text and citations)."""
    cards = cards_for(result, knowledge)["cards"]
    applicable = [r for r in result.to_json()["recommendations"] if r["status"] == "applicable"]
    assert len(cards) == len(applicable)
    out = {}
    for rec in applicable:
        [card] = [c for c in cards if rec["text"] in c["detail"] and c["uuid"] not in
                  {o["uuid"] for o in out.values()} and ("URGENT" in c["summary"]) == rec["id"].endswith("-urgent")]
        out[rec["id"].rsplit("/", 1)[-1]] = card
    return out


@pytest.mark.parametrize("case", [n.rsplit(".", 1)[0] for n in CASES])
def test_one_card_per_applicable_statement_within_the_cds_hooks_limits(case: str, results, knowledge) -> None:
    cards = cards_for(results[case], knowledge)["cards"]
    applicable = [r for r in results[case].to_json()["recommendations"] if r["status"] == "applicable"]
    assert len(cards) == len(applicable) > 0
    for card in cards:
        assert 0 < len(card["summary"]) <= SUMMARY_LIMIT
        assert card["indicator"] in {"info", "warning", "critical"}
        assert card["source"]["label"].startswith("Management of Persistent Chronic Lower Back Pain")
        assert "**Why this applies to the patient**" in card["detail"]
    assert len({c["uuid"] for c in cards}) == len(cards)


def test_urgent_statement_is_critical_and_first(results, knowledge) -> None:
    cards = _by_statement(results["c04-urgent-deficit"], knowledge)
    assert cards["L05-urgent"]["indicator"] == "critical"
    assert cards["L05-urgent"]["summary"].startswith("URGENT: ")
    assert cards_for(results["c04-urgent-deficit"], knowledge)["cards"][0] == cards["L05-urgent"]
    assert cards["L02"]["indicator"] == "info"


def test_cautions_and_advice_against_are_warnings(results, knowledge) -> None:
    cards = _by_statement(results["c06-opioid-no-relief"], knowledge)
    assert cards["L18"]["indicator"] == "warning"  # a caution
    assert cards["L19"]["indicator"] == "warning"  # implied advice against continuing opioids
    cards13 = _by_statement(results["c13-routine-repeat-imaging"], knowledge)
    assert cards13["L37"]["indicator"] == "warning"  # avoid routine imaging


def test_detail_explains_with_the_case_facts_and_names_the_citations(results, knowledge) -> None:
    card = _by_statement(results["c04-urgent-deficit"], knowledge)["L05-urgent"]
    assert "progressive neurological deficit" in card["detail"]
    assert "Reference 1" in card["detail"] and "(Reference 1)" in card["source"]["label"]


def test_long_text_is_cut_to_the_limit_with_an_ellipsis(results, knowledge) -> None:
    cards = _by_statement(results["c01-first-visit"], knowledge)
    assert len(cards["L02"]["summary"]) == SUMMARY_LIMIT and cards["L02"]["summary"].endswith("\u2026")


def test_uuid_is_stable_per_case_and_statement(results, knowledge) -> None:
    first = cards_for(results["c04-urgent-deficit"], knowledge)
    again = cards_for(results["c04-urgent-deficit"].to_json(), knowledge)
    assert [c["uuid"] for c in first["cards"]] == [c["uuid"] for c in again["cards"]]
    other = {c["uuid"] for c in cards_for(results["c01-first-visit"], knowledge)["cards"]}
    assert not other & {c["uuid"] for c in first["cards"]}


def test_export_command_writes_the_cards_document(capsys) -> None:
    code = main(["export", "--format", "cds-cards", "--case", str(PROJECT.cases_dir / "c04-urgent-deficit.ttl")])
    out, _ = capsys.readouterr()
    assert code == 0 and json.loads(out)["cards"][0]["indicator"] == "critical"
