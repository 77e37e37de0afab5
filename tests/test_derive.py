"""Derivation: every example case gives its expected statuses, on both paths, and the paths agree."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from rdflib import Graph, Literal, URIRef

from conftest import PLBP
from guideline_kg.cases.reader import EXPECTED_SUFFIX, Case, load_cases
from guideline_kg.core.namespaces import GK, PROV, RDF, RDFS
from guideline_kg.core.project import Project
from guideline_kg.knowledge.graph import load_knowledge
from guideline_kg.reasoning import derive
from guideline_kg.reasoning.derive import Evaluator, results_graph
from guideline_kg.store.stores import EmbeddedStore

PROJECT = Project.at()
CASES = load_cases([PROJECT.cases_dir])


@pytest.fixture(scope="module")
def evaluator(knowledge: Graph) -> Evaluator:
    return Evaluator(knowledge, PROJECT)


_CACHE: dict[tuple[str, str], object] = {}


def derived(evaluator: Evaluator, case: Case, reasoner: str = "fast"):
    """One derivation per case and path for the whole module (HermiT takes about a second a case)."""
    key = (case.name, reasoner)
    if key not in _CACHE:
        if reasoner == "hermit":  # one HermiT run for every example case (evaluate_many), then from the cache
            for c, r in zip(CASES, evaluator.evaluate_many(CASES, "hermit"), strict=True):
                _CACHE[(c.name, "hermit")] = r
        else:
            _CACHE[key] = evaluator.evaluate(case, reasoner)
    return _CACHE[key]


def expected_of(case: Case) -> dict:
    path = Path(case.source).parent / (case.name + EXPECTED_SUFFIX)
    assert path.exists(), f"example case {case.name} has no {path.name}"
    return json.loads(path.read_text())


def short(iri: str) -> str:
    """plbp:L16 -> L16 (the expected files name statements by their local id)."""
    assert iri.startswith(str(PLBP)), iri
    return iri[len(str(PLBP)):]


def observed(doc: dict) -> dict:
    """The parts of a case's JSON result (`recommend --format json`) that an expected file pins down.

    The keys of the patient result are checked to be there, so a result that loses one fails here rather than
    comparing nothing."""
    for key in ("in_scope", "urgent", "conflicts", "recommendations", "unspecified_options"):
        assert key in doc, f"the patient result has no {key!r}"
    return {"in_scope": doc["in_scope"],
            "urgent": bool(doc["urgent"]),
            "statuses": {short(r["id"]): r["status"] for r in doc["recommendations"]},
            "conflicts": sorted([short(c["for"]), short(c["against"])] for c in doc["conflicts"]),
            "unspecified_options": sorted(short(u["id"]) for u in doc["unspecified_options"])}


def test_example_cases_in_every_input_format() -> None:
    """17 original cases (c01-c17, one in JSON-LD), 12 cases of issue 12 (n01-n12) and their FHIR twins."""
    assert len(CASES) >= 35
    assert sum(c.name.startswith("n") for c in CASES) >= 12
    names = {Path(c.source).name for c in CASES}
    assert any(n.endswith(".ttl") for n in names) and any(n.endswith(".jsonld") for n in names)
    assert any(n.endswith(".fhir.json") for n in names)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("reasoner", ["fast", pytest.param("hermit", marks=[pytest.mark.hermit, pytest.mark.slow])])
def test_case_gives_expected_results(evaluator: Evaluator, case: Case, reasoner: str) -> None:
    """Every statement's status, scope, urgency, conflicts and options named without content, as written by hand."""
    expected = expected_of(case)
    got = observed(derived(evaluator, case, reasoner).to_json())
    assert got["in_scope"] == expected["in_scope"], f"in_scope on the {reasoner} path"
    assert got["urgent"] == expected["urgent"], f"urgent on the {reasoner} path"
    wrong = {sid: (status, got["statuses"].get(sid, "no status")) for sid, status in expected["statuses"].items()
             if got["statuses"].get(sid) != status}
    assert not wrong, f"(expected, got) on the {reasoner} path: {wrong}"
    assert got["conflicts"] == sorted(expected["conflicts"]), f"conflicts on the {reasoner} path"
    assert got["unspecified_options"] == sorted(expected["unspecified_options"]), f"options on the {reasoner} path"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_expected_file_lists_every_statement_the_evaluator_reports(evaluator: Evaluator, case: Case) -> None:
    """No statement with a status may be left out of an expected file (nor one listed that has none)."""
    reported = set(observed(derived(evaluator, case).to_json())["statuses"])
    listed = set(expected_of(case)["statuses"])
    assert reported - listed == set(), f"{case.name}: the expected file leaves out {sorted(reported - listed)}"
    assert listed - reported == set(), f"{case.name}: the expected file lists statements without a status"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.hermit
