"""Speed of the algorithm graph: build (SPARQL), check, and each export; medians of several runs."""

from __future__ import annotations

from pathlib import Path

from guideline_kg.knowledge.algorithm import build_graph, check
from guideline_kg.cases.reader import load_cases
from guideline_kg.knowledge.graph import load_knowledge
from guideline_kg.core.project import Project
from guideline_kg.outputs.render import FORMATS, case_view, render
from timing import median_seconds  # noqa: E402

RUNS = 5


def median_ms(fn) -> float:  # type: ignore[no-untyped-def]
    """Median of RUNS timed calls, in milliseconds."""
    return median_seconds(fn, RUNS) * 1000


def main() -> None:
    project = Project.at(Path(__file__).resolve().parents[1])
    knowledge = load_knowledge(project)
    graph = build_graph(knowledge, project)
    case = load_cases([project.cases_dir / "c04-urgent-deficit.ttl"])[0]
    rows = [("build graph (2 SPARQL queries)", median_ms(lambda: build_graph(knowledge, project))),
            ("check", median_ms(lambda: check(graph))),
            ("case view (derive, fast path)", median_ms(lambda: case_view(graph, knowledge, project, case)))]
    rows += [(f"render {fmt}", median_ms(lambda fmt=fmt: render(graph, fmt))) for fmt in FORMATS]
    print(f"{'step':34} {'median ms':>10}   ({RUNS} runs, {graph.number_of_nodes()} nodes, "
          f"{graph.number_of_edges()} edges)")
    for name, ms in rows:
        print(f"{name:34} {ms:10.1f}")


if __name__ == "__main__":
    main()
