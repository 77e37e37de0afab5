"""Speed of each export (median of several runs), knowledge loaded once; prints a table."""

from __future__ import annotations


from guideline_kg.cases.reader import load_cases
from guideline_kg.outputs.cds_cards import cards_for
from guideline_kg.reasoning.derive import Evaluator
from guideline_kg.outputs.export import csv_tables, rdf_export
from guideline_kg.outputs.fhir_cpg import careplan, pathway_bundle, read_pathway, validate_resource
from guideline_kg.knowledge.graph import load_knowledge
from guideline_kg.core.project import Project
from guideline_kg.store.stores import EmbeddedStore
from timing import median_seconds  # noqa: E402

RUNS = 5


def median_ms(fn) -> float:  # type: ignore[no-untyped-def]
    """Median of RUNS timed calls, in milliseconds."""
    return median_seconds(fn, RUNS) * 1000


def main() -> None:
    project = Project.at()
    knowledge = load_knowledge(project)
    store = EmbeddedStore.from_graph(knowledge)
    [case] = load_cases([project.cases_dir / "c04-urgent-deficit.ttl"])
    result = Evaluator(knowledge, project).evaluate(case)
    pathway = read_pathway(store, project)
    rows = [
        ("fhir bundle (build)", lambda: pathway_bundle(store, project)),
        ("fhir bundle (validate, R4B)", lambda: validate_resource(pathway_bundle(store, project))),
        ("careplan (one case)", lambda: careplan(result, pathway)),
        ("cds cards (one case)", lambda: cards_for(result, knowledge, project)),
        ("csv tables", lambda: csv_tables(store, project)),
        *[(f"rdf {fmt}", (lambda f=fmt: rdf_export(knowledge, project, f)))
          for fmt in ("turtle", "ntriples", "rdfxml", "jsonld")],
    ]
    print(f"{'export':<30} {'median ms':>10}   ({len(knowledge)} triples, {RUNS} runs)")
    for name, fn in rows:
        print(f"{name:<30} {median_ms(fn):>10.1f}")


if __name__ == "__main__":
    main()
