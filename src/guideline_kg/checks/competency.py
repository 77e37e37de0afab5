"""Competency questions: the store they run on (knowledge + example cases + derivation results) and answers."""

from __future__ import annotations

from pathlib import Path

from rdflib import Graph

from guideline_kg.checks.gate import gate
from guideline_kg.core.project import Project
from guideline_kg.knowledge.graph import load_knowledge
from guideline_kg.reasoning.derive import results_graph
from guideline_kg.store.stores import EmbeddedStore, Rows, Store

__all__ = ["answer", "competency_graph", "competency_store", "cq_files", "read_expected", "tsv_rows"]


def competency_graph(project: Project) -> Graph:
    """Knowledge, every example case that passes the gate and the fast path's results for them, as one graph
    (an invalid example case adds nothing, as at every other entry point)."""
    knowledge = load_knowledge(project)
    admitted = [g for g in gate([project.cases_dir], knowledge, project) if g.valid]
    graph = Graph()
    graph += knowledge
    for g in admitted:
        if g.case is not None:  # always, for a valid gate result
            graph += g.case.graph
    graph += results_graph([g.result for g in admitted if g.result is not None], knowledge)
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
