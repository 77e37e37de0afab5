"""Benchmark: one case through `guideline-kg recommend` (cold, whole process) and in-process (warm), per path.

Prints a table of medians over several runs. Run: `.venv/bin/python benchmarks/bench_recommend.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from guideline_kg.cases.reader import load_cases  # noqa: E402
from guideline_kg.reasoning.derive import Evaluator  # noqa: E402
from guideline_kg.knowledge.graph import load_knowledge  # noqa: E402
from guideline_kg.core.project import Project  # noqa: E402
from timing import median_seconds  # noqa: E402

CASE = ROOT / "guidelines" / "plbp" / "cases" / "c06-opioid-no-relief.ttl"
CLI = ROOT / ".venv" / "bin" / "guideline-kg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    project = Project.at(ROOT)
    knowledge = load_knowledge(project)
    evaluator = Evaluator(knowledge, project)
    case = load_cases([CASE])[0]
    rows = []
    for path in ("fast", "hermit"):
        cold = median_seconds(lambda: subprocess.run([str(CLI), "recommend", str(CASE), "--format", "json",
                                                      "--reasoner", path], check=True, capture_output=True),
                              args.runs)
        # the whole patient result: statuses and the explanations, conflicts, thresholds (to_json builds them all)
        warm = median_seconds(lambda: evaluator.evaluate(case, path).to_json(), args.runs)
        rows.append((path, cold, warm))
    print(f"one case ({CASE.name}), median of {args.runs} runs")
    print(f"{'path':<8} {'CLI, cold (s)':>14} {'in-process, warm (ms)':>22}")
    for path, cold, warm in rows:
        print(f"{path:<8} {cold:>14.3f} {warm * 1000:>22.1f}")
    fast, hermit = rows[0], rows[1]
    print(f"hermit/fast ratio: cold {hermit[1] / fast[1]:.1f}x, warm {hermit[2] / fast[2]:.0f}x")
    print(f"target: recommend for one case under 1 s (fast path, cold): {'met' if fast[1] < 1 else 'NOT MET'}")


if __name__ == "__main__":
    main()
