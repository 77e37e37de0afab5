"""The example cases and their hand-written expected results are complete and consistent in themselves.

These tests read only the files (no derivation): tests/test_derive.py compares the expected results with what the
evaluator derives on both paths. Here: every example has an expected file with every key and every statement, the
expectations agree with the rules they were written by (out of scope means nothing applies; a conflict needs both
sides applicable), FHIR twins expect what their Turtle twins expect, and each fact of the case vocabulary that
issue 12 added is used by at least one example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rdflib import Literal

from guideline_kg.cases.reader import EXPECTED_SUFFIX, Case, load_cases
from guideline_kg.core.namespaces import GK, RDF
from guideline_kg.core.project import Project

PROJECT = Project.at()
CASES = load_cases([PROJECT.cases_dir])
EXPECTED_KEYS = {"case", "patient", "in_scope", "urgent", "statuses", "conflicts", "unspecified_options"}
STATUSES = {"applicable", "not-applicable", "undetermined"}


def expected(case: Case) -> dict:
    path = Path(case.source).parent / (case.name + EXPECTED_SUFFIX)
    assert path.exists(), f"example case {case.name} has no {path.name}"
    return json.loads(path.read_text())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_expected_file_has_every_key_and_names_its_case(case: Case) -> None:
    doc = expected(case)
    assert set(doc) == EXPECTED_KEYS
    assert doc["case"] == case.name and doc["patient"] == str(case.patient)
    assert isinstance(doc["in_scope"], bool) and isinstance(doc["urgent"], bool)
    assert set(doc["statuses"].values()) <= STATUSES
    assert all(isinstance(p, list) and len(p) == 2 for p in doc["conflicts"])


def test_every_expected_file_lists_the_same_statements() -> None:
    """Every statement that gets a status gets one in every case: no expected file may list fewer."""
    lists = {c.name: set(expected(c)["statuses"]) for c in CASES}
    union = set().union(*lists.values())
    assert len(union) >= 22  # L02 ... L41, with L12 and L22 since issue 12
    short = {name: sorted(union - ids) for name, ids in lists.items() if ids != union}
    assert not short, f"expected files that leave statements out: {short}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_expectations_follow_the_rules_they_were_written_by(case: Case) -> None:
    doc = expected(case)
    statuses = doc["statuses"]
    if not doc["in_scope"]:  # the guideline population is part of every population
        assert set(statuses.values()) == {"not-applicable"}
        assert not doc["urgent"] and doc["conflicts"] == []
    for pair in doc["conflicts"]:  # a conflict is two applicable statements
        assert all(statuses[s] == "applicable" for s in pair), pair
    if doc["urgent"]:
        assert statuses["L05-urgent"] == "applicable"


TWINS = sorted(PROJECT.cases_dir.glob("fhir-*.fhir.json"))


@pytest.mark.parametrize("path", TWINS, ids=lambda p: p.name)
def test_fhir_twin_expects_everything_its_turtle_twin_expects(path: Path) -> None:
    mine = json.loads(path.with_name(path.name.replace(".fhir.json", EXPECTED_SUFFIX)).read_text())
    turtle = path.with_name(path.name[len("fhir-"):-len(".fhir.json")] + EXPECTED_SUFFIX)
    theirs = json.loads(turtle.read_text())
    keys = EXPECTED_KEYS - {"case", "patient"}
    assert {k: mine[k] for k in keys} == {k: theirs[k] for k in keys}


@pytest.mark.parametrize("case", [c for c in CASES if c.name[0] == "n"], ids=lambda c: c.name)
def test_each_new_example_says_what_it_shows(case: Case) -> None:
    head = [line for line in Path(case.source).read_text().splitlines() if line.startswith("#")]
    assert head and head[0].startswith(f"# Case {case.name}:")
    assert any(line.startswith("# Shows:") for line in head)


def _uses(pattern: tuple) -> list[str]:
    return [c.name for c in CASES if any(True for _ in c.graph.triples(pattern))]


@pytest.mark.parametrize("what, pattern", [
    ("no spine surgery", (None, GK.hadSpinalSurgery, Literal(False))),
    ("another spinal operation", (None, RDF.type, GK.SpinalSurgeryWithoutLaminectomyOrForaminotomy)),
    ("pain not post-operative", (None, GK.painIsPostoperative, Literal(False))),
    ("no physical therapy", (None, GK.notTreatedWith, GK.PhysicalTherapy)),
    ("never on opioids", (None, GK.notTreatedWith, GK.OpioidTherapy)),
    ("the clinician's finding", (None, RDF.type, GK.ConservativeManagementFailure)),
    ("long-term opioids considered", (None, GK.longTermOpioidTherapyConsidered, Literal(True))),
    ("no monitoring plan", (None, GK.opioidMonitoringPlanInPlace, Literal(False))),
    ("physical therapy of unspecified type", (None, GK.careAction, GK.PhysicalTherapy)),
    ("epidural steroid injection", (None, GK.careAction, GK.EpiduralSteroidInjection)),
    ("facet joint intervention", (None, GK.careAction, GK.FacetJointIntervention)),
    ("facet joint involvement", (None, RDF.type, GK.FacetJointInvolvement)),
])
def test_each_fact_of_the_case_vocabulary_has_an_example(what: str, pattern: tuple) -> None:
    assert _uses(pattern), f"no example case records {what}"


def test_examples_pin_down_each_kind_of_result() -> None:
    """Out of scope for each reason, a conflict beyond c06, each option named without content that a case
    concerns, and the repeated statements L31 and L41 differing both ways."""
    docs = {c.name: expected(c) for c in CASES}
    assert sum(not d["in_scope"] for d in docs.values()) >= 5
    assert len([n for n, d in docs.items() if d["conflicts"] and "c06" not in n]) >= 1
    assert {"L26", "L27"} <= {o for d in docs.values() for o in d["unspecified_options"]}
    pairs = {(d["statuses"]["L31"], d["statuses"]["L41"]) for d in docs.values() if d["in_scope"]}
    assert {("undetermined", "applicable"), ("not-applicable", "applicable"), ("applicable", "not-applicable")} <= pairs
