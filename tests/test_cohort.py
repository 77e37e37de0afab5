"""Cohorts: generation (deterministic, streamed, every branch), compiled validation equal to pySHACL, fast path
equal to HermiT on a random sample, and the `cohort` command's output and exit codes."""

from __future__ import annotations

import io
import json
import random
import re
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


@pytest.mark.slow
def test_every_output_line_is_a_case_and_none_is_dropped(evaluated) -> None:
    _, lines, summary = evaluated
    assert len(lines) == summary.cases == N
    assert len({d["case"] for d in lines}) == N
    invalid = [d for d in lines if d.get("invalid")]
    assert len(invalid) == len(summary.invalid) > 0
    assert all(d["violations"] and d["violations"][0]["message"] for d in invalid)
    valid = [d for d in lines if not d.get("invalid")]
    # each line is the one patient result, as `recommend --format json` gives it
    assert set(valid[0]) == {"case", "patient", "reasoner", "valid", "scope", "in_scope", "scope_reason", "urgent",
                             "conflicts", "recommendations", "unspecified_options"}


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.hermit
@pytest.mark.slow
def test_fast_path_equals_hermit_on_a_random_sample(knowledge, cohort_file, evaluated) -> None:
    """The reference path (HermiT) gives every statement the same status. The sampled cases go to HermiT in one
    run (``evaluate_many``: one JVM, the ontology classified once; test_derive shows it equal to one run a case)."""
    ce, lines, _ = evaluated
    fast = {d["case"]: {r["id"]: r["status"] for r in d["recommendations"]} | {"in_scope": d["in_scope"]}
            for d in lines if not d.get("invalid")}
    sample = random.Random(2).sample(sorted(fast), 8)
    shard = next(iter_shards(cohort_file, N))
    cases = []
    for name in sample:
        patient = URIRef(f"https://w3id.org/guideline-kg/case/{name}")
        q = f"CONSTRUCT {{ ?s ?p ?o }} WHERE {{ <{patient}> (!<{RDF.type}>)* ?s . ?s ?p ?o }}"
        graph = Graph()
        for t in shard.store.query(q):
            graph.add((to_rdflib(t.subject), to_rdflib(t.predicate), to_rdflib(t.object)))
        assert (patient, RDF.type, GK.Patient) in graph
        cases.append(Case(name, None, graph, patient))
    refs = ce.evaluator.evaluate_many(cases, reasoner="hermit")
    assert [r.case for r in refs] == sample
    for name, ref in zip(sample, refs, strict=True):
        expected = {r.statement["id"]: r.status for r in ref.results} | {"in_scope": ref.in_scope}
        assert fast[name] == expected, name


@pytest.mark.slow
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
    assert code == 1 and "bad.ttl:2" in res.read_text()  # reported with file and the defect's line, not dropped
    assert main(["cohort", "generate", "--n", "-1", "--out", str(tmp_path / "x.ttl")]) == 2
    assert not (tmp_path / "x.ttl").exists()


# ---- the profile format: data, not Python ---------------------------------------------------------------------------

MINI_PROFILE = Path(__file__).resolve().parent / "fixtures" / "mini-guideline" / "cohort-profile.json"
GENERATOR = Path(__file__).resolve().parents[1] / "src" / "guideline_kg" / "cohort" / "generate.py"


def _curies(node) -> set[str]:
    """Every CURIE-looking string (value or key) in a parsed profile."""
    if isinstance(node, dict):
        return {c for k, v in node.items() for c in _curies(k) | _curies(v)}
    if isinstance(node, list):
        return {c for v in node for c in _curies(v)}
    if isinstance(node, str):
        return {t for t in node.split() if re.fullmatch(r"[a-z][a-z0-9]*:[A-Za-z][\w-]*", t)}
    return set()


def test_the_generator_holds_no_term_of_any_guideline() -> None:
    """No class, property or value that a profile names is written in the generator (rdf:/xsd: are RDF itself;
    gk:Patient is the upper ontology's case root)."""
    source = GENERATOR.read_text(encoding="utf-8")
    for path in (PROFILE, MINI_PROFILE):
        terms = {t for t in _curies(json.loads(path.read_text(encoding="utf-8")))
                 if not t.startswith(("rdf:", "xsd:")) and t != "gk:Patient"}
        assert len(terms) > 5, path
        assert sorted(t for t in terms if t in source) == [], path


