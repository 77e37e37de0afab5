"""Benchmark and agreement: the compiled applicability (FHIRPath) run by the field's engines beside `recommend`.

Generates N FHIR cases (`cohort generate --format fhir-ndjson`), takes the reference statuses from `cohort evaluate`
(the fast path, the same as `recommend`), evaluates the compiled FHIRPath with HL7's `fhirpath` (npm, one node
process for all cases, tests/js/run_engines.js) and with `fhirpathpy` (on the first --py-n cases: it is slower), and
prints the compile time, each engine's time per case beside the reference's, and the agreement per engine
(cases x statements, differences listed by statement and case).

Run: `.venv/bin/python benchmarks/bench_compiled.py [--n 2000] [--seed 15] [--py-n 100]` (needs `npm ci`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import fhirpathpy  # noqa: E402

from guideline_kg.cases.fhir_in import project_rules  # noqa: E402
from guideline_kg.compile.owl2fhirpath import compile_statements  # noqa: E402
from guideline_kg.core.project import Project  # noqa: E402
from guideline_kg.knowledge.graph import guideline_iri, load_knowledge  # noqa: E402

CLI = ROOT / ".venv" / "bin" / "guideline-kg"
RUNNER = ROOT / "tests" / "js" / "run_engines.js"
STATUS = {True: "applicable", False: "not-applicable", None: "undetermined"}
SCOPE = {"in": "applicable", "out": "not-applicable", "undetermined": "undetermined"}


def status_of(value: object) -> str:
    return STATUS[value] if value is None or isinstance(value, bool) else f"unexpected {value!r}"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--py-n", type=int, default=100, help="cases fhirpathpy evaluates (default 100)")
    parser.add_argument("--cohort", type=Path, help="an existing FHIR NDJSON cohort instead of generating one")
    args = parser.parse_args()

    project = Project.at(ROOT)
    knowledge = load_knowledge(project)
    rules = project_rules(project, "the benchmark")
    start = time.perf_counter()
    compiled = {str(k): v for k, v in compile_statements(knowledge, rules).items()}
    compile_s = time.perf_counter() - start
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
            {"engine": "fhirpath", "expressions": compiled, "files": [str(cohort)]}), capture_output=True, text=True,
            check=True)
        node_s = time.perf_counter() - start
        result = json.loads(done.stdout)
        got_js = {c["id"]: {k: status_of(v) for k, v in c["results"].items()} for c in result["cases"]}

        start = time.perf_counter()
        got_py: dict[str, dict[str, str]] = {}
        distinct = {text: None for text in compiled.values()}
        for bundle in bundles[:args.py_n]:
            values = {text: fhirpathpy.evaluate(bundle, text, {}) for text in distinct}
            got_py[bundle["id"]] = {k: status_of(None if not values[t] else values[t][0] if len(values[t]) == 1
                                                 else values[t]) for k, t in compiled.items()}
        py_s = time.perf_counter() - start

    n_js, d_js = compare("fhirpath.js", got_js, want)
    n_py, d_py = compare("fhirpathpy", got_py, want)
    print(f"{len(bundles)} generated FHIR cases, {len(want)} valid; {len(compiled)} statements "
          f"({len(set(compiled.values()))} distinct expressions, {sum(map(len, compiled.values())) // 1024} KiB)")
    print(f"{'step':<44}{'total s':>10}{'ms / case':>12}")
    print(f"{'compile (OWL + mapping -> FHIRPath)':<44}{compile_s:>10.2f}{'':>12}")
    print(f"{'recommend (cohort evaluate, fast path)':<44}{ref_s:>10.2f}{1000 * ref_s / len(bundles):>12.1f}")
    print(f"{'HL7 fhirpath (node, incl. parse)':<44}{node_s:>10.2f}{1000 * node_s / len(bundles):>12.1f}")
    print(f"{'HL7 fhirpath (evaluation only)':<44}{result['evaluate_ms'] / 1000:>10.2f}"
          f"{result['evaluate_ms'] / len(bundles):>12.1f}")
    print(f"{f'fhirpathpy ({len(got_py)} cases)':<44}{py_s:>10.2f}{1000 * py_s / max(1, len(got_py)):>12.1f}")
    print(f"agreement: fhirpath.js {n_js - len(d_js)}/{n_js} (cases x statements), "
          f"fhirpathpy {n_py - len(d_py)}/{n_py}")
    for line in (d_js + d_py)[:100]:
        print(line)


if __name__ == "__main__":
    main()
