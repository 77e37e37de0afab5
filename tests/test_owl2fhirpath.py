"""The populations compiled to FHIRPath (compile.owl2fhirpath), run by the engines of the field: HL7's ``fhirpath``
(npm, through tests/js/run_engines.js) and ``fhirpathpy``. Each engine's applicable / not applicable / undetermined
must equal ``recommend`` (the reference) for every statement of every case, and the hand-written expected results
of the FHIR example cases (written by reading the source, docs/derivation.md). Every difference is printed by
statement and case."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import fhirpathpy
import pytest
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.namespace import OWL, XSD

from guideline_kg.cases.fhir_in import MappingRules, project_rules
from guideline_kg.compile.applicability import (
    FALSE,
    THIS,
    TRUE,
    TreeBuilder,
    entries,
    exists,
    iif,
    in_,
    nav,
    statements_of,
    where,
)
from guideline_kg.compile.owl2fhirpath import compile_population, compile_statements, to_fhirpath
from guideline_kg.compile.owl2sparql import UnsupportedExpression
from guideline_kg.core.project import Project
from guideline_kg.knowledge.graph import guideline_iri

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "tests" / "js" / "run_engines.js"
CASES = sorted((REPO / "guidelines" / "plbp" / "cases").glob("fhir-*.fhir.json"))
CLI = [sys.executable, "-m", "guideline_kg.cli.main"]
STATUS = {True: "applicable", False: "not-applicable", None: "undetermined"}
SCOPE = {"in": "applicable", "out": "not-applicable", "undetermined": "undetermined"}


def engines_installed() -> bool:
    return shutil.which("node") is not None and (REPO / "node_modules" / "fhirpath").is_dir()


needs_node = pytest.mark.skipif(not engines_installed(), reason="the npm engines are not installed (run `npm ci`)")


@pytest.fixture(scope="module")
def rules(project: Project) -> MappingRules:
    return project_rules(project, "compiling applicability")


@pytest.fixture(scope="module")
def compiled(knowledge: Graph, rules: MappingRules) -> dict[URIRef, str]:
    return compile_statements(knowledge, rules)


@pytest.fixture(scope="module")
def parsed(compiled: dict[URIRef, str]) -> dict[str, object]:
    """Each distinct compiled expression parsed once by fhirpathpy (25-93 KB each: seconds apiece), shared by the
    fhirpathpy tests of this module."""
    return {text: fhirpathpy.compile(text) for text in set(compiled.values())}


def run_node(request: dict, timeout: float = 1800) -> dict:
    """The node runner: JSON in, JSON out."""
    done = subprocess.run(["node", str(RUNNER)], input=json.dumps(request), capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def status_of(value: object) -> str:
    return STATUS[value] if value is None or isinstance(value, bool) else f"unexpected {value!r}"


def reference(paths: list[Path], guideline: str) -> dict[str, dict[str, str]]:
    """case -> statement IRI -> status, from `recommend --format json` (the guideline's scope as its status)."""
    done = subprocess.run([*CLI, "recommend", "--format", "json", *map(str, paths)], capture_output=True, text=True,
                          cwd=REPO, check=False)
    assert done.returncode in (0, 1), done.stderr
    return {c["case"]: {**{r["id"]: r["status"] for r in c["recommendations"]}, guideline: SCOPE[c["scope"]["status"]]}
            for c in json.loads(done.stdout)["cases"]}


def differences(got: dict[str, dict[str, str]], want: dict[str, dict[str, str]]) -> list[str]:
    out = []
    for case, statuses in sorted(want.items()):
        for statement, status in sorted(statuses.items()):
            engine = got.get(case, {}).get(statement, "no result")
            if engine != status:
                out.append(f"{case} {statement}: engine {engine}, recommend {status}")
    return out


# --- the compiler itself -------------------------------------------------------------------------------------------
def test_every_statement_with_a_population_is_compiled(knowledge: Graph, compiled: dict[URIRef, str]) -> None:
    with_population = {s for s, _, _ in statements_of(knowledge)}
    assert with_population == set(compiled)
    assert len(compiled) >= 22  # 22 statements with a population (docs/derivation.md) and the guideline's scope


def test_the_conditions_are_those_derive_reads(knowledge: Graph) -> None:
    """L30 (line 30): the guideline population (two conditions) and its own two conditions, as the derivation
    lists them (definitions.ttl, plbp:Population-L30)."""
    plbp = "https://w3id.org/guideline-kg/plbp/"
    by_statement = {str(s): [str(c) for c, _ in conds] for s, _, conds in statements_of(knowledge)}
    assert sorted(by_statement[plbp + "L30"]) == sorted(plbp + c for c in (
        "ChronicPersistentPain", "IndexSurgeryLaminectomyOrForaminotomy", "ConservativeManagementFailed",
        "NerveEntrapmentConfirmed"))


def test_compiled_fhirpath_names_no_ontology_term(compiled: dict[URIRef, str]) -> None:
    """The expressions read FHIR data only: codes and elements from the mapping, never an OWL IRI."""
    for text in compiled.values():
        assert "w3id.org/guideline-kg/ontology" not in text and "/plbp/" not in text


def test_thresholds_come_from_the_named_datatypes(knowledge: Graph, rules: MappingRules) -> None:
    """Changing plbp:OpioidTrialLength (4 weeks, definitions.ttl) changes the compiled L19: the number lives in the
    graph, not in the compiler."""
    plbp = "https://w3id.org/guideline-kg/plbp/"
    before = compile_population(knowledge, rules, URIRef(plbp + "L19"))
    changed = Graph()
    for triple in knowledge:
        changed.add(triple)
    old = Literal("4.0", datatype=XSD.decimal)
    (facet,) = [s for s, _, o in changed.triples((None, XSD.minInclusive, None)) if o == old]
    changed.set((facet, XSD.minInclusive, Literal("6.0", datatype=XSD.decimal)))
    after = compile_population(changed, rules, URIRef(plbp + "L19"))
    assert before != after
    assert "2765" in before and "4165" in after  # 3.95 and 5.95 weeks (rounded half up to 4.0 / 6.0), in days x 100


def test_an_unsupported_expression_is_refused_with_its_statement(knowledge: Graph, rules: MappingRules) -> None:
    """A population with a class complement cannot be decided from facts alone: refused, named, not dropped."""
    changed = Graph()
    for triple in knowledge:
        changed.add(triple)
    plbp = "https://w3id.org/guideline-kg/plbp/"
    complement = BNode()
    changed.add((complement, OWL.complementOf, URIRef(plbp + "NoOpioidMonitoringPlan")))
    changed.set((URIRef(plbp + "OpioidMonitoringPlanInPlace"), OWL.equivalentClass, complement))
    with pytest.raises(UnsupportedExpression, match="L17"):
        TreeBuilder(changed, rules).statements()


# --- the engines on the FHIR example cases ------------------------------------------------------------------------
def expected(path: Path) -> dict[str, str]:
    return json.loads(path.with_name(path.name.replace(".fhir.json", ".expected.json")).read_text())["statuses"]


@pytest.fixture(scope="module")
def recommended(knowledge: Graph, project: Project) -> dict[str, dict[str, str]]:
    return reference(CASES, str(guideline_iri(knowledge)))


def local(iri: URIRef) -> str:
    return str(iri).rsplit("/", 1)[-1]


@pytest.mark.slow  # HL7's engine parses ~0.6 MB of FHIRPath (about 30 s on a loaded CI machine)
@needs_node
def test_hl7_fhirpath_equals_recommend_on_every_fhir_example(compiled: dict[URIRef, str],
                                                               recommended: dict[str, dict[str, str]]) -> None:
    names = {str(iri): text for iri, text in compiled.items()}
    out = run_node({"engine": "fhirpath", "expressions": names, "files": [str(p) for p in CASES]})
    got = {Path(c["file"]).name.replace(".fhir.json", ""): {k: status_of(v) for k, v in c["results"].items()}
           for c in out["cases"]}
    diffs = differences(got, recommended)
    assert not diffs, "\n".join(diffs)
    assert len(recommended) == len(CASES)
    # and the hand-written expectations (read from the source, not from the code)
    for path in CASES:
        case = path.name.replace(".fhir.json", "")
        for name, status in expected(path).items():
            assert got[case]["https://w3id.org/guideline-kg/plbp/" + name] == status, (case, name)


@pytest.mark.slow
def test_fhirpathpy_equals_recommend_on_every_fhir_example(compiled: dict[URIRef, str], parsed: dict[str, Any],
                                                           recommended: dict[str, dict[str, str]]) -> None:
    got: dict[str, dict[str, str]] = {}
    for path in CASES:
        bundle = json.loads(path.read_text())
        case = path.name.replace(".fhir.json", "")
        got[case] = {str(iri): status_of(one(parsed[text](bundle))) for iri, text in compiled.items()}
    diffs = differences(got, recommended)
    assert not diffs, "\n".join(diffs)


def one(values: list) -> object:
    if not values:
        return None
    return values[0] if len(values) == 1 and isinstance(values[0], bool) else values


def test_fhirpathpy_on_one_case_l19(knowledge: Graph, rules: MappingRules) -> None:
    """c06 (line 19): 6 weeks of extended-release opioids, 10 % relief: L19 applies; c01 has no opioid trial
    recorded: undetermined (expected files written by hand)."""
    text = compile_population(knowledge, rules, URIRef("https://w3id.org/guideline-kg/plbp/L19"))
    c06 = json.loads((REPO / "guidelines/plbp/cases/fhir-c06-opioid-no-relief.fhir.json").read_text())
    c01 = json.loads((REPO / "guidelines/plbp/cases/fhir-c01-first-visit.fhir.json").read_text())
    assert fhirpathpy.evaluate(c06, text, {}) == [True]
    assert fhirpathpy.evaluate(c01, text, {}) == []


@pytest.mark.slow  # parses every compiled expression (shared with the examples test through `parsed`)
def test_a_bundle_without_the_deciding_data_is_undetermined(compiled: dict[URIRef, str],
                                                            parsed: dict[str, Any]) -> None:
    """Open world: a Bundle with only the Patient proves nothing, so every statement is undetermined (empty)."""
    bundle = {"resourceType": "Bundle", "type": "collection", "timestamp": "2026-03-02T00:00:00Z",
              "entry": [{"resource": {"resourceType": "Patient", "id": "p"}}]}
    for iri, text in compiled.items():
        assert parsed[text](bundle) == [], iri


# --- generated cases ----------------------------------------------------------------------------------------------
GENERATED = int(os.environ.get("GKG_COMPILED_CASES", "60"))


@pytest.mark.slow
@needs_node
def test_hl7_fhirpath_equals_cohort_evaluate_on_generated_cases(tmp_path: Path, compiled: dict[URIRef, str],
                                                                knowledge: Graph) -> None:
    """GKG_COMPILED_CASES generated FHIR cases (default 60; benchmarks/bench_compiled.py runs 2,000): every
    statement of every valid case, HL7's engine against `cohort evaluate` (the fast path)."""
    cohort = tmp_path / "cohort.ndjson"
    subprocess.run([*CLI, "cohort", "generate", "--format", "fhir-ndjson", "--n", str(GENERATED), "--seed", "15",
                    "--out", str(cohort)], cwd=REPO, check=True, capture_output=True)
    want = cohort_reference(cohort, tmp_path / "ref.jsonl", str(guideline_iri(knowledge)))
    out = run_node({"engine": "fhirpath", "expressions": {str(k): v for k, v in compiled.items()},
                    "files": [str(cohort)]})
    got = {c["id"]: {k: status_of(v) for k, v in c["results"].items()} for c in out["cases"]}
    diffs = differences(got, want)
    assert not diffs, "\n".join(diffs[:50])
    assert len(want) >= GENERATED * 0.9


def cohort_reference(cohort: Path, out: Path, guideline: str) -> dict[str, dict[str, str]]:
    """case -> statement -> status of the valid cases, from `cohort evaluate`."""
    done = subprocess.run([*CLI, "cohort", "evaluate", str(cohort), "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert done.returncode in (0, 1), done.stderr
    want = {}
    for line in out.read_text().splitlines():
        c = json.loads(line)
        if c.get("valid"):
            want[c["case"]] = {**{r["id"]: r["status"] for r in c["recommendations"]},
                               guideline: SCOPE[c["scope"]["status"]]}
    return want


def test_to_fhirpath_of_a_small_tree() -> None:
    """The translation table of docs/compilers.md, on a tree written by hand."""
    tree = iif(exists(where(entries(["Observation"]), in_(nav(THIS, "resource", "status"), ["final"]))), TRUE, FALSE)
    assert to_fhirpath(tree) == ("iif(%context.entry.where(resource.resourceType in ('Observation'))"
                                 ".where(' final '.contains(' ' & resource.status & ' ')).exists(), true, false)")
