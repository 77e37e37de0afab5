"""The compiled applicability run by the engines of the field on generated FHIR cases, against the reference.

One cohort of GKG_ENGINE_CASES generated FHIR cases (default 2,000; `cohort generate --format fhir-ndjson`,
seed 15) is made once for the module; the reference statuses come once from `cohort evaluate` (the fast path,
the same derivation as `recommend`): {case id: {statement IRI: status}} for every valid case, the guideline's scope
as its own statement. Each engine then runs once over all the cases, and every statement of every valid case must
agree: 100 %, differences printed by statement and case.

The FHIRPath engines run the factored form the export writes (`compile.owl2fhirpath.compile_factored`): the
variables in order, each evaluated on the Bundle with the earlier ones in the environment (the semantics of the
FHIR ``variable`` extension), then each statement's expression with all of them:

- HL7's fhirpath.js (npm ``fhirpath``), through tests/js/run_engines.js, over all the cases;
- fhirpathpy, in this process, each text parsed once; over the first GKG_FHIRPATHPY_CASES cases (default 300:
  about 0.2 s of CPU a case, so 2,000 take minutes; `GKG_FHIRPATHPY_CASES=2000` or benchmarks/bench_compiled.py
  runs them all, docs/compilers.md has the measured figures).

The fixtures ``cohort`` (the NDJSON file) and ``reference`` are meant for every engine of the module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fhirpathpy
import pyarrow.parquet as pq
import pytest
from rdflib import Graph, URIRef

from guideline_kg.cases.fhir_in import project_rules
from guideline_kg.compile.owl2fhirpath import Factored, compile_factored
from guideline_kg.core.project import Project
from guideline_kg.knowledge.graph import guideline_iri, load_knowledge
from guideline_kg.outputs.fhir_cpg import compile_cql, library_resource, read_pathway
from guideline_kg.store.stores import EmbeddedStore

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "tests" / "js" / "run_engines.js"
MINI_HOME = REPO / "tests" / "fixtures" / "mini-guideline"
CLI = [sys.executable, "-m", "guideline_kg.cli.main"]
CASES = int(os.environ.get("GKG_ENGINE_CASES", "2000"))
PY_CASES = int(os.environ.get("GKG_FHIRPATHPY_CASES", "300"))
STATUS = {True: "applicable", False: "not-applicable", None: "undetermined"}
SCOPE = {"in": "applicable", "out": "not-applicable", "undetermined": "undetermined"}

needs_node = pytest.mark.skipif(shutil.which("node") is None or not (REPO / "node_modules" / "fhirpath").is_dir(),
                                reason="the npm engines are not installed (run `npm ci`)")


# --- the shared fixtures: the cohort and the reference -----------------------------------------------------------
def generate(out: Path, n: int, seed: int, kg: Path | None = None) -> Path:
    """`cohort generate --format fhir-ndjson` (of the mini guideline when ``kg``)."""
    prefix = ["--kg", str(kg)] if kg else []
    done = subprocess.run([*CLI, *prefix, "cohort", "generate", "--format", "fhir-ndjson", "--n", str(n), "--seed",
                           str(seed), "--out", str(out)], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return out


def evaluate_reference(cohort: Path, out: Path, guideline: str, kg: Path | None = None) -> dict[str, dict[str, str]]:
    """{case id: {statement IRI: status}} of the valid cases, from `cohort evaluate --out DIR` (the columnar
    results: the same derivation as `recommend`, without building the explanation texts the JSON Lines carry; the
    guideline's scope as the status of the guideline's own statement)."""
    prefix = ["--kg", str(kg)] if kg else []
    done = subprocess.run([*CLI, *prefix, "cohort", "evaluate", str(cohort), "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert done.returncode in (0, 1), done.stderr  # 1: some planted defects make cases invalid
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    iris: dict[str, str] = manifest["statements"]
    want: dict[str, dict[str, str]] = {}
    for part in manifest["partitions"]:
        for row in pq.read_table(out / part["results"], columns=["case", "statement", "status", "scope"]).to_pylist():
            statuses = want.setdefault(row["case"], {guideline: SCOPE[row["scope"]]})
            statuses[iris[row["statement"]]] = row["status"]
    return want


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated FHIR cases, one Bundle a line (made once for the module)."""
    return generate(tmp_path_factory.mktemp("engines") / "cohort.ndjson", CASES, 15)


@pytest.fixture(scope="module")
def reference(cohort: Path, knowledge: Graph) -> dict[str, dict[str, str]]:
    """{case id: {statement IRI: status}} of every valid case, by `cohort evaluate` (run once)."""
    want = evaluate_reference(cohort, cohort.with_name("reference"), str(guideline_iri(knowledge)))
    assert len(want) >= CASES * 0.9, f"only {len(want)} of {CASES} generated cases are valid"
    return want


