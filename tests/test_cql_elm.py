"""The applicability tree as a CQL library and its ELM (compile.owl2cql), run by cql-execution 3.3.2 with
cql-exec-fhir 2.2.0 (npm), not by guideline-kg's code, on the FHIR example cases; the expected statuses are the
hand-written ``.expected.json`` files (read from the source guideline)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rdflib import Graph, URIRef

from guideline_kg.cases.fhir_in import MappingRules, project_rules
from guideline_kg.compile.applicability import EMPTY, TRUE, Expr, Statement, TreeBuilder, iif
from guideline_kg.compile.owl2cql import CqlLibrary, compile_library, library_of
from guideline_kg.compile.owl2sparql import UnsupportedExpression
from guideline_kg.core.project import Project
from guideline_kg.knowledge.graph import guideline_iri

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "tests" / "js" / "run_engines.js"
CASES = sorted((REPO / "guidelines" / "plbp" / "cases").glob("fhir-*.fhir.json"))
CLI = [sys.executable, "-m", "guideline_kg.cli.main"]
STATUS = {True: "applicable", False: "not-applicable", None: "undetermined"}

needs_cql = pytest.mark.skipif(
    shutil.which("node") is None or not (REPO / "node_modules" / "cql-execution").is_dir()
    or not (REPO / "node_modules" / "cql-exec-fhir").is_dir(),
    reason="node or the npm packages cql-execution / cql-exec-fhir are not installed (run `npm ci --ignore-scripts`)")


@pytest.fixture(scope="module")
def rules(project: Project) -> MappingRules:
    return project_rules(project, "compiling applicability")


@pytest.fixture(scope="module")
def statements(knowledge: Graph, rules: MappingRules) -> list[Statement]:
    return TreeBuilder(knowledge, rules).statements()


@pytest.fixture(scope="module")
def library(knowledge: Graph, rules: MappingRules) -> CqlLibrary:
    return compile_library(knowledge, rules)


def case(name: str) -> Path:
    return next(p for p in CASES if p.name.startswith(name + "-"))


def expected(path: Path) -> dict[str, str]:
    return json.loads(path.with_name(path.name.replace(".fhir.json", ".expected.json")).read_text())["statuses"]


def run_cql(library: CqlLibrary, paths: list[Path]) -> dict[str, dict[str, str]]:
    """case file name -> expression name -> status, as cql-execution evaluates the ELM."""
    request = {"engine": "cql", "elm": library.elm, "expressions": list(library.names), "files": [str(p) for p in paths]}
    done = subprocess.run(["node", str(RUNNER)], input=json.dumps(request), capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stderr
    out = {}
    for c in json.loads(done.stdout)["cases"]:
        out[Path(c["file"]).name.replace(".fhir.json", "")] = {
            k: STATUS[v] if v is None or isinstance(v, bool) else f"unexpected {v!r}" for k, v in c["results"].items()}
    return out


# --- the library itself (no engine) ---------------------------------------------------------------------------------
def test_one_define_and_one_elm_expression_per_statement(library: CqlLibrary, statements: list[Statement]) -> None:
    names = [s.name for s in statements]
    assert list(library.names) == names
    assert len(names) >= 22  # 22 statements with a population (docs/derivation.md) and the guideline's scope
    assert re.findall(r'^define "([^"]+)":', library.cql, re.M) == names
    defs = library.elm["library"]["statements"]["def"]
    assert [d["name"] for d in defs] == ["Patient", *names]
    assert "using FHIR version '4.0.1'" in library.cql
    assert library.elm["library"]["usings"]["def"][1] == {"localIdentifier": "FHIR", "uri": "http://hl7.org/fhir",
                                                           "version": "4.0.1"}


def test_a_shared_population_is_written_once(library: CqlLibrary, statements: list[Statement]) -> None:
    """Statements with the same tree (the same population) refer to the first one's define."""
    trees = [s.applicability() for s in statements]
    defs = library.elm["library"]["statements"]["def"][1:]
    refs = [d for d in defs if d["expression"]["type"] == "ExpressionRef"]
    assert len(defs) - len(refs) == len(set(trees)) < len(trees)
    order = [d["name"] for d in defs]
    for d in refs:
        target = d["expression"]["name"]
        assert order.index(target) < order.index(d["name"])
        assert trees[order.index(target)] == trees[order.index(d["name"])]
        assert f'define "{d["name"]}":\n  "{target}"' in library.cql


def test_cql_and_elm_come_from_one_walk(statements: list[Statement]) -> None:
    """Every code the ELM tests is written in the CQL text too (the two are one walk of the tree)."""
    lib = library_of([s for s in statements if s.name == "L19"])
    codes = set(re.findall(r'"value": "([^"]*\|[^"]*)"', json.dumps(lib.elm)))
    assert codes
    for code in codes:
        assert f"'{code}'" in lib.cql