@pytest.mark.slow
def test_fast_and_hermit_paths_agree_on_every_statement(evaluator: Evaluator, case: Case) -> None:
    fast = {r.statement["id"]: r.status for r in derived(evaluator, case, "fast").results}
    hermit = {r.statement["id"]: r.status for r in derived(evaluator, case, "hermit").results}
    assert fast == hermit


def test_every_action_recommendation_is_both_applicable_and_not_applicable_in_the_examples(evaluator) -> None:
    seen: dict[str, set[str]] = {}
    for case in CASES:
        for r in evaluator.evaluate(case).results:
            if r.statement["action"]:
                seen.setdefault(r.statement["id"], set()).add(r.status)
    assert seen, "no action statements evaluated"
    lacking = {sid: st for sid, st in seen.items() if not {"applicable", "not-applicable"} <= st}
    assert not lacking


def test_examples_cover_undetermined_out_of_scope_and_urgent(evaluator) -> None:
    results = [evaluator.evaluate(c) for c in CASES]
    assert any(not r.in_scope for r in results)
    assert any(any(s.status == "undetermined" for s in r.results) for r in results)
    assert any(r.urgent for r in results)


def test_urgent_findings_lead_the_report(evaluator) -> None:
    case = next(c for c in CASES if c.name.startswith("c04"))
    result = evaluator.evaluate(case)
    first = result.to_json()["recommendations"][0]
    assert first["id"] == str(PLBP["L05-urgent"]) and first["status"] == "applicable"
    assert result.urgent and "progressive neurological deficit" in result.urgent[0]


def test_applicable_because_names_the_facts_that_met_each_condition(evaluator) -> None:
    case = next(c for c in CASES if c.name.startswith("c06"))
    rec = next(r for r in evaluator.evaluate(case).to_json()["recommendations"] if r["id"] == str(PLBP.L19))
    assert rec["status"] == "applicable" and rec["missing"] == []
    assert any("pain relief in percent: 10" in b for b in rec["because"])
    assert not any("c06-t3" in b for b in rec["because"]), "explanations name things by label, not by node id"


def test_not_applicable_because_names_the_failed_condition_and_fact(evaluator) -> None:
    case = next(c for c in CASES if c.name.startswith("c01"))
    rec = next(r for r in evaluator.evaluate(case).to_json()["recommendations"] if r["id"] == str(PLBP.L37))
    assert rec["status"] == "not-applicable"
    assert len(rec["because"]) == 1
    assert rec["because"][0].startswith("no post-operative imaging yet (postoperative imaging obtained: no)")


def test_undetermined_lists_the_missing_data_and_is_open_world(evaluator) -> None:
    case = next(c for c in CASES if c.name.startswith("c05"))
    rec = next(r for r in evaluator.evaluate(case).to_json()["recommendations"] if r["id"] == str(PLBP["L05-urgent"]))
    assert rec["status"] == "undetermined"
    assert len(rec["missing"]) == 1
    assert "progressive neurological deficit or sign of a serious underlying condition" in rec["missing"][0]
    assert "assessed, present" in rec["missing"][0]


def test_out_of_scope_case_gives_reason(evaluator) -> None:
    case = next(c for c in CASES if c.name.startswith("c02"))
    result = evaluator.evaluate(case)
    assert not result.in_scope
    assert "neither a laminectomy nor a foraminotomy" in result.scope_reason


def test_json_has_exactly_the_contract_keys(evaluator) -> None:
    """The case object of docs (`recommend --format json`): the keys of the patient result, and scope_reason (the
    one-line scope of the text report)."""
    doc = evaluator.evaluate(CASES[0]).to_json()
    assert set(doc) == {"case", "patient", "reasoner", "valid", "scope", "in_scope", "scope_reason", "urgent",
                        "conflicts", "recommendations", "unspecified_options"}
    assert set(doc["scope"]) == {"status", "reasons", "missing"}
    keys = {"id", "source_lines", "status", "urgent", "text", "action", "direction", "strength", "line_of_therapy",
            "citations", "because", "missing", "thresholds", "conflicts_with", "note"}
    assert all(set(r) == keys for r in doc["recommendations"])
    assert all(isinstance(x, str) for r in doc["recommendations"] for x in r["because"] + r["missing"])


def test_batch_evaluation_equals_single_case_evaluation(evaluator) -> None:
    graph = Graph()
    for c in CASES:
        graph += c.graph
    store = EmbeddedStore.from_graph(graph)
    single = {c.patient: {r.statement["id"]: r.status for r in evaluator.evaluate(c).results} for c in CASES}
    batch = {r.patient: {s.statement["id"]: s.status for s in r.results} for r in evaluator.evaluate_store(store)}
    assert batch == single


def test_results_graph_links_result_to_case_statement_population_and_facts(evaluator) -> None:
    case = next(c for c in CASES if c.name.startswith("c06"))
    g = results_graph([evaluator.evaluate(case)])
    node = next(n for n in g.subjects(GK.forStatement, PLBP.L19))
    assert (node, GK.status, GK.Applicable) in g
    assert (node, GK.forCase, case.patient) in g
    assert (node, PROV.wasDerivedFrom, PLBP["Population-L19"]) in g
    assert (node, PROV.wasDerivedFrom, URIRef(str(case.patient) + "-t3")) in g
    assert (node, RDF.type, GK.RecommendationResult) in g


