"""Benchmark: the parts of `guideline-kg validate` on the shipped guideline, in-process (warm).

Prints a table of medians over several runs. Run: `.venv/bin/python benchmarks/bench_validate.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from guideline_kg.cases.reader import load_cases  # noqa: E402
from guideline_kg.knowledge.graph import load_knowledge  # noqa: E402
from guideline_kg.core.project import Project  # noqa: E402
from guideline_kg.store.stores import EmbeddedStore  # noqa: E402
from guideline_kg.checks.validate import (check_queries, contradiction_findings, load_shapes, run_checks,  # noqa: E402
                                   run_shapes, validate_case)
from timing import median_seconds  # noqa: E402

CASE = ROOT / "guidelines" / "plbp" / "cases" / "c06-opioid-no-relief.ttl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    project = Project.at(ROOT)
    knowledge = load_knowledge(project)
    shapes = load_shapes(project)
    store = EmbeddedStore.from_graph(knowledge)
    queries = check_queries(project)
    case = load_cases([CASE])[0]
    rows = [
        ("SHACL shapes on the guideline graph", lambda: run_shapes(knowledge, shapes)),
        ("check queries (pyoxigraph)", lambda: run_checks(store, queries, project)),
        ("contradictions (one HermiT run)", lambda: contradiction_findings(knowledge, store, queries, project)),
        ("case shapes on one case", lambda: validate_case(case.graph, project)),
    ]
    print(f"{'part':<40} {'median s':>9}   ({args.runs} runs, {len(knowledge)} triples)")
    for name, fn in rows:
        print(f"{name:<40} {median_seconds(fn, args.runs):>9.2f}")


if __name__ == "__main__":
    main()