def test_a_node_without_cql_is_refused_by_name() -> None:
    class Odd(Statement):
        def applicability(self) -> Expr:
            return iif(Expr("mystery", (TRUE,)), TRUE, EMPTY)

    odd = Odd(URIRef("https://example.org/g/X1"), URIRef("https://example.org/g/P1"), ())
    with pytest.raises(UnsupportedExpression, match="mystery"):
        library_of([odd])


# --- cql-execution on the FHIR example cases ------------------------------------------------------------------------
@pytest.mark.slow  # ~6 s: cql-execution evaluates one statement on two bundles
@needs_cql
def test_cql_execution_l19_on_c06_and_c01(statements: list[Statement]) -> None:
    """c06 (line 19): 6 weeks of extended-release opioids, 10 % relief: L19 applies; c01 has no opioid trial
    recorded: undetermined (expected files written by hand)."""
    lib = library_of([s for s in statements if s.name == "L19"])
    got = run_cql(lib, [case("fhir-c06"), case("fhir-c01")])
    assert got["fhir-c06-opioid-no-relief"]["L19"] == "applicable"
    assert got["fhir-c01-first-visit"]["L19"] == "undetermined"


@pytest.mark.slow  # ~20 s: every statement on every FHIR example
@needs_cql
def test_cql_execution_equals_the_expected_statuses_on_every_fhir_example(library: CqlLibrary) -> None:
    got = run_cql(library, CASES)
    diffs, compared = [], 0
    for path in CASES:
        name = path.name.replace(".fhir.json", "")
        for statement, status in sorted(expected(path).items()):
            compared += 1
            engine = got[name].get(statement, "no result")
            if engine != status:
                diffs.append(f"{name} {statement}: cql-execution {engine}, expected {status}")
    assert not diffs, "\n".join(diffs)
    assert compared >= 22 * len(CASES) and len(CASES) >= 12


# --- generated cases ------------------------------------------------------------------------------------------------
GENERATED = int(os.environ.get("GKG_CQL_CASES", "20"))
SCOPE = {"in": "applicable", "out": "not-applicable", "undetermined": "undetermined"}


@pytest.mark.slow  # ~1 s per case in cql-execution
@needs_cql
def test_cql_execution_equals_cohort_evaluate_on_generated_cases(tmp_path: Path, library: CqlLibrary,
                                                                 statements: list[Statement], knowledge: Graph) -> None:
    """GKG_CQL_CASES generated FHIR cases (default 20): every statement of every valid case, cql-execution against
    `cohort evaluate` (the guideline's scope as the status of its own expression)."""
    cohort, ref = tmp_path / "cohort.ndjson", tmp_path / "ref.jsonl"
    subprocess.run([*CLI, "cohort", "generate", "--format", "fhir-ndjson", "--n", str(GENERATED), "--seed", "16",
                    "--out", str(cohort)], cwd=REPO, check=True, capture_output=True)
    done = subprocess.run([*CLI, "cohort", "evaluate", str(cohort), "--out", str(ref)], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert done.returncode in (0, 1), done.stderr
    by_iri = {str(s.iri): s.name for s in statements}
    scope = by_iri[str(guideline_iri(knowledge))]
    want = {}
    for line in ref.read_text().splitlines():
        c = json.loads(line)
        if c.get("valid"):
            want[c["case"]] = {**{by_iri[r["id"]]: r["status"] for r in c["recommendations"] if r["id"] in by_iri},
                               scope: SCOPE[c["scope"]["status"]]}
    request = {"engine": "cql", "elm": library.elm, "expressions": list(library.names), "files": [str(cohort)]}
    out = subprocess.run(["node", str(RUNNER)], input=json.dumps(request), capture_output=True, text=True,
                         timeout=900, check=False)
    assert out.returncode == 0, out.stderr
    got = {c["id"]: c["results"] for c in json.loads(out.stdout)["cases"]}
    diffs, compared = [], 0
    for case_id, statuses in sorted(want.items()):
        for statement, status in sorted(statuses.items()):
            compared += 1
            value = got.get(case_id, {}).get(statement, "no result")
            engine = STATUS[value] if value is None or isinstance(value, bool) else f"unexpected {value!r}"
            if engine != status:
                diffs.append(f"{case_id} {statement}: cql-execution {engine}, cohort evaluate {status}")
    assert not diffs, "\n".join(diffs[:50])
    assert len(want) >= GENERATED * 0.9 and compared >= 23 * len(want)
