"""Competency questions: the store they run on (knowledge + example cases + derivation results) and answers."""

from __future__ import annotations

from pathlib import Path

from rdflib import Graph

from guideline_kg.cases.reader import load_cases
from guideline_kg.core.project import Project
from guideline_kg.knowledge.graph import load_knowledge
from guideline_kg.reasoning.derive import Evaluator, results_graph
from guideline_kg.store.stores import EmbeddedStore, Rows, Store

__all__ = ["answer", "competency_graph", "competency_store", "cq_files", "read_expected", "tsv_rows"]


def competency_graph(project: Project) -> Graph:
    """Knowledge, every example case and the fast path's results for them, as one graph."""
    knowledge = load_knowledge(project)
    cases = load_cases([project.cases_dir], project)
    evaluator = Evaluator(knowledge, project)
    graph = Graph()
    graph += knowledge
    for case in cases:
        graph += case.graph
    graph += results_graph([evaluator.evaluate(c) for c in cases], knowledge)
    return graph


def competency_store(project: Project) -> EmbeddedStore:
    """An embedded store loaded with :func:`competency_graph`."""
    return EmbeddedStore.from_graph(competency_graph(project))


def tsv_rows(rows: Rows) -> set[tuple[str, ...]]:
    """Result rows as a set of tuples of N-Triples-like strings (the SPARQL TSV term syntax)."""
    return {tuple("" if t is None else t.n3() for t in row) for row in rows.rows}


def read_expected(path: Path) -> tuple[list[str], set[tuple[str, ...]]]:
    """The header and rows of an expected-answer TSV file."""
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    header = [h.lstrip("?") for h in lines[0].split("\t")]
    return header, {tuple(ln.split("\t")) for ln in lines[1:]}


def cq_files(project: Project) -> list[Path]:
    """Every competency question file of the guideline package (its manifest's ``[parts] competency_questions``
    folder); none when the package names no such folder."""
    return sorted(p for folder in project.parts("competency_questions") for p in folder.glob("*.rq"))


def answer(store: Store, path: Path) -> Rows:
    """Run one competency question on ``store``."""
    return store.select(path.read_text(encoding="utf-8"))
