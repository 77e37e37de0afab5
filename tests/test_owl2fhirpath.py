"""The populations compiled to FHIRPath (compile.owl2fhirpath), run by the engines of the field: HL7's ``fhirpath``
(npm, through tests/js/run_engines.js) and ``fhirpathpy``, in the factored form the export writes (shared parts as
variables, evaluated in order as the FHIR ``variable`` extension defines). Each engine's applicable / not
applicable / undetermined must equal ``recommend`` (the reference) for every statement of every FHIR example, and
the hand-written expected results (written by reading the source, docs/derivation.md). Every difference is printed
by statement and case. The generated cases (2,000) are in tests/test_engine_agreement.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

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
    lit,
    nav,
    statements_of,
    where,
    whole_years,
)
from guideline_kg.compile.owl2fhirpath import (
    RESERVED,
    Factored,
    compile_factored,
    compile_population,
    compile_statements,
    to_fhirpath,
)
from guideline_kg.compile.owl2sparql import UnsupportedExpression
from guideline_kg.core.dates import months_between
from guideline_kg.core.project import Project
from guideline_kg.knowledge.graph import guideline_iri
from test_engine_agreement import Fhirpathpy

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
def factored(knowledge: Graph, rules: MappingRules) -> Factored:
    return compile_factored(knowledge, rules)


@pytest.fixture(scope="module")
def engine(factored: Factored) -> Fhirpathpy:
    """fhirpathpy with every variable and statement expression parsed once, shared by this module's tests."""
    return Fhirpathpy(factored)


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


@needs_node
def test_hl7_fhirpath_equals_recommend_on_every_fhir_example(factored: Factored,
                                                               recommended: dict[str, dict[str, str]]) -> None:
    out = run_node({"engine": "fhirpath", "files": [str(p) for p in CASES],
                    "variables": [[v.name, v.expression] for v in factored.variables],
                    "expressions": {str(iri): text for iri, text in factored.statements.items()}})
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


@pytest.mark.slow  # parses every variable (about 5 s)
def test_fhirpathpy_equals_recommend_on_every_fhir_example(engine: Fhirpathpy,
                                                           recommended: dict[str, dict[str, str]]) -> None:
    got = {path.name.replace(".fhir.json", ""): engine(json.loads(path.read_text())) for path in CASES}
    diffs = differences(got, recommended)
    assert not diffs, "\n".join(diffs)


def test_fhirpathpy_on_one_case_l19(factored: Factored) -> None:
    """c06 (line 19): 6 weeks of extended-release opioids, 10 % relief: L19 applies; c01 has no opioid trial
    recorded: undetermined (expected files written by hand). Only L19's own variables are evaluated."""
    l19 = URIRef("https://w3id.org/guideline-kg/plbp/L19")
    variables = [(v.name, fhirpathpy.compile(v.expression, options={"returnRawData": True}))
                 for v in factored.variables_of(l19)]
    condition = fhirpathpy.compile(factored.statements[l19])

    def run(case: str) -> list:
        bundle = json.loads((REPO / f"guidelines/plbp/cases/{case}.fhir.json").read_text())
        env: dict[str, object] = {}
        for name, fn in variables:
            env[name] = fn(bundle, env)
        return condition(bundle, env)

    assert run("fhir-c06-opioid-no-relief") == [True]
    assert run("fhir-c01-first-visit") == []


@pytest.mark.slow  # parses every variable (shared with the examples test through `engine`)
def test_a_bundle_without_the_deciding_data_is_undetermined(engine: Fhirpathpy) -> None:
    """Open world: a Bundle with only the Patient proves nothing, so every statement is undetermined (empty)."""
    bundle = {"resourceType": "Bundle", "type": "collection", "timestamp": "2026-03-02T00:00:00Z",
              "entry": [{"resource": {"resourceType": "Patient", "id": "p"}}]}
    assert set(engine(bundle).values()) == {"undetermined"}


# --- the factored form --------------------------------------------------------------------------------------------
def test_the_factored_form_is_variables_in_order_and_short_conditions(factored: Factored,
                                                                       compiled: dict[URIRef, str]) -> None:
    """Every variable name is a FHIRPath identifier, none is a name the environment already has (%context,
    %resource, %ucum, ...), each variable reads only earlier ones, and each statement's expression is short; the
    whole is a small part of the written-out form (which repeats the scope and the code lists in every
    statement)."""
    names = [v.name for v in factored.variables]
    assert len(names) == len(set(names))
    seen: set[str] = set()
    for v in factored.variables:
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v.name) and v.name not in RESERVED, v.name
        used = set(re.findall(r"%([A-Za-z_][A-Za-z0-9_]*)", v.expression)) - {"context"}
        assert used == set(v.uses) and used <= seen, v.name
        seen.add(v.name)
    assert set(factored.statements) == set(compiled)
    for iri, text in factored.statements.items():
        assert len(text) < 1000, iri
        read = set(re.findall(r"%([A-Za-z_][A-Za-z0-9_]*)", text))
        assert read <= {v.name for v in factored.variables_of(str(iri))}, iri
    assert factored.size() * 10 < sum(len(t) for t in compiled.values())
    # the conditions are variables named by their OWL class (L30's, as derive lists them)
    l30 = {c.met for c in factored.conditions[URIRef("https://w3id.org/guideline-kg/plbp/L30")]}
    assert {"%NerveEntrapmentConfirmed", "%ConservativeManagementFailed"} <= l30