@pytest.mark.slow
def test_the_profile_draws_at_its_declared_rates() -> None:
    """Marginal frequencies over 6000 records match the numbers written in the profile (within 4 standard errors)."""
    n = 6000
    records = list(generate(load_profile(PROFILE), n, seed=17))
    counts: dict[str, int] = {}
    for r in records:
        preds = {p for _, p, _ in r.triples}
        types = {o for s, p, o in r.triples if p == "rdf:type" and s == f"{r.patient}-surgery"}
        counts["age"] = counts.get("age", 0) + ("gk:ageYears" in preds)
        counts["surgery"] = counts.get("surgery", 0) + ("gk:hadIndexSurgery" in preds)
        counts["fusion"] = counts.get("fusion", 0) + ("gk:SpinalFusion" in types)
        counts["study"] = counts.get("study", 0) + ("gk:hasPostoperativeImaging" in preds)
        counts["defect"] = counts.get("defect", 0) + (r.defect is not None)
    # read from guidelines/plbp/cohort-profile.json: age missing 0.03; surgery missing 0.01; fusion 5 of 96 by weight
    # (of the 99% with a surgery); imaging obtained "true" 62 of 100, then a study 85% of the time; defects 0.004
    expected = {"age": 0.97, "surgery": 0.99, "fusion": 0.99 * 5 / 96, "study": 0.62 * 0.85, "defect": 0.004}
    for key, p in expected.items():
        sigma = (p * (1 - p) / n) ** 0.5
        assert abs(counts[key] / n - p) <= 4 * sigma + 1e-9, (key, counts[key] / n, p)


def test_the_documented_worked_example_is_the_mini_profile() -> None:
    """docs/cohort.md shows the mini guideline's profile as its worked example: the two stay the same."""
    doc = (GENERATOR.parents[3] / "docs" / "cohort.md").read_text(encoding="utf-8")
    section = doc.split("### Worked example", 1)[1]
    shown = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    actual = json.loads(MINI_PROFILE.read_text(encoding="utf-8"))
    assert _without_comments(shown) == _without_comments(actual)


def _without_comments(node):
    if isinstance(node, dict):
        return {k: _without_comments(v) for k, v in node.items() if not k.startswith("_")}
    if isinstance(node, list):
        return [_without_comments(v) for v in node]
    return node


def _broken(tmp_path: Path, change) -> Path:
    data = json.loads(PROFILE.read_text(encoding="utf-8"))
    change(data)
    path = tmp_path / "broken-profile.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("change,key,words", [
    (lambda d: d.pop("anchor_date"), "anchor_date", "no key"),
    (lambda d: d.pop("record"), "record", "no key"),
    (lambda d: d["record"][0]["properties"][2].update(value={"normal": {"mean": 58}}), "record[0].properties[2].value.normal",
     "missing required key 'sd'"),
    (lambda d: d["record"][1].update(value={"lognormel": {}}), "record[1].value", "exactly one of"),
    (lambda d: d["record"][3].pop("link"), "record[3]", "needs a \"link\""),
    (lambda d: d["record"][6].update(when={"var": "imaging_obtianed", "equals": "true"}), "record[6].when.var",
     "no variable named 'imaging_obtianed'"),
    (lambda d: d["record"][3]["properties"][0]["value"]["weights"].update({"zz:Unknown": 3}),
     "record[3].properties[0].value.weights.zz:Unknown", "unknown prefix 'zz'"),
    (lambda d: d["record"][3].update(missng=0.1), "record[3]", "unknown key 'missng'"),
    (lambda d: d["record"][3].update(missing=1.5), "record[3].missing", "from 0 to 1"),
    (lambda d: d["invalid"]["defects"]["negative-age"].pop("steps"), "invalid.defects.negative-age",
     "missing required key 'steps'"),
], ids=["no-anchor", "no-record", "no-sd", "unknown-kind", "no-link", "unknown-variable", "unknown-prefix",
        "unknown-key", "bad-probability", "defect-without-steps"])
def test_a_broken_profile_is_named_with_its_file_and_key(tmp_path: Path, capsys, change, key: str, words: str) -> None:
    path = _broken(tmp_path, change)
    out = tmp_path / "c.ttl"
    assert main(["cohort", "generate", "--n", "5", "--profile", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and key in err and words in err, err
    assert "Traceback" not in err and not out.exists()
