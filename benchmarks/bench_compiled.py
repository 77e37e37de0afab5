"""Benchmark and agreement: the compiled applicability (FHIRPath) run by the field's engines beside `recommend`.

Generates N FHIR cases (`cohort generate --format fhir-ndjson`), takes the reference statuses from `cohort evaluate`
(the fast path, the same as `recommend`), and runs the factored FHIRPath the export writes (shared parts as FHIR
``variable`` extensions, evaluated in order on each Bundle, then each statement's short expression) with HL7's
`fhirpath` (npm, one node process for all cases, tests/js/run_engines.js) and with `fhirpathpy` (in this process,
each text parsed once; on the first --py-n cases). Prints:

- the compile time and the size of the FHIRPath, written out per statement (before) and factored (after);
- each engine's time per case beside the reference's (wall and, for fhirpathpy, CPU: the machine may be shared);
- `$apply` (outputs.apply.Applier): building the pathway, the first call (parses every text) and later calls;
- the agreement per engine (cases x statements), every difference by statement and case.

Run: `.venv/bin/python benchmarks/bench_compiled.py [--n 2000] [--seed 15] [--py-n 2000]` (needs `npm ci`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import fhirpathpy  # noqa: E402

from guideline_kg.cases.fhir_in import project_rules  # noqa: E402
from guideline_kg.compile.owl2fhirpath import compile_factored, compile_statements  # noqa: E402
from guideline_kg.core.project import Project  # noqa: E402
from guideline_kg.knowledge.graph import guideline_iri, load_knowledge  # noqa: E402
from guideline_kg.outputs.apply import Applier, read_parameters  # noqa: E402
from guideline_kg.outputs.fhir_cpg import compile_cql, library_resource, read_pathway  # noqa: E402
from guideline_kg.store.stores import EmbeddedStore  # noqa: E402

CLI = ROOT / ".venv" / "bin" / "guideline-kg"
RUNNER = ROOT / "tests" / "js" / "run_engines.js"
STATUS = {True: "applicable", False: "not-applicable", None: "undetermined"}
SCOPE = {"in": "applicable", "out": "not-applicable", "undetermined": "undetermined"}


def status_of(values: Any) -> str:
    if isinstance(values, list):
        values = None if not values else values[0] if len(values) == 1 and isinstance(values[0], bool) else values
    return STATUS[values] if values is None or isinstance(values, bool) else f"unexpected {values!r}"


def compare(name: str, got: dict[str, dict[str, str]], want: dict[str, dict[str, str]]) -> tuple[int, list[str]]:
    compared, diffs = 0, []
    for case, statuses in sorted(want.items()):
        if case not in got:
            continue
        for statement, status in sorted(statuses.items()):
            compared += 1
            engine = got[case].get(statement, "no result")
            if engine != status:
                diffs.append(f"  {name}: {case} {statement.rsplit('/', 1)[-1]}: engine {engine}, recommend {status}")
    return compared, diffs


def row(step: str, seconds: float, cases: int | None = None, cpu: float | None = None) -> None:
    per = f"{1000 * seconds / cases:>12.1f}" if cases else f"{'':>12}"
    cpu_per = f"{1000 * cpu / cases:>12.1f}" if cpu is not None and cases else f"{'':>12}"
    print(f"{step:<48}{seconds:>10.2f}{per}{cpu_per}")


def apply_times(project: Project, knowledge: Any, bundles: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """$apply on the pathway: building the Applier, the first call, then later calls (FHIR example cases)."""
    out = []
    start = time.perf_counter()
    applier = Applier(knowledge, project)
    out.append(("$apply: pathway read and compiled", time.perf_counter() - start))
    for i, data in enumerate(bundles):
        subject = next(f"Patient/{e['resource']['id']}" for e in data["entry"]
                       if e["resource"]["resourceType"] == "Patient")
        body = {"resourceType": "Parameters", "parameter": [{"name": "subject", "valueString": subject},
                                                           {"name": "data", "resource": data}]}
        start = time.perf_counter()
        applier.apply(read_parameters(body, f"{applier.pathway.prefix}-guideline"))
        out.append((f"$apply: call {i + 1} ({data.get('id')})", time.perf_counter() - start))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--py-n", type=int, default=2000, help="cases fhirpathpy evaluates (default 2000)")
    parser.add_argument("--cohort", type=Path, help="an existing FHIR NDJSON cohort instead of generating one")
    parser.add_argument("--no-apply", action="store_true", help="skip the $apply timings")
    args = parser.parse_args()

    project = Project.at(ROOT)
    knowledge = load_knowledge(project)
    rules = project_rules(project, "the benchmark")
    start = time.perf_counter()
    factored = compile_factored(knowledge, rules)
    compile_s = time.perf_counter() - start
    inline = {str(k): v for k, v in compile_statements(knowledge, rules).items()}
    statements = {str(k): v for k, v in factored.statements.items()}
    guideline = str(guideline_iri(knowledge))

    with tempfile.TemporaryDirectory() as tmp:
        cohort = args.cohort or Path(tmp) / "cohort.ndjson"
        if args.cohort is None:
            subprocess.run([str(CLI), "cohort", "generate", "--format", "fhir-ndjson", "--n", str(args.n),
                            "--seed", str(args.seed), "--out", str(cohort)], check=True, capture_output=True)
        out = Path(tmp) / "ref.jsonl"
        start = time.perf_counter()
        subprocess.run([str(CLI), "cohort", "evaluate", str(cohort), "--out", str(out)], capture_output=True,
                       check=False)  # exit 1: some cases invalid (they are left out of the comparison)
        ref_s = time.perf_counter() - start
        want: dict[str, dict[str, str]] = {}
        for line in out.read_text().splitlines():
            c = json.loads(line)
            if c.get("valid"):
                want[c["case"]] = {**{r["id"]: r["status"] for r in c["recommendations"]},
                                   guideline: SCOPE[c["scope"]["status"]]}
        bundles = [json.loads(line) for line in cohort.read_text().splitlines() if line.strip()]

        start = time.perf_counter()
        done = subprocess.run(["node", str(RUNNER)], input=json.dumps(
            {"engine": "fhirpath", "expressions": statements, "files": [str(cohort)],
             "variables": [[v.name, v.expression] for v in factored.variables]}),
            capture_output=True, text=True, check=True)
        node_s = time.perf_counter() - start
        result = json.loads(done.stdout)
        got_js = {c["id"]: {k: status_of(v) for k, v in c["results"].items()} for c in result["cases"]}

        # cql-execution + cql-exec-fhir: the ELM of the exported Library (compile.owl2cql), one node process
        pathway = read_pathway(EmbeddedStore.from_graph(knowledge), project)
        start = time.perf_counter()
        why = compile_cql(pathway, knowledge, project)
        cql_compile_s = time.perf_counter() - start
        if why is not None or pathway.cql is None:
            raise SystemExit(f"no CQL library: {why}")
        library = Path(tmp) / "Library.json"
        library.write_text(json.dumps(library_resource(pathway)))
        start = time.perf_counter()
        done = subprocess.run(["node", str(RUNNER)], input=json.dumps(
            {"engine": "cql", "library": str(library), "files": [str(cohort)]}),
            capture_output=True, text=True, check=True)
        cql_s = time.perf_counter() - start
        cql_result = json.loads(done.stdout)
        iri = dict(zip(pathway.cql.names, pathway.cql.statements, strict=True))
        got_cql = {c["id"]: {iri[k]: status_of(v) for k, v in c["results"].items() if k in iri}
                   for c in cql_result["cases"]}
        cql_sizes = (len(pathway.cql.cql), len(json.dumps(pathway.cql.elm, separators=(",", ":"))))

    start, cpu = time.perf_counter(), time.process_time()
    variables = [(v.name, fhirpathpy.compile(v.expression, options={"returnRawData": True}))
                 for v in factored.variables]
    expressions = {text: fhirpathpy.compile(text) for text in set(statements.values())}
    parse_s, parse_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    got_py: dict[str, dict[str, str]] = {}
    for bundle in bundles[:args.py_n]:
        env: dict[str, Any] = {}
        for name, fn in variables:
            env[name] = fn(bundle, env)
        values = {text: status_of(fn(bundle, env)) for text, fn in expressions.items()}
        got_py[bundle["id"]] = {k: values[t] for k, t in statements.items()}
    py_s, py_cpu = time.perf_counter() - start, time.process_time() - cpu

    applied = [] if args.no_apply else apply_times(project, knowledge, [
        json.loads(p.read_text()) for p in sorted((ROOT / "guidelines/plbp/cases").glob("fhir-*.fhir.json"))[:4]])

    n_js, d_js = compare("fhirpath.js", got_js, want)
    n_py, d_py = compare("fhirpathpy", got_py, want)
    before, after = sum(map(len, inline.values())), factored.size()
    print(f"{len(bundles)} generated FHIR cases, {len(want)} valid; {len(statements)} statements")
    print(f"FHIRPath written out per statement: {before / 1024:,.0f} KiB ({len(set(inline.values()))} distinct, "
          f"{min(map(len, inline.values())) / 1024:.0f}-{max(map(len, inline.values())) / 1024:.0f} KiB each)")
    print(f"factored: {after / 1024:,.0f} KiB = {len(factored.variables)} variables "
          f"({sum(len(v.expression) for v in factored.variables) / 1024:.0f} KiB, the largest "
          f"{max(len(v.expression) for v in factored.variables) / 1024:.1f} KiB) + {len(statements)} expressions "
          f"({min(map(len, statements.values()))}-{max(map(len, statements.values()))} characters)")
    print(f"{'step':<48}{'wall s':>10}{'ms / case':>12}{'CPU ms/case':>12}")
    row("compile (OWL + mapping -> factored FHIRPath)", compile_s)
    row("recommend (cohort evaluate, fast path)", ref_s, len(bundles))
    row("HL7 fhirpath (node, incl. parse)", node_s, len(bundles))
    row("HL7 fhirpath (evaluation only)", result["evaluate_ms"] / 1000, len(bundles))
    row("fhirpathpy: parse every text once", parse_s, None, None)
    print(f"{'':<48}{'':>10}{'':>12}{parse_cpu:>11.2f}s")
    row(f"fhirpathpy ({len(got_py)} cases, one process)", py_s, len(got_py), py_cpu)
    for step, seconds in applied:
        row(step, seconds)
    row("CQL compile (OWL + mapping -> CQL + ELM)", cql_compile_s)
    row("cql-execution (node, incl. load)", cql_s, len(bundles))
    row("cql-execution (evaluation only)", cql_result["evaluate_ms"] / 1000, len(bundles))
    print(f"agreement: fhirpath.js {n_js - len(d_js)}/{n_js} (cases x statements), "
          f"fhirpathpy {n_py - len(d_py)}/{n_py}")
    n_cql, d_cql = compare("cql-execution", got_cql, want)
    print(f"agreement: cql-execution {n_cql - len(d_cql)}/{n_cql} (CQL {cql_sizes[0] / 1024:,.0f} KiB, "
          f"ELM {cql_sizes[1] / 1024:,.0f} KiB)")
    for line in d_cql[:100]:
        print(line)
    for line in (d_js + d_py)[:100]:
        print(line)


if __name__ == "__main__":
    main()