def test_recommendation_results_count_as_the_statements_recommend_lists(evaluator, knowledge) -> None:
    """A SPARQL count of gk:RecommendationResult per case equals the statements of the patient result; the
    guideline's own scope is a gk:ScopeResult (it was counted as one more recommendation result)."""
    case = next(c for c in CASES if c.name.startswith("c06"))
    result = evaluator.evaluate(case)
    g = results_graph([result])
    rows = list(g.query("SELECT (COUNT(?r) AS ?n) WHERE { ?r a gk:RecommendationResult }",
                        initNs={"gk": GK}))
    assert int(rows[0][0]) == len(result.results) == 22  # the guideline's 22 statements (expected.json lists them)
    (scope,) = g.subjects(RDF.type, GK.ScopeResult)
    assert g.value(scope, GK.forStatement) == PLBP.guideline
    assert (scope, RDF.type, GK.RecommendationResult) not in g


def test_second_guideline_changes_nothing_in_code(tmp_path) -> None:
    """A changed threshold in the data changes the result: the logic lives in guidelines/plbp/definitions.ttl."""
    kg = tmp_path / "kg"
    shutil.copytree(PROJECT.kg_dir, kg)
    defs = kg / "definitions.ttl"
    defs.write_text(defs.read_text().replace("xsd:minInclusive 3.0", "xsd:minInclusive 12.0")
                    .replace("xsd:maxExclusive 3.0", "xsd:maxExclusive 12.0"))
    project = Project.at(PROJECT.home, kg=kg)
    ev = Evaluator(load_knowledge(project), project)
    case = next(c for c in CASES if c.name.startswith("c01"))  # 8 months of pain
    result = ev.evaluate(case)
    assert not result.in_scope and "not (yet) chronic" in result.scope_reason and "8" in result.scope_reason


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_json_says_what_the_statement_objects_say(evaluator, case) -> None:
    result = evaluator.evaluate(case)
    doc = result.to_json()
    assert doc["recommendations"] == [r.to_json() for r in result.ordered()]
    assert doc["scope"]["status"] == ("in" if result.in_scope else doc["scope"]["status"])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_has_urgent_agrees_with_the_urgent_findings(evaluator, case) -> None:
    result = evaluator.evaluate(case)
    assert result.has_urgent() == bool(result.urgent)


def test_memo_is_bounded_and_results_stay_right_after_it_is_cleared(evaluator, knowledge, monkeypatch) -> None:
    monkeypatch.setattr(derive, "_MEMO_LIMIT", 2)
    small = Evaluator(knowledge, PROJECT)
    got = {c.name: small.evaluate(c).to_json() for c in CASES[:8]}
    assert len(small._status_memo) <= 2
    assert got == {c.name: evaluator.evaluate(c).to_json() for c in CASES[:8]}


@pytest.mark.hermit
@pytest.mark.slow
def test_one_hermit_run_for_many_cases_equals_one_run_per_case(evaluator: Evaluator) -> None:
    pair = [c for c in CASES if c.name.startswith(("c04", "n09"))]  # urgent; refractory with an unspecified option
    assert len(pair) == 2
    # "together": the module's one HermiT run over every example case (evaluate_many, cached by `derived`)
    together = [derived(evaluator, case, "hermit") for case in pair]
    for case, batch in zip(pair, together, strict=True):
        alone = evaluator.evaluate(case, "hermit")
        assert batch.statuses() == alone.statuses()
        assert batch.to_json() == alone.to_json()


def test_cases_sharing_a_subject_are_not_merged_for_one_reasoner_run(monkeypatch) -> None:
    """Two case files that describe the same IRI (here: the same treatment episode) could mix their facts in one
    merged HermiT run; evaluate_many must then classify them one by one."""
    first, second = (c for c in CASES if c.name.startswith(("c06", "c07")))
    assert derive._disjoint([first, second])
    shared = URIRef("https://w3id.org/guideline-kg/case/shared-episode")
    a, b = Graph() + first.graph, Graph() + second.graph
    a.add((shared, RDFS.label, Literal("episode A")))
    b.add((shared, RDFS.label, Literal("episode B")))
    mixed = [replace(first, graph=a), replace(second, graph=b)]
    assert not derive._disjoint(mixed)
    one_by_one: list[str] = []
    monkeypatch.setattr(derive, "classify", lambda *a, **k: pytest.fail("the mixed cases were merged"))
    monkeypatch.setattr(Evaluator, "evaluate", lambda self, case, reasoner="fast": one_by_one.append(case.name))
    Evaluator.evaluate_many(object.__new__(Evaluator), mixed, "hermit")
    assert one_by_one == [first.name, second.name]
