"""Cohorts: generation (deterministic, streamed, every branch), compiled validation equal to pySHACL, fast path
equal to HermiT on a random sample, and the `cohort` command's output and exit codes."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pyoxigraph as ox
import pyshacl
import pytest
from rdflib import Graph, URIRef

from guideline_kg.cases.reader import Case
from guideline_kg.cli.main import main
from guideline_kg.cohort.evaluate import CohortEvaluator, case_shapes, hierarchy_context
from guideline_kg.cohort.generate import generate, load_profile, write_cohort
from guideline_kg.cohort.shards import iter_shards
from guideline_kg.compile.shacl2sparql import compile_shapes, run_constraints
from guideline_kg.core.namespaces import GK, RDF, SH
from guideline_kg.core.project import Project
from guideline_kg.knowledge.graph import load_knowledge
from guideline_kg.store.stores import to_rdflib

PROJECT = Project.at()
PROFILE = PROJECT.kg_dir / "cohort-profile.json"
N = 600


@pytest.fixture(scope="module")
def knowledge() -> Graph:
    return load_knowledge(PROJECT)


@pytest.fixture(scope="module")
def cohort_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cohort") / "cohort.ttl"
    with path.open("w") as f:
        write_cohort(generate(load_profile(PROFILE), N, seed=11), f, "turtle")
    return path


@pytest.fixture(scope="module")
def evaluated(knowledge, cohort_file) -> tuple[CohortEvaluator, list[dict], object]:
    ce = CohortEvaluator(knowledge, PROJECT)
    out = io.StringIO()
    summary = ce.run(cohort_file, out, shard_size=250)  # three shards
    return ce, [json.loads(line) for line in out.getvalue().splitlines()], summary


def test_generation_is_deterministic_for_a_seed_and_differs_across_seeds() -> None:
    profile = load_profile(PROFILE)

    def text(seed: int) -> str:
        buf = io.StringIO()
        write_cohort(generate(profile, 50, seed), buf, "ntriples")
        return buf.getvalue()

    assert text(3) == text(3)
    assert text(3) != text(4)


def test_generation_is_streamed() -> None:
    records = generate(load_profile(PROFILE), 10**9, seed=1)  # would never fit if materialised
    first = next(records)
    assert first.name.endswith("p0000000001") and (first.patient, "rdf:type", "gk:Patient") in first.triples


def test_both_rdf_formats_parse_to_the_same_graph() -> None:
    graphs = []
    for f in ("turtle", "ntriples"):
        buf = io.StringIO()
        write_cohort(generate(load_profile(PROFILE), 20, seed=2), buf, f)
        graphs.append(Graph().parse(data=buf.getvalue(), format=f))
    assert len(graphs[0]) == len(graphs[1]) > 20 * 10
    assert set(graphs[0]) == set(graphs[1])


def test_every_output_line_is_a_case_and_none_is_dropped(evaluated) -> None:
    _, lines, summary = evaluated
    assert len(lines) == summary.cases == N
    assert len({d["case"] for d in lines}) == N
    invalid = [d for d in lines if d.get("invalid")]
    assert len(invalid) == len(summary.invalid) > 0
    assert all(d["violations"] and d["violations"][0]["message"] for d in invalid)
    valid = [d for d in lines if not d.get("invalid")]
    assert set(valid[0]) == {"case", "in_scope", "scope_reason", "recommendations"}


def test_the_cohort_exercises_every_branch_of_every_condition(evaluated) -> None:
    """Each statement is applicable, not applicable and undetermined for someone in the cohort."""
    ce, _, summary = evaluated
    for sid in ce.evaluator.statements:
        assert set(summary.status[sid]) == {"applicable", "not-applicable", "undetermined"}, sid


def test_planted_defects_are_found_invalid(knowledge) -> None:
    records = [r for r in generate(load_profile(PROFILE), 3000, seed=5) if r.defect][:12]
    assert {r.defect for r in records} >= {"pain-score-out-of-range", "chronicity-stage-out-of-range"}
    buf = io.StringIO()
    write_cohort(iter(records), buf, "turtle")
    ce = CohortEvaluator(knowledge, PROJECT)
    store = ox.Store()
    store.bulk_load(buf.getvalue().encode(), format=ox.RdfFormat.TURTLE)
    store.bulk_load(ce.context, format=ox.RdfFormat.N_TRIPLES)
    bad, _ = ce.validate(store)
    assert {p.rsplit("/", 1)[-1] for p in bad} == {r.name for r in records}


def _pyshacl_keys(data: Graph, shapes: Graph) -> set[tuple]:
    _, report, _ = pyshacl.validate(data, shacl_graph=shapes, inference="none")
    keys = set()
    for r in report.subjects(RDF.type, SH.ValidationResult):
        path = report.value(r, SH.resultPath)
        keys.add((str(report.value(r, SH.focusNode)), str(path) if path is not None else None,
                  str(report.value(r, SH.sourceConstraintComponent)),
                  str(report.value(r, SH.resultSeverity)).rsplit("#", 1)[-1]))
    return keys


def test_compiled_validation_gives_the_same_findings_as_pyshacl(knowledge) -> None:
    """On a sample of invalid and valid cases, one by one, as `recommend` validates them."""
    shapes = case_shapes(PROJECT)
    constraints = compile_shapes(shapes)
    ctx = hierarchy_context(knowledge)
    records = list(generate(load_profile(PROFILE), 2500, seed=9))
    sample = [r for r in records if r.defect][:4] + records[:3]
    total = 0
    for record in sample:
        buf = io.StringIO()
        write_cohort(iter([record]), buf, "turtle")
        data = Graph().parse(data=buf.getvalue(), format="turtle") + ctx
        store = ox.Store()
        store.bulk_load(buf.getvalue().encode(), format=ox.RdfFormat.TURTLE)
        store.bulk_load(ctx.serialize(format="nt", encoding="utf-8"), format=ox.RdfFormat.N_TRIPLES)
        mine = {r.key() for r in run_constraints(store, constraints)}
        assert mine == _pyshacl_keys(data, shapes), record.name
        total += len(mine)
    assert total >= 4  # the planted defects were found by both


def test_fast_path_equals_hermit_on_a_random_sample(knowledge, cohort_file, evaluated) -> None:
    """The reference path (HermiT, one case at a time) gives every statement the same status."""
    ce, lines, _ = evaluated
    fast = {d["case"]: {r["id"]: r["status"] for r in d["recommendations"]} | {"in_scope": d["in_scope"]}
            for d in lines if not d.get("invalid")}
    sample = random.Random(2).sample(sorted(fast), 8)
    shard = next(iter_shards(cohort_file, N))
    for name in sample:
        patient = URIRef(f"https://w3id.org/guideline-kg/case/{name}")
        q = f"CONSTRUCT {{ ?s ?p ?o }} WHERE {{ <{patient}> (!<{RDF.type}>)* ?s . ?s ?p ?o }}"
        graph = Graph()
        for t in shard.store.query(q):
            graph.add((to_rdflib(t.subject), to_rdflib(t.predicate), to_rdflib(t.object)))
        assert (patient, RDF.type, GK.Patient) in graph
        ref = ce.evaluator.evaluate(Case(name, None, graph, patient), reasoner="hermit")
        expected = {r.statement["id"]: r.status for r in ref.results} | {"in_scope": ref.in_scope}
        assert fast[name] == expected, name


def test_cli_generate_then_evaluate(tmp_path: Path, capsys) -> None:
    out = tmp_path / "c.nt"
    assert main(["cohort", "generate", "--n", "120", "--seed", "4", "--format", "ntriples", "--out", str(out)]) == 0
    res = tmp_path / "r.jsonl"
    code = main(["cohort", "evaluate", str(out), "--out", str(res), "--summary", "--shard-size", "50"])
    stdout, _ = capsys.readouterr()
    lines = res.read_text().splitlines()
    assert len(lines) == 120
    has_invalid = any(json.loads(x).get("invalid") for x in lines)
    assert code == (1 if has_invalid else 0)
    assert "applicable" in stdout and "L16" in stdout


def test_cli_bad_input_exits_2_without_output(tmp_path: Path, capsys) -> None:
    assert main(["cohort", "evaluate", str(tmp_path / "missing.ttl")]) == 2
    bad = tmp_path / "bad.ttl"
    bad.write_text("# case x1\n<https://w3id.org/guideline-kg/case/x1> a <https://w3id.org/guideline-kg/ontology#Patient\n")
    res = tmp_path / "r.jsonl"
    code = main(["cohort", "evaluate", str(bad), "--out", str(res)])
    _, _err = capsys.readouterr()
    assert code == 1 and "bad.ttl:1" in res.read_text()  # reported with file and line, not dropped
    assert main(["cohort", "generate", "--n", "-1", "--out", str(tmp_path / "x.ttl")]) == 2
    assert not (tmp_path / "x.ttl").exists()