@pytest.fixture(scope="module")
def factored(knowledge: Graph, project: Project) -> Factored:
    return compile_factored(knowledge, project_rules(project, "the engine tests"))


# --- comparing ---------------------------------------------------------------------------------------------------
def status_of(value: object) -> str:
    return STATUS[value] if value is None or isinstance(value, bool) else f"unexpected {value!r}"


def one(values: list[Any]) -> object:
    """A FHIRPath result as the runner reports it: [] None, [b] b, anything else as it is."""
    if not values:
        return None
    return values[0] if len(values) == 1 and isinstance(values[0], bool) else values


def differences(got: dict[str, dict[str, str]], want: dict[str, dict[str, str]]) -> tuple[int, list[str]]:
    """(statuses compared, every difference as "case statement: engine X, recommend Y")."""
    compared, out = 0, []
    for case, statuses in sorted(want.items()):
        for statement, status in sorted(statuses.items()):
            compared += 1
            engine = got.get(case, {}).get(statement, "no result")
            if engine != status:
                out.append(f"{case} {statement.rsplit('/', 1)[-1]}: engine {engine}, recommend {status}")
    return compared, out


def run_node(request: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    """tests/js/run_engines.js: JSON in, JSON out."""
    done = subprocess.run(["node", str(RUNNER)], input=json.dumps(request), capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def fhirpath_js(factored: Factored, files: list[Path], resolve: bool = True) -> dict[str, dict[str, str]]:
    """fhirpath.js over the Bundles of ``files``: {Bundle id or file name: {statement IRI: status}}."""
    out = run_node({"engine": "fhirpath", "files": [str(f) for f in files], "resolveInternalTypes": resolve,
                    "variables": [[v.name, v.expression] for v in factored.variables],
                    "expressions": {str(k): v for k, v in factored.statements.items()}})
    return {c["id"] if c["line"] else Path(c["file"]).name: {k: status_of(v) for k, v in c["results"].items()}
            for c in out["cases"]}


class Fhirpathpy:
    """fhirpathpy running the factored form: every text parsed once; per Bundle the variables in order (each
    with the earlier ones as its context, handed back as the engine's own nodes: ``returnRawData``), then each
    distinct statement expression with all of them."""

    def __init__(self, factored: Factored) -> None:
        self.statements = {str(k): v for k, v in factored.statements.items()}
        self.variables = [(v.name, fhirpathpy.compile(v.expression, options={"returnRawData": True}))
                          for v in factored.variables]
        self.expressions: dict[str, Callable[..., list[Any]]] = {
            text: fhirpathpy.compile(text) for text in set(self.statements.values())}

    def environment(self, bundle: dict[str, Any]) -> dict[str, Any]:
        env: dict[str, Any] = {}
        for name, fn in self.variables:
            env[name] = fn(bundle, env)
        return env

    def __call__(self, bundle: dict[str, Any]) -> dict[str, str]:
        env = self.environment(bundle)
        values = {text: one(fn(bundle, env)) for text, fn in self.expressions.items()}
        return {k: status_of(values[t]) for k, t in self.statements.items()}


# --- the engines on the generated cases --------------------------------------------------------------------------
@needs_node
def test_hl7_fhirpath_agrees_with_recommend_on_every_generated_case(
        cohort: Path, reference: dict[str, dict[str, str]], factored: Factored) -> None:
    start = time.perf_counter()
    got = fhirpath_js(factored, [cohort])
    seconds = time.perf_counter() - start
    compared, diffs = differences(got, reference)
    print(f"fhirpath.js: {compared - len(diffs)}/{compared} statuses equal ({len(reference)} valid cases, "
          f"{seconds:.1f} s)")
    assert not diffs, "\n".join(diffs[:100])
    assert compared >= len(reference) * len(factored.statements)


def test_fhirpathpy_agrees_with_recommend_on_the_generated_cases(
        cohort: Path, reference: dict[str, dict[str, str]], factored: Factored) -> None:
    engine = Fhirpathpy(factored)
    bundles = [json.loads(line) for line in cohort.read_text(encoding="utf-8").splitlines()[:PY_CASES]]
    start = time.perf_counter()
    got = {b["id"]: engine(b) for b in bundles if b["id"] in reference}
    seconds = time.perf_counter() - start
    compared, diffs = differences(got, {case: reference[case] for case in got})
    print(f"fhirpathpy: {compared - len(diffs)}/{compared} statuses equal ({len(got)} valid cases, {seconds:.1f} s)")
    assert not diffs, "\n".join(diffs[:100])
    assert len(got) >= min(PY_CASES, CASES) * 0.9


@pytest.mark.skipif(shutil.which("node") is None or not (REPO / "node_modules" / "cql-execution").is_dir()
                    or not (REPO / "node_modules" / "cql-exec-fhir").is_dir(),
                    reason="cql-execution / cql-exec-fhir are not installed (run `npm ci`)")
def test_cql_execution_agrees_with_recommend_on_every_generated_case(
        cohort: Path, reference: dict[str, dict[str, str]], knowledge: Graph, project: Project,
        tmp_path: Path) -> None:
    """cql-execution + cql-exec-fhir run the ELM decoded from the exported Library resource (what ships: the
    export's `compile_cql` and `library_resource`), each case loaded into cql-exec-fhir's patient source;
    tests/js/run_engines.js (runCql). Its defines are named by statement; the Library maps them to IRIs."""
    pathway = read_pathway(EmbeddedStore.from_graph(knowledge), project)
    assert compile_cql(pathway, knowledge, project) is None and pathway.cql is not None
    library = tmp_path / "Library.json"
    library.write_text(json.dumps(library_resource(pathway)), encoding="utf-8")
    iri = dict(zip(pathway.cql.names, pathway.cql.statements, strict=True))
    start = time.perf_counter()
    out = run_node({"engine": "cql", "library": str(library), "files": [str(cohort)]})
    seconds = time.perf_counter() - start
    got = {c["id"]: {iri[k]: status_of(v) for k, v in c["results"].items() if k in iri} for c in out["cases"]}
    compared, diffs = differences(got, reference)
    print(f"cql-execution: {compared - len(diffs)}/{compared} statuses equal ({len(reference)} valid cases, "
          f"{seconds:.1f} s, {out['evaluate_ms'] / max(1, len(out['cases'])):.1f} ms a case)")
    assert not diffs, "\n".join(diffs[:100])
    assert compared >= len(reference) * len(pathway.cql.names)


# --- the mini guideline: the age population (Patient.birthDate, whole years at the assessment date) -------------
@pytest.fixture(scope="module")
def mini() -> tuple[Project, Graph]:
    project = Project.at(REPO, kg=MINI_HOME)
    return project, load_knowledge(project)


@needs_node
def test_hl7_fhirpath_agrees_with_recommend_on_the_mini_guideline(
        mini: tuple[Project, Graph], tmp_path: Path) -> None:
    """The mini guideline's adults are 18 or older in whole years at the assessment date (definitions.ttl,
    mini:AdultAge). Its FHIR example m02 (born 1980-06-15, assessed 2026-03-02: 45) and 150 generated cases,
    whose birth dates the cohort profile spreads around the threshold, agree with `cohort evaluate`; fhir-m02's
    statuses are also those of its hand-written expected file."""
    project, knowledge = mini
    factored = compile_factored(knowledge, project_rules(project, "the mini engine test"))
    assert any(v.name == "Adult" for v in factored.variables)  # the age population is compiled, not refused
    cohort = generate(tmp_path / "mini.ndjson", 150, 3, MINI_HOME)
    guideline = str(guideline_iri(knowledge))
    want = evaluate_reference(cohort, tmp_path / "mini-ref", guideline, MINI_HOME)
    example = MINI_HOME / "cases" / "fhir-m02-sprain-rules-positive.fhir.json"
    got = fhirpath_js(factored, [cohort, example])
    compared, diffs = differences(got, want)
    assert not diffs, "\n".join(diffs)
    assert len(want) >= 130 and compared == len(want) * len(factored.statements)
    # both sides of the threshold occur among the valid generated cases (else the test proves little)
    scope = {case: statuses[guideline] for case, statuses in want.items()}
    assert {"applicable", "not-applicable"} <= set(scope.values())
    expected = json.loads((MINI_HOME / "cases" / "fhir-m02-sprain-rules-positive.expected.json").read_text())
    for name, status in expected["statuses"].items():
        iri = next(k for k in factored.statements if str(k).rsplit("/", 1)[-1] == name)
        assert got[example.name][str(iri)] == status, name


def test_the_mini_age_threshold_comes_from_the_graph(mini: tuple[Project, Graph]) -> None:
    """mini:AdultAge's facet (18) is the one place of the number: the compiled Adult variable compares the age
    with it, and no other number of the definition appears."""
    project, knowledge = mini
    factored = compile_factored(knowledge, project_rules(project, "the mini engine test"))
    adult = next(v for v in factored.variables if v.name == "Adult")
    assert ">= 18" in adult.expression
    assert URIRef("https://w3id.org/guideline-kg/test/mini/L3") in factored.statements