VARIABLES = [["observations", "%context.entry.where(resource.resourceType = 'Observation')"],
             ["codes", "' http://loinc.org|1 http://loinc.org|2 '"],
             ["known", "%observations.where(%codes.contains(' ' & (resource.code.coding.system & '|' & "
                       "resource.code.coding.code) & ' '))"],
             ["any", "%known.exists()"],
             ["ids", "%known.resource.id"],
             ["first", "%known.first().resource.valueQuantity.value"]]
PROBE = {"resourceType": "Bundle", "id": "probe", "type": "collection", "entry": [
    {"resource": {"resourceType": "Patient", "id": "p"}},
    {"resource": {"resourceType": "Observation", "id": "o1", "code": {"coding": [{"system": "http://loinc.org",
                                                                                  "code": "1"}]},
                  "valueQuantity": {"value": 7}}},
    {"resource": {"resourceType": "Observation", "id": "o2", "code": {"coding": [{"system": "http://loinc.org",
                                                                                  "code": "9"}]}}},
    {"resource": {"resourceType": "Observation", "id": "o3", "code": {"coding": [{"system": "http://loinc.org",
                                                                                  "code": "2"}]}}}]}
#: Each read of a variable of another type, with the answer worked out by hand from PROBE: o1 and o3 are known
PROBE_EXPRESSIONS = {"entries": "%known.count() = 2 and %known.resource.id contains 'o3'",
                     "navigate": "%known.where(resource.id = 'o1').resource.valueQuantity.value = 7",
                     "boolean": "%any and %any.not().not()",
                     "strings": "%ids.count() = 2 and %ids contains 'o1' and (%ids contains 'o2').not()",
                     "string": "%codes.contains('|2 ') and %codes.length() = 39",
                     "number": "%first = 7 and %first + 1 = 8",
                     "empty": "%observations.where(resource.id = 'none').exists().not()"}


@needs_node
@pytest.mark.parametrize("resolve", [True, False])
def test_hl7_fhirpath_passes_variables_of_every_kind_back_in(tmp_path: Path, resolve: bool) -> None:
    """The harness hands each variable's value (Bundle entries as JSON objects, a boolean, strings, a number) back
    to fhirpath.js as the environment of the next: with resolveInternalTypes (plain JSON, re-wrapped through the
    engine's hidden __path__) and without (the engine's own nodes)."""
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps(PROBE))
    out = run_node({"engine": "fhirpath", "files": [str(probe)], "variables": VARIABLES,
                    "resolveInternalTypes": resolve, "expressions": PROBE_EXPRESSIONS})
    assert out["cases"][0]["results"] == dict.fromkeys(PROBE_EXPRESSIONS, True)


def test_fhirpathpy_passes_variables_of_every_kind_back_in() -> None:
    """The same probe with fhirpathpy: its own nodes (``returnRawData``) handed back as the context."""
    env: dict[str, object] = {}
    for name, text in VARIABLES:
        env[name] = fhirpathpy.compile(text, options={"returnRawData": True})(PROBE, env)
    assert {k: fhirpathpy.evaluate(PROBE, text, env) for k, text in PROBE_EXPRESSIONS.items()} == {
        k: [True] for k in PROBE_EXPRESSIONS}


@pytest.mark.parametrize(("born", "assessed"), [
    ("2008-03-02", "2026-03-02"), ("2008-03-03", "2026-03-02"), ("2008-02-29", "2026-02-28"),
    ("2008-02-29", "2026-03-01"), ("1980-06-15", "2026-03-02"), ("2026-03-01", "2026-03-02"),
    ("2027-01-01", "2026-03-02"), ("2025-03-03", "2026-03-02")])
def test_whole_years_is_the_reader_s_age(born: str, assessed: str) -> None:
    """The compiled age (the mini guideline's population) is ``months_between(born, assessed) // 12`` as
    ``cases.fhir_in`` computes it: the birthday itself counts, a day before does not, 29 February, a birth date
    after the assessment date (a floor, not a truncation)."""
    want = int(months_between(date.fromisoformat(born), date.fromisoformat(assessed)) // 12)
    text = to_fhirpath(whole_years(lit(born), lit(assessed)))
    assert fhirpathpy.evaluate({}, text, {}) == [want]


def test_to_fhirpath_of_a_small_tree() -> None:
    """The translation table of docs/compilers.md, on a tree written by hand."""
    tree = iif(exists(where(entries(["Observation"]), in_(nav(THIS, "resource", "status"), ["final"]))), TRUE, FALSE)
    assert to_fhirpath(tree) == ("iif(%context.entry.where(resource.resourceType in ('Observation'))"
                                 ".where(' final '.contains(' ' & resource.status & ' ')).exists(), true, false)")
